"""bench/bias_sweep.py: scores under a shifted call / no-call decision, counted by hand on six questions."""

from __future__ import annotations

import pytest
from conftest import load_bench

NONE = "None of the given functions can be used to answer this question."


@pytest.fixture(scope="module")
def bs():
    return load_bench("bias_sweep")


PROBE = {
    "train call easy": [{"id": "t1", "log_odds": 9.0}],  # not a BFCL group: ignored
    "BFCL irrelevance": [{"id": "i1", "log_odds": 0.5}, {"id": "i2", "log_odds": -1.0}, {"id": "i3", "log_odds": -3.0}],
    "BFCL simple_python": [
        {"id": "s1", "log_odds": -0.5},
        {"id": "s2", "log_odds": -2.0},
        {"id": "s3", "log_odds": 0.3},
        {"id": "never_evaluated", "log_odds": 5.0},
    ],
}
SAMPLES = [
    {"id": "i1", "category": "irrelevance", "output": NONE, "valid": True},
    {"id": "i2", "category": "irrelevance", "output": "[f(x=1)]", "valid": False},
    {"id": "i3", "category": "irrelevance", "output": "[f(x=", "valid": True},  # broken: BFCL counts it
    {"id": "s1", "category": "simple_python", "output": "[f(x=1)]", "valid": True},
    {"id": "s2", "category": "simple_python", "output": "g(y=2)", "valid": True},  # a call without brackets
    {"id": "s3", "category": "simple_python", "output": NONE, "valid": False},
]


def cell(result, shift, cat):
    row = next(r for r in result["table"] if r["shift"] == shift)
    v = row[cat]
    return v["n"], v["declined"], v["score_lo"], v["score_hi"]


def test_scores_under_shifts(bs):
    r = bs.sweep(PROBE, SAMPLES, [0.0, 1.0, -0.4])
    assert r["categories"] == ["irrelevance", "simple_python"]
    assert r["mismatch_at_0"] == {"irrelevance": 0, "simple_python": 0}
    # b = 0 reproduces the evaluation: irrelevance i1 (abstained) + i3 (broken); simple s1 + s2
    assert cell(r, 0.0, "irrelevance") == (3, 1, 2, 2)
    assert cell(r, 0.0, "simple_python") == (3, 1, 2, 2)
    # b = 1: i2's log-odds reach 0, not above — it still calls (wrongly); s1 now abstains and loses its point
    assert cell(r, 1.0, "irrelevance") == (3, 1, 2, 2)
    assert cell(r, 1.0, "simple_python") == (3, 2, 1, 1)
    # b = -0.4: s3 would call, but what it would have called was never generated: unknown
    assert cell(r, -0.4, "simple_python") == (3, 0, 2, 3)
    assert cell(r, -0.4, "irrelevance") == (3, 1, 2, 2)


def test_mismatch_counts_probe_and_evaluation_disagreeing(bs):
    samples = [dict(s, output=NONE) if s["id"] == "i2" else s for s in SAMPLES]
    assert bs.sweep(PROBE, samples, [0.0])["mismatch_at_0"] == {"irrelevance": 1, "simple_python": 0}


def test_cli_writes_json(bs, tmp_path):
    import json

    import pandas as pd

    (tmp_path / "probe.json").write_text(json.dumps({"prompts": PROBE}))
    pd.DataFrame(SAMPLES).to_parquet(tmp_path / "samples.parquet")
    (tmp_path / "summary.json").write_text(json.dumps({"bfcl": {"categories": {"simple_python": {"accuracy": 1.0}}}}))
    assert (
        bs.main(
            [
                "--probe",
                str(tmp_path / "probe.json"),
                "--samples",
                str(tmp_path / "samples.parquet"),
                "--shifts",
                "0,1",
                "--reference",
                str(tmp_path / "summary.json"),
                "--max-loss",
                "40",
                "--json",
                str(tmp_path / "out.json"),
            ]
        )
        == 0
    )
    out = json.loads((tmp_path / "out.json").read_text())
    assert [row["shift"] for row in out["table"]] == [0.0, 1.0]
    assert out["table"][1]["simple_python"]["declined"] == 2
    assert out["frontier"]["best"]["shift"] == 0.0  # simple 2/3 is 33 points below 100; 1/3 is not within 40


def test_frontier_scores_every_shift_where_a_decision_changes(bs):
    # decisions change at b = 0.5, 1, 2, 3 (each question's −log-odds above 0); counted by hand:
    #   b ≤ 0.5: irrelevance 2/3, simple 2/3;  b = 1: simple 1/3 (s1 declines);
    #   b = 2: irrelevance 3/3 (i2 declines), simple 1/3;  b ≥ 3: simple 0/3 (s2 declines)
    ref = {"simple_python": 200 / 3}
    wide = bs.frontier(PROBE, SAMPLES, ref, max_loss=34, target=100)
    assert wide["best"] == pytest.approx({"shift": 2.0, "irrelevance": 100.0, "simple_python": 100 / 3})
    assert wide["target"] == wide["best"]
    narrow = bs.frontier(PROBE, SAMPLES, ref, max_loss=5, target=100)
    assert narrow["best"] == pytest.approx({"shift": 0.0, "irrelevance": 200 / 3, "simple_python": 200 / 3})
    assert narrow["target"]["shift"] == 2.0
    assert bs.frontier(PROBE, SAMPLES, {"simple_python": 100.0}, max_loss=5, target=100)["best"] is None
    with pytest.raises(ValueError, match="simple_python"):
        bs.frontier(PROBE, SAMPLES, {"multiple": 30.0}, max_loss=5, target=70)


def test_reference_from_an_eval_summary(bs, tmp_path):
    import json

    path = tmp_path / "summary.json"
    path.write_text(
        json.dumps(
            {
                "bfcl": {
                    "categories": {
                        "multiple": {"accuracy": 0.28, "correct": 28, "total": 100},
                        "irrelevance": {"accuracy": 0.22},
                    }
                }
            }
        )
    )
    assert bs.reference_scores(str(path)) == {"multiple": 28.0}  # exactly: 0.28 × 100 is 28.000000000000004
    path.write_text("{}")
    with pytest.raises(ValueError, match="summary.json"):
        bs.reference_scores(str(path))
