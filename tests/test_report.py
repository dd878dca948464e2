"""Scores a reader can trust: Wilson intervals, exact McNemar, the paired stage table and the plot."""

from __future__ import annotations

import math

import pytest

from itool_core.artifacts import write_table
from itool_core.eval.runner import EVAL_SAMPLES
from itool_core.eval.stats import mcnemar_exact, paired, wilson
from itool_core.report import StageScores, paired_table, plot_scores, report_markdown, score_table


def test_wilson_matches_hand_computed_values():
    # 0/10: centre = half = (z²/2n)/(1 + z²/n) = 0.1388  →  [0, 0.2775]
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    lo, hi = wilson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    # wider with fewer items, never outside [0, 1], always around the estimate
    for n in (1, 3, 20, 100):
        for k in range(n + 1):
            a, b = wilson(k, n)
            assert 0 <= a <= k / n <= b <= 1
    assert wilson(3, 10)[1] - wilson(3, 10)[0] > wilson(30, 100)[1] - wilson(30, 100)[0]
    with pytest.raises(ValueError):
        wilson(4, 3)


def test_mcnemar_exact_is_the_two_sided_binomial_test_of_the_discordant_items():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # 2 · 0.5^5
    assert mcnemar_exact(9, 1) == pytest.approx(2 * (1 + 10) / 1024)
    assert mcnemar_exact(3, 3) == 1.0
    for b in range(8):
        for c in range(8):
            assert mcnemar_exact(b, c) == mcnemar_exact(c, b)
            exact = min(1.0, 2 * sum(math.comb(b + c, i) for i in range(min(b, c) + 1)) / 2 ** (b + c))
            assert mcnemar_exact(b, c) == pytest.approx(exact)


def test_paired_uses_only_the_shared_items():
    a = {"1": True, "2": True, "3": False, "4": False, "only_a": True}
    b = {"1": True, "2": False, "3": True, "4": True, "only_b": False}
    p = paired(a, b)
    assert (p.n, p.a_correct, p.b_correct, p.a_only, p.b_only) == (4, 2, 3, 1, 2)
    assert p.diff == pytest.approx(0.25) and p.p_value == pytest.approx(mcnemar_exact(1, 2))


def _stage(tmp_path, label, verdicts, pairs=None):
    d = tmp_path / label
    rows = [
        {
            "id": i,
            "benchmark": "bfcl",
            "category": "simple_python",
            "prompt": "",
            "output": "",
            "calls": "null",
            "valid": v,
            "error": "",
            "error_type": "",
        }
        for i, v in verdicts.items()
    ]
    write_table(rows, d / "samples.parquet", EVAL_SAMPLES)
    k, n = sum(verdicts.values()), len(verdicts)
    summary = {
        "bfcl": {
            "overall": k / n,
            "categories": {"simple_python": {"accuracy": k / n, "total": n, "correct": k, "ci95": list(wilson(k, n))}},
        },
        "apibank": {"level1": {"accuracy": 0.5, "total": 2, "correct": 1}},
    }
    return StageScores(label, summary, str(d), pairs)


def test_tables_show_n_intervals_and_the_paired_difference(tmp_path):
    sft = _stage(tmp_path, "SFT", {str(i): i < 4 for i in range(10)})
    it1 = _stage(tmp_path, "iteration 1", {str(i): i < 9 for i in range(10)}, pairs=7)
    table = score_table([sft, it1])
    assert "simple_python (n=10)" in table and "apibank_level1 (n=2)" in table
    lo, hi = wilson(4, 10)
    assert f"40 [{100 * lo:.0f}–{100 * hi:.0f}]" in table
    assert table.splitlines()[-1].endswith("| 7 |")  # pairs of the iteration
    pt = paired_table([sft, it1])
    # 5 items only iteration 1 got right, none the other way: exact p = 2 · 0.5^5
    assert "| iteration 1 vs SFT | simple_python | 10 | +50 | 0 / 5 | 0.06 |" in pt
    md = report_markdown([sft, it1], "seeded subset")
    assert "95 % Wilson interval" in md and "McNemar p" in md


def test_plot_is_a_png_and_written_atomically(tmp_path):
    sft = _stage(tmp_path, "SFT", {"a": True, "b": False})
    out = plot_scores([sft, sft], tmp_path / "plots" / "scores.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.parent.glob("*.tmp"))
