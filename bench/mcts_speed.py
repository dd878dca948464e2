"""Speed of step-level MCTS: lock-step batched vs one generate call per child, same engine/model/seeds.

Prints a table and writes JSON (bench/results/mcts_speed.json):

* (a) lock-step: every round sends all trees' leaves to the engine in ONE call (n = k), all new nodes'
  self-evaluations in ONE forward pass, all rollouts in ONE call (``search_lockstep``);
* (b) sequential: MCTS-DPO's way, one tree at a time and one call per child (``search_sequential``);
* raw: the engine's batched generation throughput on the same prompts (n = k, same step length) — the
  ceiling for (a).

All rows use one engine (``share_prefixes`` and the cross-call prefix store, as mining builds it); the store
is emptied before each row, so no row reuses what an earlier one prefilled.  ``--prefix-cache-mb 0`` or
``--no-share-prefixes`` measure the engine without them.

Goals (issue "Step-level MCTS"): (a) ≥ 5× (b) in trees/min, and (a)'s generated tokens/s ≥ 70 % of raw.

    .venv/bin/python bench/mcts_speed.py --trees 4 --simulations 2 --k 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from itool_core.calls import PromptStyle  # noqa: E402
from itool_core.config import with_overrides  # noqa: E402
from itool_core.data.loaders import load  # noqa: E402
from itool_core.engines.base import GenerationParams  # noqa: E402
from itool_core.engines.hf import HFEngine  # noqa: E402
from itool_core.eval.bfcl import stable_subset  # noqa: E402
from itool_core.mcts.mine import build_items  # noqa: E402
from itool_core.mcts.policy import EnginePolicy, PolicyConfig  # noqa: E402
from itool_core.mcts.search import MCTSConfig, SearchStats, search_lockstep, search_sequential  # noqa: E402
from itool_core.models import load_policy, tiny_model  # noqa: E402


class CountingEngine:
    """Counts generated tokens of every call (the search's own accounting misses continuations/rollouts)."""

    def __init__(self, engine):
        self.engine, self.tokenizer, self.tokens, self.calls = engine, engine.tokenizer, 0, 0

    def generate(self, prompts, params):
        outs = self.engine.generate(prompts, params)
        self.calls += 1
        self.tokens += sum(len(c.token_ids) for cs in outs for c in cs)
        return outs

    def next_token_logprobs(self, prompts, cands):
        self.calls += 1
        return self.engine.next_token_logprobs(prompts, cands)


def store_stats(engine) -> dict:
    st = getattr(engine, "prefix_store", None)
    return (
        {} if st is None else {"prefix_tokens_reused": st.reused_tokens, "prefix_tokens_prefilled": st.prefilled_tokens}
    )


def fresh_store(engine) -> bool:
    """Every row starts with empty prefix caches: no row may reuse what an earlier row computed (the in-process
    cross-call store; a vLLM server's prefix cache, ``/reset_prefix_cache`` in its dev mode; llama-server's slot
    caches, ``/slots/<id>?action=erase``).  False where a server's cache could not be emptied."""
    if getattr(engine, "prefix_store", None) is not None:
        engine.prefix_store.clear()
    client, base = getattr(engine, "client", None), getattr(engine, "base_url", None)
    if client is None or base is None:
        return True
    try:
        if getattr(engine, "server_kind", None) == "llama.cpp":
            slots = client.get(base + "/slots").json()
            return all(client.post(f"{base}/slots/{s['id']}?action=erase").status_code == 200 for s in slots)
        return client.post(base + "/reset_prefix_cache").status_code == 200
    except Exception:  # noqa: BLE001 — a server without these endpoints: the row says so
        return False


def run(mode: str, engine, examples, cfg: MCTSConfig, pcfg: PolicyConfig, style: PromptStyle) -> dict:
    cold = fresh_store(engine)
    counting = CountingEngine(engine)
    policy = EnginePolicy(counting, {e.id: e for e in examples}, pcfg)
    items = build_items(examples, engine.tokenizer, style)
    t0 = time.perf_counter()
    stats: SearchStats = (search_lockstep if mode == "lockstep" else search_sequential)(items, policy, cfg)
    secs = time.perf_counter() - t0
    return {
        "mode": mode,
        "seconds": secs,
        "trees_per_min": 60 * len(examples) / secs,
        "generated_tokens": counting.tokens,
        "generated_tokens_per_s": counting.tokens / secs,
        "engine_calls": counting.calls,
        "nodes": sum(1 for it in items for _ in it.tree.nodes()) - len(items),
        "seconds_by_call": stats.seconds,
        "caches_emptied": cold,
        **store_stats(engine),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct", help="'tiny' for a random small model")
    ap.add_argument("--trees", type=int, default=4)
    ap.add_argument("--simulations", type=int, default=2)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--step-tokens", type=int, default=24)
    ap.add_argument("--rollout-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-sequential", action="store_true")
    ap.add_argument(
        "--no-share-prefixes",
        action="store_true",
        help="engine without shared-prefix prefill (the behaviour before it existed)",
    )
    ap.add_argument(
        "--prefix-cache-mb",
        type=float,
        default=1024,
        help="K/V kept across engine calls (what mining uses); 0 = off (the behaviour before it existed)",
    )
    ap.add_argument("--out", default="bench/results/mcts_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model, tok = tiny_model() if args.model == "tiny" else load_policy(args.model, dtype=args.dtype)
    engine = HFEngine(
        model,
        tok,
        batch_size=args.batch_size,
        progress=False,
        share_prefixes=not args.no_share_prefixes,
        prefix_cache_mb=0 if args.no_share_prefixes else args.prefix_cache_mb,
    )
    style = PromptStyle("compact")
    exs, _ = load("bfcl", categories=["simple_python"])
    examples = stable_subset(exs, args.trees, seed=0)
    cfg = with_overrides(MCTSConfig(), {"simulations": args.simulations, "k": args.k, "seed": 0})
    pcfg = with_overrides(
        PolicyConfig(), {"max_step_tokens": args.step_tokens, "max_rollout_tokens": args.rollout_tokens}
    )

    # raw batched throughput on the same prompts: n = k samples of one step each
    items = build_items(examples, tok, style)
    engine.generate([items[0].tree.prompt_ids], GenerationParams(max_new_tokens=4))  # warm-up, not timed
    fresh_store(engine)
    t0 = time.perf_counter()
    outs = engine.generate(
        [it.tree.prompt_ids for it in items],
        GenerationParams(max_new_tokens=args.step_tokens, temperature=1.0, n=args.k, seed=0),
    )
    raw_secs = time.perf_counter() - t0
    raw_tokens = sum(len(c.token_ids) for cs in outs for c in cs)
    raw = {
        "mode": "raw batched generate",
        "seconds": raw_secs,
        "generated_tokens": raw_tokens,
        "generated_tokens_per_s": raw_tokens / raw_secs,
        **store_stats(engine),
    }

    rows = [raw, run("lockstep", engine, examples, cfg, pcfg, style)]
    if not args.skip_sequential:
        rows.append(run("sequential", engine, examples, cfg, pcfg, style))
    lock = rows[1]
    summary = {"lockstep_vs_raw_tokens_per_s": lock["generated_tokens_per_s"] / raw["generated_tokens_per_s"]}
    if len(rows) > 2:
        summary["lockstep_speedup_trees_per_min"] = lock["trees_per_min"] / rows[2]["trees_per_min"]
    print(
        f"\nMCTS speed — model {args.model}, {args.trees} trees × {args.simulations} simulations, k={args.k}, "
        f"{args.step_tokens} tokens/step, {args.threads} threads"
    )
    print(f"{'mode':<22}{'seconds':>10}{'trees/min':>12}{'gen tok':>10}{'gen tok/s':>12}{'engine calls':>14}")
    for r in rows:
        print(
            f"{r['mode']:<22}{r['seconds']:>10.1f}{r.get('trees_per_min', float('nan')):>12.2f}"
            f"{r['generated_tokens']:>10}{r['generated_tokens_per_s']:>12.1f}{r.get('engine_calls', 1):>14}"
        )
    write_report(args, rows, summary)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_report(args, rows: list[dict], summary: dict, **extra) -> None:
    """Print the summary ratios and the load, write ``args.out`` (JSON: date, machine, args, rows, summary)."""
    from itool_core.artifacts import atomic_write_text

    for k, v in summary.items():
        if isinstance(v, dict) and "median" in v:  # a spread over repeats
            print(f"{k}: {v['median']:.2f} (min {v['min']:.2f}, max {v['max']:.2f}, {v['n_repeats']} repeats)")
        elif isinstance(v, (int, float)):
            print(f"{k}: {v:.2f}")
        else:  # a nested table (per engine): as JSON
            print(f"{k}: {json.dumps(v, default=str)}")
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    out = {
        "date": date.today().isoformat(),
        "machine": f"{platform.node()} {_cpu_name()} {torch.get_num_threads()} threads",
        "load_average_end": os.getloadavg(),
        "args": vars(args),
        **extra,
        "rows": rows,
        "summary": summary,
    }
    atomic_write_text(args.out, json.dumps(out, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
