"""The scores of a run, as a reader can trust them: per stage and category n, accuracy and 95 % Wilson interval;
the paired comparisons a reader of the paper asks for — each stage against the one before, the final iTool
iteration against SFT and against the compute-matched control — per category and pooled over all items (paired
difference, discordant counts, exact McNemar p); a PNG of the scores per stage with their intervals.

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
    "comparison_pairs",
    "comparisons",
    "comparison_table",
    "p_text",
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
    #: The stage's role: "base", "sft", "iteration", "control" (the compute-matched plain-SFT control) or ""
    #: (unknown: such stages are only compared with their neighbour).  :func:`comparison_pairs` reads it.
    kind: str = ""

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


def comparison_pairs(stages: Sequence[StageScores]) -> list[tuple[int, int]]:
    """Which stages to compare, as ``(a, b)`` indices (B against A): every stage of the method against the one
    before it (base → SFT → iteration 1 → …), the final iteration against SFT when there are two or more, and —
    when a ``control`` stage is present — the control against SFT and the final iteration against the control
    (the question "do the iterations beat spending the same training compute on more SFT?")."""
    main = [i for i, s in enumerate(stages) if s.kind != "control"]
    out = list(zip(main, main[1:]))
    sft = next((i for i in main if stages[i].kind == "sft"), None)
    its = [i for i in main if stages[i].kind == "iteration"]
    final = its[-1] if its else None
    if sft is not None and final is not None and (sft, final) not in out:
        out.append((sft, final))
    for c in (i for i, s in enumerate(stages) if s.kind == "control"):
        if sft is not None:
            out.append((sft, c))
        if final is not None:
            out.append((c, final))
    return out


def _verdicts(s: StageScores) -> dict[str, dict[str, bool]] | None:
    return item_verdicts(s.dir) if s.dir and (Path(s.dir) / "samples.parquet").is_file() else None


def comparisons(stages: Sequence[StageScores], pairs: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
    """Paired comparisons (default: :func:`comparison_pairs`), one row per category both stages were scored
    on plus, with two or more categories, a ``pooled`` row over all their shared items: ``a``, ``b`` (labels),
    ``category``, ``n``, ``a_correct``, ``b_correct``, ``delta_points`` (B − A in accuracy points), the
    discordant counts ``a_only`` (right in A only: McNemar's *b*) and ``b_only`` (right in B only: *c*), and the
    exact McNemar ``p_value``.  Stages without per-item verdicts (no ``samples.parquet``) are skipped."""
    verdicts = [_verdicts(s) for s in stages]
    rows: list[dict[str, Any]] = []
    for ia, ib in comparison_pairs(stages) if pairs is None else pairs:
        va, vb = verdicts[ia], verdicts[ib]
        if va is None or vb is None:
            continue
        cats = [c for c in categories_of([stages[ia], stages[ib]]) if c in va and c in vb]
        pooled_a = {f"{c}/{k}": v for c in cats for k, v in va[c].items()}
        pooled_b = {f"{c}/{k}": v for c in cats for k, v in vb[c].items()}
        # one category: its row already is the pooled one
        pooled = [("pooled", (pooled_a, pooled_b))] if len(cats) > 1 else []
        for c, (a, b) in [*((c, (va[c], vb[c])) for c in cats), *pooled]:
            p: Paired = paired(a, b)
            if not p.n:
                continue
            rows.append(
                {
                    "a": stages[ia].label,
                    "b": stages[ib].label,
                    "category": c,
                    "n": p.n,
                    "a_correct": p.a_correct,
                    "b_correct": p.b_correct,
                    "delta_points": round(100 * p.diff, 2),
                    "a_only": p.a_only,
                    "b_only": p.b_only,
                    "p_value": p.p_value,
                }
            )
    return rows


def p_text(p: float) -> str:
    """A p-value for a table: two decimals, or two significant digits below 0.01 (so 0.003 does not read 0.00)."""
    return f"{p:.2f}" if p >= 0.01 else f"{p:.1e}"


def comparison_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown of :func:`comparisons` rows (the pooled rows in bold)."""
    if not rows:
        return ""
    head = ["comparison", "category", "n", "Δ points", "only A right / only B right", "McNemar p"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cat = "**pooled**" if r["category"] == "pooled" else r["category"]
        lines.append(
            f"| {r['b']} vs {r['a']} | {cat} | {r['n']} | {r['delta_points']:+.0f} | "
            f"{r['a_only']} / {r['b_only']} | {p_text(r['p_value'])} |"
        )
    return "\n".join(lines)


def paired_table(stages: Sequence[StageScores], pairs: Sequence[tuple[int, int]] | None = None) -> str:
    """Markdown: the :func:`comparisons` of ``stages`` — difference in points, items only A / only B got right,
    exact McNemar p, per category and pooled."""
    return comparison_table(comparisons(stages, pairs))


def report_markdown(stages: Sequence[StageScores], subset: str, note: str = "") -> str:
    """The score table, the paired comparisons and how to read them."""
    parts = ["## Scores per stage", "", f"accuracy % [95 % Wilson interval]; {subset}", "", score_table(stages)]
    pt = paired_table(stages)
    if pt:
        parts += [
            "",
            "## Paired comparisons (same items)",
            "",
            pt,
            "",
            "p ≥ 0.05: the difference is within what chance gives on this many items. *pooled*: all items of the "
            "categories both stages were scored on, as one sample.",
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
        # the method's stages form one line per category; a control stage is a side branch (from SFT, not
        # from the last iteration), so it is drawn as an unconnected square in the category's colour
        pts: dict[bool, tuple[list[float], list[float], list[float], list[float]]] = {
            False: ([], [], [], []),
            True: ([], [], [], []),
        }
        for i, s in enumerate(stages):
            v = s.categories().get(c)
            if not v or not v.get("total"):
                continue
            acc = v["correct"] / v["total"]
            a, b = v.get("ci95") or wilson(int(v["correct"]), int(v["total"]))
            xs, ys, lo, hi = pts[s.kind == "control"]
            # a small horizontal offset per category keeps overlapping error bars readable
            xs.append(i + (j - (len(cats) - 1) / 2) * 0.04)
            ys.append(100 * acc)
            lo.append(100 * (acc - a))
            hi.append(100 * (b - acc))
        xs, ys, lo, hi = pts[False]
        line = ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=c)
        cx, cy, clo, chi = pts[True]
        if cx:
            colour = line.lines[0].get_color()
            ax.errorbar(cx, cy, yerr=[clo, chi], marker="s", linestyle="none", capsize=3, color=colour)
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
