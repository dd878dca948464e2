"""Every engine on the same work, in one run: transformers, llama-server, vLLM served (and vLLM in-process where
vLLM imports in this interpreter: a GPU box with ``pip install .[vllm]``; on CPU vLLM lives in its own environment,
engines/vllm_env.py, so only the served vLLM runs here).

Rows (prints a table, writes JSON to bench/results/serve_speed.json):

* ``raw`` per engine: one batched ``generate`` of the trees' prompts, n = k samples of one step each — the
  engine's raw decode throughput on these prompts (the ceiling of what the search can get);
* ``mining`` per engine: ``search_lockstep`` over the same trees, seeds and budgets (``bench/mcts_speed.run``):
  trees/min and generated tokens/s (rollouts and continuations included);
* ``eval`` per engine: ``itool_core.eval.evaluate`` on the same BFCL items (greedy): items/min.

Summary: each engine's ratios to transformers (paired by repeat), each server's start-up seconds and its share of
the bench's wall time, and the machine's roofline: read bandwidth (a large tensor summed) and matmul FLOP/s in
f32 and bf16 (both cores, best of 3, measured before any engine starts).  Each raw row's share of it is the
least time its work needs here — the prompts' prefill (2 FLOP per body parameter per prompt token) plus the
decode (2 FLOP per parameter per generated token) at the peak of the precision the engine runs in, or one read
of the weights per decode step, whichever is longer — over the time it took.  (A decode-only ceiling,
tokens/s ≤ min(batch × bandwidth ÷ model bytes, FLOP/s ÷ 2·params), is kept as ``raw_share_of_decode_roofline``:
it ignores the prefill, most of a raw row's arithmetic.)  Goals (issue #32): mining tokens/s ≥ 2.5×
transformers, ≥ 50 % of the roofline.  The summary keys of issue #23 (``served`` = llama-server) are kept.

The transformers engine is built as mining builds it (``engines.policy_engine("hf", ...)``: shared-prefix
prefill, cross-call prefix store); the served engines are ``engines.policy_engine("openai", ...)`` with
``serve.server`` = ``llama.cpp`` (the folder as GGUF, ``--dtype``) or ``vllm``, started and stopped here.
Run it on an idle machine (timings under load say little):

    .venv/bin/python bench/serve_speed.py --trees 4 --simulations 2 --k 4 --eval-items 8 \
        --engines transformers,llama.cpp,vllm,vllm-bf16
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
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
from itool_core.engines import GenerationParams, policy_engine  # noqa: E402
from itool_core.eval.bfcl import stable_subset  # noqa: E402
from itool_core.eval.runner import evaluate  # noqa: E402
from itool_core.mcts.mine import build_items  # noqa: E402
from itool_core.mcts.policy import PolicyConfig  # noqa: E402
from itool_core.mcts.search import MCTSConfig  # noqa: E402
from itool_core.models import resolve  # noqa: E402


def raw_row(engine, name: str, items, k: int, step_tokens: int) -> dict:
    engine.generate([items[0].tree.prompt_ids], GenerationParams(max_new_tokens=4))  # warm-up, not timed
    cold = fresh_store(engine)
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
        # each prompt prefilled once (its k samples share it), then one decode step per token of the longest
        "prompt_tokens": sum(len(it.tree.prompt_ids) for it in items),
        "decode_steps": max(len(c.token_ids) for cs in outs for c in cs),
        "caches_emptied": cold,
    }


def eval_row(engine, name: str, examples, out_dir: Path) -> dict:
    cold = fresh_store(engine)  # the same items every repeat: a server's prefix cache would remember them
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
        "outputs": _outputs(out_dir / name),
        "caches_emptied": cold,
    }


def _outputs(folder: Path) -> dict[str, str]:
    """id → generated text of an evaluation (what ``outputs_equal_transformers`` compares)."""
    import pandas as pd

    frames = [pd.read_parquet(p, columns=["id", "output"]) for p in sorted(folder.rglob("samples.parquet"))]
    return {str(i): str(o) for f in frames for i, o in zip(f["id"], f["output"])}


def machine_peaks(threads: int, trials: int = 3) -> dict:
    """This machine's read bandwidth (a 256 MiB tensor summed) and matmul FLOP/s in float32 and bfloat16
    (2048² products), each the best of ``trials`` — measured before any engine starts, so nothing else runs."""
    torch.set_num_threads(threads)

    def best(fn, work: float) -> float:
        fn()
        rates = []
        for _ in range(trials):
            t0 = time.perf_counter()
            for _ in range(5):
                fn()
            rates.append(5 * work / (time.perf_counter() - t0))
        return max(rates)

    buf = torch.ones(256 * 2**20 // 4)  # far beyond the caches
    out = {"read_bandwidth_GBps": best(buf.sum, buf.numel() * 4) / 1e9}
    for dtype, key in ((torch.float32, "matmul_GFLOPps_f32"), (torch.bfloat16, "matmul_GFLOPps_bf16")):
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        out[key] = best(functools.partial(torch.matmul, a, b), 2 * 2048**3) / 1e9
    return out


def model_size(folder: Path) -> tuple[int, int]:
    """(parameters, parameters outside the token embedding) of a safetensors folder."""
    from safetensors import safe_open

    params = embedding = 0
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                n = 1
                for d in st.get_slice(k).get_shape():
                    n *= d
                params += n
                embedding += n if "embed_tokens" in k else 0
    return params, params - embedding


def roofline(peaks: dict, params: int, batch: int, bf16: bool) -> dict:
    """The decode ceiling at ``batch`` sequences for weights in f32 or bf16: memory-bound (each step reads every
    weight once for the whole batch) or compute-bound (2 FLOP per parameter per token), whichever is lower."""
    width = 2 if bf16 else 4
    flops = peaks["matmul_GFLOPps_bf16" if bf16 else "matmul_GFLOPps_f32"] * 1e9
    memory_bound = batch * peaks["read_bandwidth_GBps"] * 1e9 / (params * width)
    compute_bound = flops / (2 * params)
    return {
        "weights": "bf16" if bf16 else "f32",
        "model_bytes": params * width,
        "params": params,
        "batch": batch,
        "tokens_per_s": min(memory_bound, compute_bound),
        "bound": "memory" if memory_bound < compute_bound else "compute",
    }


def raw_floor_seconds(row: dict, peaks: dict, params: int, body_params: int, bf16: bool) -> float:
    """The least time this machine needs for a raw row's work: its prompts' prefill (2 FLOP per body parameter
    per prompt token: the head runs on the last one only) plus its decode steps (2 FLOP per parameter per
    generated token), at the matmul peak, or the weights read once per decode step, whichever is longer."""
    flops = peaks["matmul_GFLOPps_bf16" if bf16 else "matmul_GFLOPps_f32"] * 1e9
    compute = (2 * body_params * row["prompt_tokens"] + 2 * params * row["generated_tokens"]) / flops
    memory = row["decode_steps"] * params * (2 if bf16 else 4) / (peaks["read_bandwidth_GBps"] * 1e9)
    return max(compute, memory)


def start_engine(name: str, folder: str, args: argparse.Namespace, log_dir: Path):
    """(engine, start-up seconds) for one of the bench's engine names."""
    t0 = time.perf_counter()
    if name == "transformers":
        eng = policy_engine("hf", folder, num_threads=args.threads)
    elif name == "llama.cpp":
        serve = ServeConfig(server="llama.cpp", slots=args.slots, gguf_dtype=args.dtype)
        eng = policy_engine("openai", folder, num_threads=args.threads, serve=serve, log_dir=log_dir / "llama")
    elif name in ("vllm", "vllm-bf16"):
        dtype = "bfloat16" if name == "vllm-bf16" else args.vllm_dtype
        serve = ServeConfig(
            server="vllm", slots=args.slots, ctx_per_slot=args.ctx, startup_timeout=900.0, vllm_dtype=dtype
        )
        eng = policy_engine("openai", folder, serve=serve, log_dir=log_dir / name)
    elif name == "vllm-inprocess":
        eng = policy_engine("vllm", folder)
    else:
        raise SystemExit(
            f"--engines: unknown engine {name!r} (transformers, llama.cpp, vllm, vllm-bf16, vllm-inprocess)"
        )
    return eng, time.perf_counter() - t0


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
    ap.add_argument(
        "--engines",
        default="transformers,llama.cpp,vllm",
        help="comma-separated: transformers, llama.cpp, vllm (served, --vllm-dtype), vllm-bf16 (served, bf16 "
        "weights), vllm-inprocess (where vllm imports here)",
    )
    ap.add_argument("--ctx", type=int, default=2048, help="vLLM: context tokens per sequence")
    ap.add_argument("--vllm-dtype", default="auto", choices=("auto", "float32", "bfloat16"), help="serve.vllm_dtype")
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

    peaks = machine_peaks(args.threads)
    print(
        f"machine: {peaks['read_bandwidth_GBps']:.1f} GB/s read, {peaks['matmul_GFLOPps_f32']:.0f} GFLOP/s f32, "
        f"{peaks['matmul_GFLOPps_bf16']:.0f} GFLOP/s bf16 (best of 3, both before any engine)",
        flush=True,
    )
    params, body_params = model_size(Path(folder))
    bf16_weights = {  # the precision each engine decodes in
        "transformers": False,
        "llama.cpp": False,  # f16 GGUF is not bf16 and its CPU kernels convert; f32 peak is the honest bound
        "vllm": args.vllm_dtype == "bfloat16",
        "vllm-bf16": True,
        "vllm-inprocess": False,
    }
    rows: list[dict] = []
    t_start = time.perf_counter()
    names = [n.strip() for n in args.engines.split(",") if n.strip()]
    if "vllm-inprocess" in names and importlib.util.find_spec("vllm") is None:
        print("vllm-inprocess: vllm does not import in this interpreter (on CPU it has its own environment): skipped")
        names.remove("vllm-inprocess")
    engines: dict = {}
    startup: dict[str, float] = {}
    try:
        for name in names:
            engines[name], startup[name] = start_engine(name, folder, args, tmp)
            print(f"{name}: started in {startup[name]:.1f} s", flush=True)
        items = build_items(examples, engines[names[0]].tokenizer, style)
        for rep in range(args.repeats):
            # rotate the order so no engine always runs on a warmer (or more loaded) machine
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                eng = engines[name]
                rows.append({**raw_row(eng, name, items, args.k, args.step_tokens), "repeat": rep})
                requests0 = getattr(eng, "requests", 0)
                r = run("lockstep", eng, examples, cfg, pcfg, style)
                extra = {"http_requests": eng.requests - requests0} if hasattr(eng, "requests") else {}
                rows.append({"engine": name, **r, **extra, "mode": "mining", "repeat": rep})
                if eval_examples:
                    rows.append({**eval_row(eng, name, eval_examples, tmp / f"r{rep}"), "repeat": rep})
    finally:
        for eng in engines.values():
            close = getattr(eng, "close", None)
            if callable(close):
                close()
    wall = time.perf_counter() - t_start

    def values(engine: str, mode: str, key: str) -> list[float]:
        return [r[key] for r in rows if r["engine"] == engine and r["mode"] == mode]

    def spread(xs: list[float]) -> dict:
        return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n_repeats": len(xs)}

    def ratio(mode: str, key: str, a: str, b: str = "transformers") -> dict:
        # paired by repeat: the engines ran back to back on the same trees / items
        return spread([x / y for x, y in zip(values(a, mode, key), values(b, mode, key))])

    batch = len(examples) * args.k
    roofs = {n: roofline(peaks, params, batch, bf16_weights.get(n, False)) for n in names}
    summary: dict = {
        "startup_seconds": startup,
        "startup_share_of_wall": {n: s / wall for n, s in startup.items()},
        "machine_peaks": peaks,
        "roofline": roofs.get("transformers", next(iter(roofs.values()))),
        "roofline_per_engine": roofs,
        # decode-only ceiling: ignores the prompts' prefill, which is most of a raw row's arithmetic
        "raw_share_of_decode_roofline": {
            n: spread([v / roofs[n]["tokens_per_s"] for v in values(n, "raw", "generated_tokens_per_s")]) for n in names
        },
        # the honest one: the least time the row's prefill + decode needs here ÷ the time it took
        "raw_share_of_roofline": {
            n: spread(
                [
                    raw_floor_seconds(r, peaks, params, body_params, bf16_weights.get(n, False)) / r["seconds"]
                    for r in rows
                    if r["engine"] == n and r["mode"] == "raw"
                ]
            )
            for n in names
        },
        "ratios_to_transformers": {},
    }
    if "transformers" in names and eval_examples:
        # greedy evaluation outputs identical to the transformers engine's (f32) on the same items, per repeat:
        # what exactness costs in a cheaper precision or another kernel library
        ref = [r["outputs"] for r in rows if r["engine"] == "transformers" and r["mode"] == "eval"]
        summary["eval_outputs_equal_transformers"] = {
            n: spread(
                [
                    sum(o.get(i) == t for i, t in ref_out.items()) / max(1, len(ref_out))
                    for o, ref_out in zip(values(n, "eval", "outputs"), ref)
                ]
            )
            for n in names
            if n != "transformers"
        }
    if "transformers" in names:
        for n in names:
            if n == "transformers":
                continue
            summary["ratios_to_transformers"][n] = {
                "mining_trees_per_min": ratio("mining", "trees_per_min", n),
                "mining_tokens_per_s": ratio("mining", "generated_tokens_per_s", n),
                "raw_tokens_per_s": ratio("raw", "generated_tokens_per_s", n),
                **({"eval_items_per_min": ratio("eval", "items_per_min", n)} if eval_examples else {}),
            }
    if "llama.cpp" in names:  # issue #23's keys (served = llama-server), read by bench/results_page.py
        served_raw = values("llama.cpp", "raw", "generated_tokens_per_s")
        served_mine = values("llama.cpp", "mining", "generated_tokens_per_s")
        summary["server_startup_seconds_incl_gguf"] = startup["llama.cpp"]
        summary["served_mining_vs_served_raw_tokens_per_s"] = spread([m / r for m, r in zip(served_mine, served_raw)])
        for key, val in summary["ratios_to_transformers"].get("llama.cpp", {}).items():
            summary[f"{key}_ratio"] = val
    print(
        f"\nEngines {', '.join(names)} — model {args.model}, {args.trees} trees × {args.simulations} simulations, "
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
    print(f"total {wall:.0f} s; start-up {', '.join(f'{n} {v:.0f} s' for n, v in startup.items())}")
    for n in names:
        share = summary["raw_share_of_roofline"][n]["median"]
        print(
            f"{n}: raw row at {share:.0%} of this machine's floor for its prefill + decode "
            f"({roofs[n]['weights']} weights; decode-only ceiling {roofs[n]['tokens_per_s']:.0f} tokens/s at batch "
            f"{batch}, {roofs[n]['bound']}-bound)"
        )
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
