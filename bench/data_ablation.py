"""What each augmentation of the default training set adds: one SFT + evaluation per set without it.

For every row the script builds the quick profile's training set without one augmentation
(``itool data build --no-augment NAME``; ``caps`` = without the source caps, ``--no-caps``), warms the embedded
model up on it with the quick profile (``itool warmup``: same curriculum, same step budget for every row) and
evaluates it on the same seeded subset (``itool eval``), then prints one table and writes JSON.  The ``full``
row is the default set itself.  Each stage is skipped when its output exists, so an interrupted run resumes.

Cost on a 2-core CPU (dev-cpu-2, docs/notebook/RESULTS.md): ≈ 25 min of SFT + ≈ 42 min of evaluation at 100
questions per category for each row, ≈ 7 h for all six.  On a GPU box add ``--config`` with a larger budget.

    .venv/bin/python bench/data_ablation.py --out-dir runs/ablation --limit 100
    .venv/bin/python bench/data_ablation.py --rows full,no_call --limit 20      # two rows, smaller subset
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from itool_core.artifacts import atomic_write_text  # noqa: E402
from itool_core.data.augment import AUGMENTATIONS  # noqa: E402

ROWS = ("full", *AUGMENTATIONS, "caps")
CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")
APIBANK = ("apibank_level1", "apibank_level2")


def itool(*args: str) -> None:
    cmd = [sys.executable, "-m", "itool_core.cli", *args]
    print("$ itool " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def run_row(name: str, out: Path, args) -> dict:
    """Build → warm up → evaluate one row (each step skipped when its output is already there)."""
    row_dir = out / name
    data = row_dir / "train.parquet"
    timings: dict[str, float] = {}
    if not data.exists():
        t0 = time.perf_counter()
        build = ["data", "build", "--profile", "quick", "-o", str(data), "--seed", str(args.seed)]
        if name == "caps":
            build.append("--no-caps")
        elif name != "full":
            build += ["--no-augment", name]
        itool(*build)
        timings["build_s"] = time.perf_counter() - t0
    if not (row_dir / "sft" / "merged").exists():
        t0 = time.perf_counter()
        warm = ["warmup", "--data", str(data), "--out", str(row_dir / "sft"), "--threads", str(args.threads)]
        if args.max_steps:
            warm += ["--max-steps", str(args.max_steps)]
        if args.config:
            warm += ["--config", args.config]
        itool(*warm)
        timings["sft_s"] = time.perf_counter() - t0
    summary = row_dir / "eval" / "summary.json"
    if not summary.exists():
        t0 = time.perf_counter()
        itool(
            "eval",
            "--model",
            str(row_dir / "sft" / "merged"),
            "--benchmarks",
            "bfcl,apibank",
            "--categories",
            ",".join(CATEGORIES + APIBANK),
            "--limit",
            str(args.limit),
            "--seed",
            "0",
            "--batch-size",
            "16",
            "--max-new-tokens",
            "96",
            "--tools",
            "compact",
            "--threads",
            str(args.threads),
            "--out",
            str(row_dir / "eval"),
        )
        timings["eval_s"] = time.perf_counter() - t0
    card = json.loads((row_dir / "train.card.json").read_text())
    s = json.loads(summary.read_text())
    cats = s["bfcl"]["categories"]
    return {
        "row": name,
        "rows_in_set": card.get("rows"),
        "no_call_share": card.get("no_call_share"),
        **{c: cats[c]["accuracy"] for c in CATEGORIES if c in cats},
        "irrelevance_answers": irrelevance_answers(row_dir / "eval" / "samples.parquet"),
        "bfcl_overall": s["bfcl"]["overall"],
        "apibank_level1": s.get("apibank", {}).get("level1", {}).get("accuracy"),
        "apibank_level2": s.get("apibank", {}).get("level2", {}).get("accuracy"),
        "n_per_category": args.limit,
        "timings": timings,
    }


def irrelevance_answers(samples: Path) -> dict[str, int]:
    """call / no_call / broken_call counts of the irrelevance answers, from the samples (evaluations written
    before the summary counted them read the same): BFCL scores a broken call list — malformed or cut off by
    the token cap — as correct there, which is not abstention."""
    import pandas as pd

    from itool_core.eval.bfcl import ANSWER_KINDS, answer_kind

    out = pd.read_parquet(samples, columns=["category", "output"])
    kinds = out.loc[out["category"] == "irrelevance", "output"].map(answer_kind).value_counts()
    return {k: int(kinds.get(k, 0)) for k in ANSWER_KINDS}


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default="runs/ablation")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
    ap.add_argument("--limit", type=int, default=100, help="questions per category (seeded subset)")
    ap.add_argument("--max-steps", type=int, default=None, help="cap on SFT steps per stage (smoke runs)")
    ap.add_argument("--config", default=None, help="RunConfig YAML for the warm-up (default: quick profile)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="augmentation seed")
    ap.add_argument("--json", default="bench/results/data_ablation.json")
    args = ap.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; known: {', '.join(ROWS)}")

    out = Path(args.out_dir)
    results = [run_row(r, out, args) for r in rows]
    head = [
        "set",
        "rows",
        "no-call %",
        *CATEGORIES,
        "irrelevance answers: no call / broken call / call",
        "BFCL overall",
        "API-Bank L1",
        "API-Bank L2",
    ]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in results:
        name = "default (full)" if r["row"] == "full" else f"without {r['row']}"
        ia = r["irrelevance_answers"]
        cells = [
            name,
            str(r["rows_in_set"]),
            pct(r["no_call_share"]),
            *(pct(r.get(c)) for c in CATEGORIES),
            f"{ia['no_call']} / {ia['broken_call']} / {ia['call']}",
            f"{100 * r['bfcl_overall']:.1f}",
            pct(r["apibank_level1"]),
            pct(r["apibank_level2"]),
        ]
        print("| " + " | ".join(cells) + " |")
    atomic_write_text(
        args.json,
        json.dumps(
            {
                "date": date.today().isoformat(),
                "machine": os.uname().nodename,
                "args": vars(args),
                "rows": results,
            },
            indent=2,
        )
        + "\n",
    )
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
