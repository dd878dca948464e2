"""Speed of the preference update (§4.3, Eq. 10) with and without prefix sharing, on pairs a real search mined.

Runs ``itool_core.train.preference.train_preference`` — the stage's own code path — twice on the same policy
and pairs with the profile's settings, once with ``preference.shared_prefix`` off (trl's two rows per pair,
the shared state encoded for chosen and rejected, policy and reference) and once on (one row per pair, the
shared state encoded once: train/losses/shared_prefix.py), and prints a table and writes JSON
(``bench/results/preference_speed.json``): wall and s/step of training, tokens of the rows, tokens the
forwards ran, tokens/s of the rows, achieved FLOP/s (6N per computed token, as bench/pipeline_run.py counts)
against the bf16 matmul peak, and the per-step losses of both runs (the same function of the weights, so
equal up to bf16 rounding).

The policy and pairs come from a run's folder, e.g. a demo run's first iteration:

    python bench/pipeline_run.py --set evaluation.split=dev --workdir /tmp/demo-dev
    python bench/preference_speed.py --policy /tmp/demo-dev/run/warmup/<key>/merged \
        --pairs /tmp/demo-dev/run/iter_1/mine/pairs/<key>/pairs.parquet
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from itool_core.config import profile  # noqa: E402
from itool_core.train.preference import load_pairs, train_preference  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="merged policy folder (the iteration's policy and reference)")
    ap.add_argument("--pairs", required=True, help="PAIRS Parquet a search wrote")
    ap.add_argument("--profile", default="demo", help="whose preference settings (default: demo)")
    ap.add_argument("--steps", type=int, default=4, help="optimiser steps per run (default 4)")
    ap.add_argument(
        "--fp32", action="store_true", help="no bf16 autocast: the two runs' losses then agree to float rounding"
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "preference_speed.json"))
    args = ap.parse_args(argv)

    from pipeline_run import FLOPS_PER_TOKEN, machine, n_params

    from itool_core.artifacts import atomic_write_json

    pairs = load_pairs(args.pairs)
    base = replace(profile(args.profile).preference, max_steps=args.steps, merge=False)
    if args.fp32:
        base = replace(base, bf16=False)
    n = n_params(args.policy)
    if not n:
        ap.error(f"--policy {args.policy}: no model config to count parameters from")
    mach = machine()
    peak = mach["bfloat16_matmul_flop_per_s"]
    rows = []
    for shared in (False, True):
        cfg = replace(base, shared_prefix=shared)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = train_preference(args.policy, pairs, cfg, tmp)
            stage = time.perf_counter() - t0
        computed = res.computed_tokens or res.tokens
        flops = FLOPS_PER_TOKEN["preference"] * n * computed
        rows.append(
            {
                "shared_prefix": shared,
                "steps": res.steps,
                "pairs": res.n_pairs,
                "train_s": round(res.wall_s, 2),
                "stage_s": round(stage, 2),
                "s_per_step": round(res.s_per_step, 2),
                "tokens": res.tokens,
                "computed_tokens": computed,
                "tokens_per_s": round(res.tokens / res.wall_s, 1),
                "flop_per_s": round(flops / res.wall_s),
                "peak_share": round(flops / res.wall_s / peak, 4),
                "losses": [round(h["loss"], 5) for h in res.history if "loss" in h],
                "peak_rss_mb": round(res.peak_rss_mb),
            }
        )
    off, on = rows
    print(f"{'shared_prefix':>13} {'s/step':>7} {'tokens':>7} {'computed':>8} {'tok/s':>7} {'GFLOP/s':>8} {'peak':>6}")
    for r in rows:
        print(
            f"{r['shared_prefix']!s:>13} {r['s_per_step']:>7} {r['tokens']:>7} {r['computed_tokens']:>8} "
            f"{r['tokens_per_s']:>7} {r['flop_per_s'] / 1e9:>8.1f} {r['peak_share']:>6.1%}"
        )
    print(f"speed-up {off['train_s'] / on['train_s']:.2f}x; losses off {off['losses']} on {on['losses']}")
    out = {
        "bench": "preference_speed",
        "command": "python bench/preference_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": date.today().isoformat(),
        "machine": mach,
        "profile": args.profile,
        "bf16": base.bf16,
        "n_params": n,
        "rows": rows,
        "speedup": round(off["train_s"] / on["train_s"], 3),
    }
    atomic_write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
