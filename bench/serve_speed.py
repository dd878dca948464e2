"""Served engine vs transformers engine: the same MCTS mining and the same evaluation, in one run.

Rows (prints a table, writes JSON to bench/results/serve_speed.json):

* ``raw`` per engine: one batched ``generate`` of the trees' prompts, n = k samples of one step each — the
  engine's raw decode throughput on these prompts (the ceiling of what the search can get);
* ``mining`` per engine: ``search_lockstep`` over the same trees, seeds and budgets (``bench/mcts_speed.run``):
  trees/min and generated tokens/s (rollouts and continuations included);
* ``eval`` per engine: ``itool_core.eval.evaluate`` on the same BFCL items (greedy): items/min.

The transformers engine is built as mining builds it (``engines.policy_engine("hf", ...)``: shared-prefix
prefill, cross-call prefix store); the served engine is ``engines.policy_engine("openai", ...)``: a real
llama-server on 127.0.0.1 serving the same folder as GGUF (``--dtype``), started and stopped here.

Goals (issue #23): served mining ≥ 3× the transformers engine's trees/min on CPU, and the served mining's
generated tokens/s ≥ 70 % of the served raw decode tokens/s.

    .venv/bin/python bench/serve_speed.py --trees 4 --simulations 2 --k 4 --eval-items 8
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from mcts_speed import fresh_store, run, write_report  # noqa: E402

from itool_core.calls import PromptStyle  # noqa: E402
from itool_core.config import EvalConfig, ServeConfig  # noqa: E402
from itool_core.data.loaders import load  # noqa: E402
from itool_core.engines import GenerationParams, closing, policy_engine  # noqa: E402
from itool_core.eval.bfcl import stable_subset  # noqa: E402
from itool_core.eval.runner import evaluate  # noqa: E402
from itool_core.mcts.mine import build_items  # noqa: E402
from itool_core.mcts.policy import PolicyConfig  # noqa: E402
from itool_core.mcts.search import MCTSConfig  # noqa: E402
from itool_core.models import resolve  # noqa: E402


def raw_row(engine, name: str, items, k: int, step_tokens: int) -> dict:
    engine.generate([items[0].tree.prompt_ids], GenerationParams(max_new_tokens=4))  # warm-up, not timed
    fresh_store(engine)
    t0 = time.perf_counter()
    outs = engine.generate(
        [it.tree.prompt_ids for it in items], GenerationParams(max_new_tokens=step_tokens, temperature=1.0, n=k, seed=0)
    )
    secs = time.perf_counter() - t0
    toks = sum(len(c.token_ids) for cs in outs for c in cs)
    return {
        "engine": name,
        "mode": "raw",
        "seconds": secs,
        "generated_tokens": toks,
        "generated_tokens_per_s": toks / secs,
    }


def eval_row(engine, name: str, examples, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    cfg = EvalConfig.covering(examples)
    summary = evaluate(engine, cfg, examples=examples, out_dir=out_dir / name, progress=False, print_tables=False)
    secs = time.perf_counter() - t0
    return {
        "engine": name,
        "mode": "eval",
        "seconds": secs,
        "items": len(examples),
        "items_per_min": 60 * len(examples) / secs,
        "summary": summary.get("bfcl", summary),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--trees", type=int, default=4)
    ap.add_argument("--simulations", type=int, default=2)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--step-tokens", type=int, default=24)
    ap.add_argument("--rollout-tokens", type=int, default=32)
    ap.add_argument("--eval-items", type=int, default=8, help="BFCL simple_python items evaluated per engine (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slots", type=int, default=16, help="llama-server parallel slots (= request concurrency)")
    ap.add_argument("--dtype", default="f32", choices=("f32", "f16", "q8_0"), help="GGUF precision of the served model")
    ap.add_argument("--skip-hf", action="store_true", help="served engine only (no ratios)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of raw / mining / eval per engine (spread)")
    ap.add_argument("--out", default="bench/results/serve_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    folder = resolve(args.model)
    style = PromptStyle("compact")
    exs, _ = load("bfcl", categories=["simple_python"])
    examples = stable_subset(exs, args.trees, seed=0)
    eval_examples = stable_subset(exs, args.eval_items, seed=1) if args.eval_items else []
    cfg = MCTSConfig(simulations=args.simulations, k=args.k, seed=0)
    pcfg = PolicyConfig(max_step_tokens=args.step_tokens, max_rollout_tokens=args.rollout_tokens)
    tmp = Path(tempfile.mkdtemp(prefix="serve-speed."))

    rows: list[dict] = []
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    serve = ServeConfig(server="llama.cpp", slots=args.slots, gguf_dtype=args.dtype)
    with closing(
        policy_engine("openai", folder, num_threads=args.threads, serve=serve, log_dir=tmp / "server")
    ) as served:
        startup = time.perf_counter() - t0
        engines = {"served": served}
        if not args.skip_hf:
            engines["transformers"] = policy_engine("hf", folder, num_threads=args.threads)
        items = build_items(examples, served.tokenizer, style)
        for rep in range(args.repeats):
            # alternate the order so neither engine always runs on a warmer (or more loaded) machine
            for name in list(engines)[:: 1 if rep % 2 == 0 else -1]:
                eng = engines[name]
                rows.append({**raw_row(eng, name, items, args.k, args.step_tokens), "repeat": rep})
                requests0 = getattr(eng, "requests", 0)
                r = run("lockstep", eng, examples, cfg, pcfg, style)
                extra = {"http_requests": eng.requests - requests0} if name == "served" else {}
                rows.append({"engine": name, **r, **extra, "mode": "mining", "repeat": rep})
                if eval_examples:
                    rows.append({**eval_row(eng, name, eval_examples, tmp / f"r{rep}"), "repeat": rep})

    def values(engine: str, mode: str, key: str) -> list[float]:
        return [r[key] for r in rows if r["engine"] == engine and r["mode"] == mode]

    def spread(xs: list[float]) -> dict:
        return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n_repeats": len(xs)}

    def ratio(mode: str, key: str, a: str = "served", b: str = "transformers") -> dict:
        # paired by repeat: the two engines ran back to back on the same trees / items
        return spread([x / y for x, y in zip(values(a, mode, key), values(b, mode, key))])

    served_raw = values("served", "raw", "generated_tokens_per_s")
    served_mine = values("served", "mining", "generated_tokens_per_s")
    summary: dict = {
        "server_startup_seconds_incl_gguf": startup,
        "served_mining_vs_served_raw_tokens_per_s": spread([m / r for m, r in zip(served_mine, served_raw)]),
    }
    if not args.skip_hf:
        summary["mining_trees_per_min_ratio"] = ratio("mining", "trees_per_min")
        summary["mining_tokens_per_s_ratio"] = ratio("mining", "generated_tokens_per_s")
        summary["raw_tokens_per_s_ratio"] = ratio("raw", "generated_tokens_per_s")
        if eval_examples:
            summary["eval_items_per_min_ratio"] = ratio("eval", "items_per_min")
    print(
        f"\nServed vs transformers — model {args.model}, {args.trees} trees × {args.simulations} simulations, "
        f"k={args.k}, {args.step_tokens} tokens/step, {args.threads} threads, {args.slots} slots, GGUF {args.dtype}"
    )
    print(f"{'engine':<14}{'mode':<8}{'seconds':>9}{'trees/min':>11}{'items/min':>11}{'gen tok':>9}{'gen tok/s':>11}")
    nan = float("nan")
    for r in rows:
        print(
            f"{r['engine']:<14}{r['mode']:<8}{r['seconds']:>9.1f}{r.get('trees_per_min', nan):>11.2f}"
            f"{r.get('items_per_min', nan):>11.2f}{r.get('generated_tokens', 0):>9}"
            f"{r.get('generated_tokens_per_s', nan):>11.1f}"
        )
    print(f"total {time.perf_counter() - t_start:.0f} s")
    write_report(
        args,
        rows,
        summary,
        command=shlex.join([sys.executable, *sys.argv]),
        cores=os.cpu_count(),
        n_trees=len(examples),
        n_eval_items=len(eval_examples),
    )


if __name__ == "__main__":
    main()
