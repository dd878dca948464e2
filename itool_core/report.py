"""The scores of a run, as a reader can trust them: per stage and category n, accuracy and 95 % Wilson interval;
each stage against the one before on the same items (paired difference, exact McNemar p); a PNG of the
scores per stage with their intervals.

A stage's evaluation folder holds ``summary.json`` and ``samples.parquet`` (one verdict per item,
:mod:`itool_core.eval.runner`).  Every stage of a run is evaluated on the same seeded subset, so two stages can
be compared item by item (:func:`itool_core.eval.stats.paired`); intervals of two stages are never compared
with each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .eval.stats import Paired, paired, wilson

__all__ = [
    "StageScores",
    "categories_of",
    "cell",
    "score_table",
    "paired_table",
    "item_verdicts",
    "plot_scores",
    "report_markdown",
]


@dataclass(frozen=True)
class StageScores:
    """One evaluated stage: its label, evaluation summary and folder."""

    label: str
    summary: dict[str, Any]
    dir: str = ""
    pairs: int | None = None  # preference pairs mined in this iteration (None: not an iteration)

    def categories(self) -> dict[str, dict[str, Any]]:
        """``{category: {correct, total, accuracy, ci95}}`` for BFCL categories and API-Bank levels."""
        out = dict((self.summary.get("bfcl") or {}).get("categories") or {})
        for level, v in (self.summary.get("apibank") or {}).items():
            if isinstance(v, dict) and "total" in v:
                out[f"apibank_{level}"] = v
        return out


def categories_of(stages: Sequence[StageScores]) -> list[str]:
    cats: list[str] = []
    for s in stages:
        for c in s.categories():
            if c not in cats:
                cats.append(c)
    return cats


def cell(v: dict[str, Any] | None) -> str:
    """``acc [lo–hi]`` in %, from a category's counts (the interval is recomputed if a summary lacks it)."""
    if not v or not v.get("total"):
        return "-"
    lo, hi = v.get("ci95") or wilson(int(v["correct"]), int(v["total"]))
    return f"{100 * v['correct'] / v['total']:.0f} [{100 * lo:.0f}–{100 * hi:.0f}]"


def score_table(stages: Sequence[StageScores]) -> str:
    """Markdown: one row per stage, one column per category (``acc [95 % CI]`` in %), n in the header."""
    cats = categories_of(stages)
    ns = {c: sorted({int(v["total"]) for s in stages if (v := s.categories().get(c))}) for c in cats}
    head = ["stage", "BFCL overall"] + [f"{c} (n={'/'.join(map(str, ns[c]))})" for c in cats] + ["pairs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for s in stages:
        overall = (s.summary.get("bfcl") or {}).get("overall")
        row = [s.label, "-" if overall is None else f"{100 * overall:.0f}"]
        row += [cell(s.categories().get(c)) for c in cats]
        row.append("-" if s.pairs is None else str(s.pairs))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def item_verdicts(eval_dir: str | Path) -> dict[str, dict[str, bool]]:
    """``{category: {item id: correct}}`` from an evaluation folder's ``samples.parquet``."""
    from .artifacts import read_table
    from .eval.runner import EVAL_SAMPLES

    out: dict[str, dict[str, bool]] = {}
    for r in (
        read_table(Path(eval_dir) / "samples.parquet", EVAL_SAMPLES).select(["id", "category", "valid"]).to_pylist()
    ):
        out.setdefault(r["category"], {})[r["id"]] = bool(r["valid"])
    return out


def paired_table(stages: Sequence[StageScores]) -> str:
    """Markdown: every stage against the stage before it, per category, on the items both were scored on —
    difference in points, items only A / only B got right, exact McNemar p."""
    rows: list[list[str]] = []
    verdicts = [item_verdicts(s.dir) if s.dir and (Path(s.dir) / "samples.parquet").is_file() else None for s in stages]
    cats = categories_of(stages)
    for i in range(1, len(stages)):
        a, b = verdicts[i - 1], verdicts[i]
        if a is None or b is None:
            continue
        for c in cats:
            if c not in a or c not in b:
                continue
            p: Paired = paired(a[c], b[c])
            rows.append(
                [
                    f"{stages[i].label} vs {stages[i - 1].label}",
                    c,
                    str(p.n),
                    f"{100 * p.diff:+.0f}",
                    f"{p.a_only} / {p.b_only}",
                    f"{p.p_value:.2f}",
                ]
            )
    if not rows:
        return ""
    head = ["comparison", "category", "n", "Δ points", "only A right / only B right", "McNemar p"]
    return "\n".join(
        ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        + ["| " + " | ".join(r) + " |" for r in rows]
    )


def report_markdown(stages: Sequence[StageScores], subset: str, note: str = "") -> str:
    """The score table, the paired comparisons and how to read them."""
    parts = ["## Scores per stage", "", f"accuracy % [95 % Wilson interval]; {subset}", "", score_table(stages)]
    pt = paired_table(stages)
    if pt:
        parts += [
            "",
            "## Each stage against the previous one (paired, same items)",
            "",
            pt,
            "",
            "p ≥ 0.05: the difference is within what chance gives on this many items.",
        ]
    if note:
        parts += ["", note]
    return "\n".join(parts) + "\n"


def plot_scores(stages: Sequence[StageScores], path: str | Path, title: str = "") -> Path:
    """PNG: accuracy per stage, one line per category, with 95 % Wilson intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .artifacts import atomic_path

    cats = categories_of(stages)
    x = list(range(len(stages)))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(stages) + 3), 4))
    for j, c in enumerate(cats):
        ys, lo, hi, xs = [], [], [], []
        for i, s in enumerate(stages):
            v = s.categories().get(c)
            if not v or not v.get("total"):
                continue
            acc = v["correct"] / v["total"]
            a, b = v.get("ci95") or wilson(int(v["correct"]), int(v["total"]))
            # a small horizontal offset per category keeps overlapping error bars readable
            xs.append(i + (j - (len(cats) - 1) / 2) * 0.04)
            ys.append(100 * acc)
            lo.append(100 * (acc - a))
            hi.append(100 * (b - acc))
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=c)
    ax.set_xticks(x, [s.label for s in stages], rotation=20, ha="right")
    ax.set_ylabel("accuracy % (95 % CI)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
