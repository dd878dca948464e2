"""What the proof run rests on, below the flow (tests/test_flows.py runs the control stage end to end):

* held-out item splits: per category the first ``test_items`` of the seeded order are the test items, dev the
  items after them — disjoint whatever ``limit`` is; bad settings fail naming the key;
* the proof profile scores ≥ 100 test items per category on the five categories, on the real benchmark data;
* the control's matching rule: exactly S steps, the batch that brings its tokens nearest the iterations' T;
* the paired comparisons: the right stage pairs (the final iteration against SFT and the control), a pooled
  row over all items, the discordant counts and exact McNemar p;
* the results page renders comparisons, the control's target and spent compute, throughput and the plot;
* the bench's throughput: FLOP/s of training stages from tokens and the parameter count.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from itool_core.artifacts import write_table
from itool_core.config import ConfigError, EvalConfig, SFTConfig, profile
from itool_core.data.records import Example
from itool_core.eval.bfcl import stable_subset
from itool_core.eval.runner import EVAL_SAMPLES, select_items, subset_text
from itool_core.eval.stats import mcnemar_exact, wilson
from itool_core.report import StageScores, comparison_pairs, comparisons, report_markdown
from itool_core.train.control import control_config, plan_control

ROOT = Path(__file__).resolve().parents[1]


def _items(n: int, cat: str) -> list[Example]:
    return [Example(f"{cat}_{i}", "bfcl", cat, [], [{"role": "user", "content": "q"}], []) for i in range(n)]


# ------------------------------------------------------------------------------------------- item splits


def test_test_and_dev_items_are_disjoint_blocks_of_the_seeded_order():
    exs = _items(30, "simple_python") + _items(25, "multiple")
    cfg = EvalConfig(categories=("simple_python", "multiple"), split="test", test_items=10, limit=None)
    test = select_items(exs, cfg)
    dev = select_items(exs, EvalConfig(categories=cfg.categories, split="dev", test_items=10, limit=None))
    assert {e.id for e in test}.isdisjoint({e.id for e in dev})
    assert len(test) == 20 and len(dev) == (30 - 10) + (25 - 10)
    # test = the first test_items of each category's seeded order: the items a plain limit-10 run scores
    assert [e.id for e in test] == [e.id for e in stable_subset(exs, 10, 0)]
    # limit cuts within a block and never moves the boundary: dev with any limit stays off the test items
    for limit in (1, 5, 15, 100):
        d = select_items(exs, EvalConfig(categories=cfg.categories, split="dev", test_items=10, limit=limit))
        assert {e.id for e in d}.isdisjoint({e.id for e in test})
        assert len([e for e in d if e.category == "multiple"]) == min(limit, 15)
    # another seed, another order
    other = select_items(exs, EvalConfig(categories=cfg.categories, split="test", test_items=10, seed=1, limit=None))
    assert {e.id for e in other} != {e.id for e in test}
    # no split: the plain seeded subset, as before
    plain = select_items(exs, EvalConfig(categories=cfg.categories, limit=3))
    assert [e.id for e in plain] == [e.id for e in stable_subset(exs, 3, 0)]
    assert "dev split" in subset_text(EvalConfig(split="dev", limit=50)) and "at most 50" in subset_text(
        EvalConfig(split="dev", limit=50)
    )


def test_bad_split_settings_fail_naming_the_key():
    with pytest.raises(ConfigError, match="evaluation.split"):
        EvalConfig(split="validation")
    with pytest.raises(ConfigError, match="evaluation.limit"):
        EvalConfig(split="test", test_items=100, limit=150)
    with pytest.raises(ConfigError, match="evaluation.test_items"):
        EvalConfig(split="test", test_items=0)
    # a category whose items all sit in the test block has no dev items: an error naming it
    with pytest.raises(ValueError, match="'multiple' has 5 items"):
        select_items(_items(5, "multiple"), EvalConfig(categories=("multiple",), split="dev", test_items=10))


def test_the_proof_profile_scores_100_held_out_items_per_category():
    cfg = profile("proof")
    ev = cfg.evaluation
    assert {"simple_python", "multiple", "parallel", "irrelevance", "apibank_level1"} <= set(ev.categories)
    assert ev.split == "test" and ev.test_items >= 100 and (ev.limit is None or ev.limit >= 100)
    assert cfg.control and cfg.iterations >= 2 and ev.base
    # on the real benchmark data: ≥ 100 test items per category, ≥ 500 pooled, and dev items disjoint from them
    from itool_core.registry import BENCHMARKS as REG

    try:
        exs = REG.load("bfcl").load([c for c in ev.categories if c != "apibank_level1"], None)
        exs += REG.load("apibank").load(["apibank_level1"], None)
    except FileNotFoundError as e:  # API-Bank data not installed beside the clone
        pytest.skip(f"benchmark data missing: {e}")
    test = select_items(exs, ev)
    dev = select_items(exs, EvalConfig(**{**ev.__dict__, "split": "dev"}))
    per_cat = {c: sum(e.category == c for e in test) for c in ev.categories}
    assert all(n >= 100 for n in per_cat.values()), per_cat
    assert len(test) >= 500
    assert {(e.category, e.id) for e in test}.isdisjoint({(e.category, e.id) for e in dev})
    assert {e.category for e in dev} == set(ev.categories)


# --------------------------------------------------------------------------------------------- control


def test_the_control_plan_matches_steps_exactly_and_tokens_as_nearly_as_whole_examples_allow():
    lengths = [300, 500, 400, 600]  # mean 450
    p = plan_control(target_steps=6, target_tokens=6 * 2 * 450 + 100, example_tokens=lengths)
    assert (p.target_steps, p.batch_size, p.mean_example_tokens) == (6, 2, 450)
    assert p.epochs * math.ceil(len(lengths) / p.batch_size) >= p.target_steps  # the pool is cycled enough
    assert abs(p.planned_tokens - p.target_tokens) <= p.target_steps * p.mean_example_tokens / 2
    # fewer tokens than one example per step: batch 1 (the steps still match)
    assert plan_control(4, 10, lengths).batch_size == 1
    cfg = control_config(SFTConfig(learning_rate=3e-4, grad_accum_steps=4), p)
    assert (cfg.per_device_batch_size, cfg.grad_accum_steps, cfg.max_steps_per_stage) == (2, 1, 6)
    assert cfg.learning_rate == 3e-4 and cfg.merge  # the warm-up's settings otherwise
    from itool_core.train.sft import planned_steps

    assert planned_steps(len(lengths), cfg) == 6  # what train_sft will run: exactly S
    with pytest.raises(ValueError, match="target_steps"):
        plan_control(0, 100, lengths)
    with pytest.raises(ValueError, match="no trainable example"):
        plan_control(3, 100, [])


def test_a_control_with_nothing_to_match_keeps_the_policy(tmp_path):
    from itool_core.artifacts import ContentRef
    from tasks import stages

    pol = ContentRef.named("p", str(tmp_path))
    out = stages.control_sft.fn(SFTConfig(), None, pol, 0, 0, str(tmp_path / "out"))
    assert out.policy == pol and out.skipped and out.steps == 0


# ----------------------------------------------------------------------------------------- comparisons


def _stage(tmp_path, label, kind, verdicts: dict[str, dict[str, bool]]) -> StageScores:
    d = tmp_path / label.replace(" ", "_")
    rows = [
        {
            "id": i,
            "benchmark": "bfcl",
            "category": c,
            "prompt": "",
            "output": "",
            "calls": "null",
            "valid": v,
            "error": "",
            "error_type": "",
        }
        for c, vs in verdicts.items()
        for i, v in vs.items()
    ]
    write_table(rows, d / "samples.parquet", EVAL_SAMPLES)
    cats = {}
    for c, vs in verdicts.items():
        k, n = sum(vs.values()), len(vs)
        cats[c] = {"accuracy": k / n, "total": n, "correct": k, "ci95": list(wilson(k, n))}
    return StageScores(label, {"bfcl": {"categories": cats}}, str(d), kind=kind)


def test_comparisons_pair_the_final_iteration_with_sft_and_the_control_and_pool_the_categories(tmp_path):
    ids = [str(i) for i in range(10)]

    def v(a: int, b: int):  # a of 10 right in simple_python, b of 10 in multiple (the first ones)
        return {"simple_python": {i: int(i) < a for i in ids}, "multiple": {i: int(i) < b for i in ids}}

    st = [
        _stage(tmp_path, "base", "base", v(0, 0)),
        _stage(tmp_path, "SFT", "sft", v(3, 2)),
        _stage(tmp_path, "it 1", "iteration", v(4, 2)),
        _stage(tmp_path, "it 2", "iteration", v(6, 5)),
        _stage(tmp_path, "control", "control", v(4, 3)),
    ]
    assert comparison_pairs(st) == [(0, 1), (1, 2), (2, 3), (1, 3), (1, 4), (4, 3)]
    rows = comparisons(st)
    pooled = {(r["b"], r["a"]): r for r in rows if r["category"] == "pooled"}
    assert set(pooled) == {("SFT", "base"), ("it 1", "SFT"), ("it 2", "it 1"), ("it 2", "SFT"), ("control", "SFT"),
                           ("it 2", "control")}  # fmt: skip
    r = pooled[("it 2", "control")]
    # pooled over 20 items: control 7 right, it 2 11 right, every control-right item also right in it 2
    assert (r["n"], r["a_correct"], r["b_correct"], r["a_only"], r["b_only"]) == (20, 7, 11, 0, 4)
    assert r["delta_points"] == 20.0 and r["p_value"] == pytest.approx(mcnemar_exact(0, 4))
    per_cat = [x for x in rows if (x["b"], x["a"]) == ("it 2", "control") and x["category"] != "pooled"]
    assert [(x["category"], x["n"], x["b_only"]) for x in per_cat] == [("simple_python", 10, 2), ("multiple", 10, 2)]
    md = report_markdown(st, "subset")
    assert "| it 2 vs control | **pooled** | 20 | +20 | 0 / 4 | 0.12 |" in md
    # stages of unknown kind: each only against its neighbour (the old behaviour)
    plain = [StageScores(s.label, s.summary, s.dir) for s in st[:3]]
    assert comparison_pairs(plain) == [(0, 1), (1, 2)]


# ------------------------------------------------------------------------------------ page and bench


def _bench(name: str):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_the_results_page_shows_comparisons_control_throughput_and_the_plot():
    page = _bench("results_page")
    cat = {"correct": 3, "total": 10, "accuracy": 0.3, "ci95": list(wilson(3, 10))}
    run = {
        "profile": "proof",
        "command": "itool run --profile proof",
        "date": "2026-12-07",
        "machine": {"cpu": "x", "cores": 2, "memory_gib": 24, "torch": "2", "bfloat16_matmul_flop_per_s": 4.5e11},
        "scores": [{"stage": "SFT", "pairs": None, "categories": {"simple_python": cat}}],
        "subset": "test split",
        "plot": "run_proof_scores.png",
        "comparisons": [
            {
                "a": "SFT",
                "b": "control",
                "category": "pooled",
                "n": 500,
                "delta_points": 2.4,
                "a_only": 10,
                "b_only": 22,
                "p_value": 0.0501,
            },
            {
                "a": "control",
                "b": "it 2",
                "category": "parallel",
                "n": 100,
                "delta_points": 9.0,
                "a_only": 1,
                "b_only": 10,
                "p_value": 0.0117 / 10,
            },
        ],  # fmt: skip
        "control": {"target": {"steps": 12, "tokens": 30000}, "spent": {"steps": 12, "tokens": 28800}, "batch_size": 2},
        "throughput": {
            "warmup": {"seconds": 600, "tokens": 200000, "tokens_per_s": 333.3, "flop_per_s": 1.8e11, "peak_share": 0.4}
        },  # fmt: skip
        "wall_s": 7000,
        "goal_s": 7200,
        "goal_met": True,
        "peak_rss_mb": 9000,
        "stages_s": {"warmup": 600},
        "startup_s": 30,
    }
    md = page.run_section(run)
    assert "![scores per stage, profile proof](../bench/results/run_proof_scores.png)" in md
    assert "| control vs SFT | **pooled** | 500 | +2 | 10 / 22 | 0.05 |" in md
    assert "| it 2 vs control | parallel | 100 | +9 | 1 / 10 | 1.2e-03 |" in md
    assert "Target: 12 steps, 30000 tokens; spent: 12 steps, 28800 tokens (0.96 × the target; batch 2)" in md
    assert "| warmup | 600 | 200000 | 333 | 180.0 | 40.0 % |" in md and "450 GFLOP/s" in md


def test_bench_throughput_gives_training_flops_from_tokens_and_parameters(tmp_path):
    from itool_core.models import save_policy, tiny_model

    model, tok = tiny_model(seed=0)
    d = str(save_policy(model, tok, tmp_path / "m"))
    n = sum(p.numel() for p in model.parameters())
    bench = _bench("pipeline_run")
    assert bench.n_params(d) == n
    summary = {
        "final_policy": d,
        "compute_s": {"warmup": 10.0},
        "rows": [],
        "work": {
            "warmup": {"steps": 4, "tokens": 1000, "seconds": 10.0},
            "iter_1/preference": {"steps": 2, "tokens": 500, "seconds": 5.0},
            "iter_1/mine": {"generated_tokens": 300},
        },
    }
    tp = bench.throughput(summary, peak=1e9)
    assert tp["warmup"]["tokens_per_s"] == 100.0
    assert tp["warmup"]["flop_per_s"] == round(4 * n * 1000 / 10)
    assert tp["iter_1/preference"]["flops"] == 6 * n * 500
    assert tp["iter_1/preference"]["peak_share"] == round(6 * n * 500 / 5 / 1e9, 4)
    assert "flops" not in tp["iter_1/mine"] and tp["iter_1/mine"]["tokens"] == 300


def _cmp(a: str, b: str, cat: str, n: int, a_ok: int, b_ok: int, p: float) -> dict:
    return {
        "a": a, "b": b, "category": cat, "n": n, "a_correct": a_ok, "b_correct": b_ok,
        "delta_points": 100 * (b_ok - a_ok) / n, "a_only": 0, "b_only": 0, "p_value": p,
    }  # fmt: skip


def test_the_results_page_says_plainly_whether_the_method_beat_sft_and_the_control():
    page = _bench("results_page")
    stages = [("base", "base"), ("SFT", "sft"), ("iTool iteration 1", "iteration"), ("iTool iteration 2", "iteration")]
    run = {
        "profile": "proof",
        "scores": [{"stage": s, "kind": k, "categories": {}} for s, k in stages + [("control", "control")]],
        "comparisons": [
            _cmp("base", "SFT", "simple_python", 100, 0, 8, 0.0078),
            _cmp("base", "SFT", "parallel", 100, 0, 13, 0.0002),
            _cmp("base", "SFT", "irrelevance", 100, 100, 91, 0.004),  # significant, but a loss
            _cmp("SFT", "iTool iteration 2", "pooled", 500, 121, 115, 0.48),
            _cmp("control", "iTool iteration 2", "pooled", 500, 100, 130, 0.001),
        ],
    }
    text = "\n".join(page._verdict(run))
    assert "SFT above base with p < 0.05 in 2 categories (simple_python, parallel) — target ≥ 3: **not met**" in text
    assert "iTool iteration 2 vs SFT, pooled over 500 items: 115 vs 121 right (-1.2 points, p = 0.48)" in text
    assert "iTool iteration 2 vs control, pooled over 500 items: 130 vs 100 right (+6.0 points, p = 1.0e-03)" in text
    assert text.count("**not met**") == 2 and text.count("**met**") == 1
    assert page._verdict({**run, "scores": run["scores"][:2], "comparisons": []}) == []  # no iteration: no verdict
    demo = {
        "profile": "demo",
        "scores": run["scores"][:3],
        "comparisons": [_cmp("base", "SFT", "pooled", 20, 0, 5, 0.0625)],
        "throughput": {"iter_1/preference": {"pairs_trained": 8.0}, "iter_2/preference": {"pairs_trained": 6.0}},
        "wall_s": 661,
        "goal_s": 600,
        "goal_met": False,
    }
    text = "\n".join(page._verdict(demo))
    assert "SFT − base, pooled over 20 items: +25 points (p = 0.06) — goal ≥ +20: **met**" in text
    assert "pairs trained per iteration: 8, 6 — goal ≥ 8: **not met**" in text
    assert "wall time 11.0 min — goal ≤ 10 min: **not met**" in text


def test_the_diagnosis_scores_pairs_with_one_shared_prompt_forward_as_a_full_forward_does(tmp_path):
    """proof_diagnosis's held-out accuracy rests on summed completion log-probs computed from one prompt forward
    and its KV cache: they must equal an independent full forward per sequence (train.preference), and the pair
    table's Q gaps and no-call counts must be read off the right columns."""
    import pyarrow as pa

    from itool_core.mcts.pairs import PAIRS
    from itool_core.models import save_policy, tiny_model
    from itool_core.train.preference import completion_logps

    model, tok = tiny_model(seed=0)
    folder = str(save_policy(model, tok, tmp_path / "m"))
    diag = _bench("proof_diagnosis")
    lp = diag.LogProbs(folder, bf16=False)
    prompt, chosen, rejected = [5, 9, 13, 2, 7, 1], [4, 4, 8], [11, 3]
    got = lp.pair(prompt, chosen, rejected)
    ref = completion_logps(lp.model, prompt, chosen), completion_logps(lp.model, prompt, rejected)
    assert got == pytest.approx((sum(ref[0]), sum(ref[1])), abs=1e-4)

    row = {
        "example_id": "e", "tree_id": "e", "prompt": "p", "prompt_ids": prompt, "chosen_ids": chosen,
        "rejected_ids": rejected, "depth": 0, "chosen_terminal": True, "rejected_terminal": False,
        "is_final_step": True,
    }  # fmt: skip
    rows = [
        {**row, "chosen": "[f(x=1)]", "rejected": "None of the functions", "q_chosen": 0.9, "q_rejected": -0.5},
        {**row, "chosen": "None", "rejected": "[g()]", "q_chosen": 0.4, "q_rejected": 0.2},
    ]
    path = tmp_path / "pairs.parquet"
    write_table(pa.Table.from_pylist(rows, schema=PAIRS.schema), path, PAIRS)
    st = diag.pair_stats(path)
    assert st["n"] == 2 and st["chosen_no_call"] == 1 and st["rejected_no_call"] == 1
    assert st["q_gap_mean"] == pytest.approx(0.8) and st["q_gap_min"] == pytest.approx(0.2)
