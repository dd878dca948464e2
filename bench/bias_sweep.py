"""What a model's call / no-call *ranking* allows: BFCL scores if its decision were shifted by b nats.

``bench/decision_probe.py`` measures, per BFCL question, the first-answer-token log-odds
``log p("None") − log p("[")`` — the model's call / no-call decision.  Its AUROC says how well the decision
ranks irrelevance questions above call questions, but not what that ranking is worth in the benchmark's own
terms.  This script answers that, from numbers already measured and without running the model: for each shift
``b`` it predicts that greedy decoding abstains where ``log_odds + b > 0``, and scores

* an abstention on a call category (simple, multiple) as wrong, on irrelevance as right;
* a call decision with the evaluation's own greedy output (``itool eval``'s samples.parquet) when that output
  did not abstain: a shift of the "None" logit at the first answer token changes nothing once another token
  has won it, so the verdict stands;
* a call decision where the evaluated output abstained as unknown (what it would have called was never
  generated) — the table gives the score with those counted wrong and right (``lo–hi``); it arises only for
  b < 0 or where probe and evaluation disagree.

Approximation: only "None" and "[" compete (an opening such as ``f(x=1)`` without brackets, 2 of 300 answers of
the 144-step model, is treated as "["; the probe's mass on the two tokens is ≈ 0.95 for the warmed-up models).
``mismatch`` counts questions where the probe at b = 0 disagrees with the evaluated output's opening ("None…" vs
"[…") — the check that probe and evaluation see the same decision.

A shift is what a larger or smaller no-call share, a decision weight or a logit bias would do to the whole
distribution at once (session 9 measured ~4 nats for 9 → 21 % BFCL-style no-call rows); the sweep says which b,
if any, meets a target (e.g. irrelevance ≥ 70 % with simple / multiple within 5 points of a reference);
``--reference`` answers that exactly, scoring every shift at which a decision changes (``frontier``).

    .venv/bin/python bench/bias_sweep.py --probe bench/results/decision_probe_q144_n100.json \\
        --samples runs/eval/q144_a/samples.parquet --reference runs/eval/old144_a/summary.json \\
        --json bench/results/bias_sweep_q144.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from itool_core.artifacts import atomic_write_text  # noqa: E402
from itool_core.calls import NO_CALL_TEXT  # noqa: E402

NO_CALL_CATEGORIES = ("irrelevance",)
DEFAULT_SHIFTS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def opening(output: str) -> str:
    """The evaluated answer's decision: "no_call", "call" or "other" (prose, or a call without its brackets)."""
    text = (output or "").lstrip()
    if text.startswith(NO_CALL_TEXT.split()[0]):  # the decision token the probe reads
        return "no_call"
    return "call" if text.startswith("[") else "other"


def join(probe_rows: dict[str, list[dict]], samples: list[dict]) -> dict[str, list[tuple[float, str, bool]]]:
    """Per BFCL category, the questions both probed and evaluated: (log-odds, the answer's opening, its verdict)."""
    by_id = {s["id"]: s for s in samples}
    cats: dict[str, list[tuple[float, str, bool]]] = {}
    for group, rows in probe_rows.items():
        if not group.startswith("BFCL "):
            continue
        for r in rows:
            if (s := by_id.get(r["id"])) is not None:
                item = (r["log_odds"], opening(s["output"]), bool(s["valid"]))
                cats.setdefault(group.split(" ", 1)[1], []).append(item)
    return cats


def sweep(probe_rows: dict[str, list[dict]], samples: list[dict], shifts) -> dict:
    """Per shift and BFCL category: predicted abstentions and the score range (see the module docstring).

    ``probe_rows``: decision_probe's ``prompts`` ("BFCL <category>" → rows with ``id`` and ``log_odds``);
    ``samples``: itool eval rows with ``id``, ``category``, ``output``, ``valid``.
    """
    cats = join(probe_rows, samples)
    mismatch = {
        c: sum((lo > 0) != (op == "no_call") for lo, op, _ in items if op != "other") for c, items in cats.items()
    }
    table = []
    for b in shifts:
        row = {"shift": b}
        for c, items in cats.items():
            abstain_right = c in NO_CALL_CATEGORIES
            declined = right = unknown = 0
            for lo, op, valid in items:
                if lo + b > 0:
                    declined += 1
                    right += abstain_right
                elif op == "no_call":
                    unknown += 1
                else:
                    right += valid
            row[c] = {"n": len(items), "declined": declined, "score_lo": right, "score_hi": right + unknown}
        table.append(row)
    return {"categories": sorted(cats), "mismatch_at_0": mismatch, "table": table}


def frontier(
    probe_rows: dict[str, list[dict]], samples: list[dict], reference: dict[str, float], max_loss: float, target: float
) -> dict:
    """Exact search over every shift b ≥ 0 (no grid): the decisions change only where b crosses a question's
    −log-odds, so each of those points (and b = 0) is scored once.

    ``reference``: call category → score in points (e.g. the old set's accuracy × 100).  Returns ``best`` — the
    shift with the highest irrelevance whose call categories all stay within ``max_loss`` points of the
    reference (scored with unknowns counted wrong) — and ``target`` — the smallest shift reaching ``target``
    points of irrelevance, with what it costs.  Either is None where no shift qualifies.
    """
    los = [lo for items in join(probe_rows, samples).values() for lo, _, _ in items]
    # at b = −lo exactly that question still calls (lo + b > 0 is strict), so every point is a right-closed end
    points = sorted({0.0} | {-lo for lo in los if -lo > 0} | {max([0.0] + [-lo for lo in los]) + 1.0})
    rows = sweep(probe_rows, samples, points)["table"]

    def points_of(row, c):  # rounded so that 0.28 × 100 compares equal to 28 of 100
        return round(100.0 * row[c]["score_lo"] / row[c]["n"], 6)

    call_cats = [c for c in rows[0] if c != "shift" and c not in NO_CALL_CATEGORIES]
    missing = [c for c in call_cats if c not in reference]
    if missing:
        raise ValueError(f"reference has no score for {missing} (has {sorted(reference)})")
    abstain_cats = [c for c in rows[0] if c in NO_CALL_CATEGORIES]
    if not abstain_cats:
        raise ValueError("the probe has no irrelevance questions to shift towards")

    def summary(row):
        return {"shift": row["shift"], **{c: points_of(row, c) for c in abstain_cats + call_cats}}

    within = [r for r in rows if all(points_of(r, c) >= reference[c] - max_loss for c in call_cats)]
    best = max(within, key=lambda r: (sum(points_of(r, c) for c in abstain_cats), -r["shift"]), default=None)
    reach = [r for r in rows if all(points_of(r, c) >= target for c in abstain_cats)]
    return {
        "reference": reference,
        "max_loss": max_loss,
        "target_points": target,
        "best": summary(best) if best else None,
        "target": summary(reach[0]) if reach else None,
    }


def reference_scores(summary_path: str) -> dict[str, float]:
    """Call-category scores in points from an ``itool eval`` summary.json (the reference model's)."""
    summary = json.loads(Path(summary_path).read_text())
    try:
        cats = summary["bfcl"]["categories"]
        return {c: round(100.0 * v["accuracy"], 6) for c, v in cats.items() if c not in NO_CALL_CATEGORIES}
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{summary_path}: not an itool eval summary with bfcl.categories.*.accuracy ({exc})") from exc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--probe", required=True, help="decision_probe.py --json output (with BFCL questions)")
    ap.add_argument("--samples", required=True, help="itool eval's samples.parquet on the same questions")
    ap.add_argument(
        "--shifts",
        default=",".join(str(b) for b in DEFAULT_SHIFTS),
        help="comma-separated shifts in nats (positive: towards no call)",
    )
    ap.add_argument(
        "--reference",
        default=None,
        help="the reference model's itool eval summary.json: also search every shift for the best "
        "irrelevance within --max-loss points of its call scores, and the cost of --target",
    )
    ap.add_argument("--max-loss", type=float, default=5.0, help="points a call category may lose (default 5)")
    ap.add_argument("--target", type=float, default=70.0, help="irrelevance points to reach (default 70)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import pandas as pd

    probe = json.loads(Path(args.probe).read_text())
    samples = pd.read_parquet(args.samples, columns=["id", "category", "output", "valid"]).to_dict("records")
    result = sweep(probe["prompts"], samples, [float(b) for b in args.shifts.split(",")])
    result.update(probe=args.probe, samples=args.samples)
    cats = result["categories"]
    print(f"{'shift':>6s} " + " ".join(f"{c + ' declined / score':>34s}" for c in cats))
    for row in result["table"]:
        cells = []
        for c in cats:
            v = row[c]
            score = f"{v['score_lo']}" if v["score_lo"] == v["score_hi"] else f"{v['score_lo']}–{v['score_hi']}"
            cells.append(f"{v['declined']:>3d} / {score:>7s} of {v['n']}")
        print(f"{row['shift']:6.2f} " + " ".join(f"{x:>34s}" for x in cells))
    print(
        "probe vs evaluated opening disagree at b = 0: "
        + ", ".join(f"{c} {n}" for c, n in result["mismatch_at_0"].items())
    )
    if args.reference:
        result["frontier"] = front = frontier(
            probe["prompts"], samples, reference_scores(args.reference), args.max_loss, args.target
        )

        def show(row):
            return ", ".join(f"{k} {v:.0f}" if k != "shift" else f"b = {v:.3g}" for k, v in row.items())

        ref = ", ".join(f"{c} {v:.0f}" for c, v in front["reference"].items())
        print(f"reference ({args.reference}): {ref}")
        print(f"best within {args.max_loss:g} points: " + (show(front["best"]) if front["best"] else "none"))
        print(
            f"first shift reaching irrelevance {args.target:g}: "
            + (show(front["target"]) if front["target"] else "none")
        )
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
