"""The whole loop on the tiny model: runs end to end, and an interrupted run resumes without redoing stages."""

import json

import pytest

from itool_core.calls import ToolCall
from itool_core.config import (BufferConfig, EvalConfig, MCTSConfig, PolicyConfig, PreferenceConfig, RunConfig,
                               SFTConfig, SplitConfig)
from itool_core.data.records import Example
from itool_core.loop import results_table, run_pipeline
from itool_core.models import save_policy, tiny_model

TOOLS = [{"name": "add", "description": "Add two numbers",
          "parameters": {"type": "dict", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                         "required": ["a", "b"]}},
         {"name": "shout", "description": "Upper-case a text",
          "parameters": {"type": "dict", "properties": {"text": {"type": "string"}}, "required": ["text"]}}]


def _data(n=30):
    exs = []
    for i in range(n):
        if i % 5 == 0:
            exs.append(Example(f"t/{i}", "test", "nocall", TOOLS, [{"role": "user", "content": f"Poem #{i}?"}], []))
        elif i % 2:
            exs.append(Example(f"t/{i}", "test", "add", TOOLS[: 1 + i % 2],
                               [{"role": "user", "content": f"What is {i} plus {i + 1}?"}],
                               [ToolCall("add", {"a": i, "b": i + 1})] * (1 + i % 3 // 2)))
        else:
            exs.append(Example(f"t/{i}", "test", "shout", TOOLS, [{"role": "user", "content": f"Shout word{i}"}],
                               [ToolCall("shout", {"text": f"word{i}"})]))
    return exs


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    model, tok = tiny_model(seed=0)
    return str(save_policy(model, tok, tmp_path_factory.mktemp("tiny") / "base"))


def _cfg(tiny_dir):
    return RunConfig(
        model=tiny_dir, iterations=1, split=SplitConfig(pool_fraction=0.3),
        sft=SFTConfig(max_steps_per_stage=1, per_device_batch_size=2, max_length=768),
        buffer=BufferConfig(alpha=0.5, batch_size=4),
        evaluation=EvalConfig(categories=("simple_python", "apibank_level1"), limit=1, max_new_tokens=4, base=False),
        mcts=MCTSConfig(simulations=1, k=2, min_q_gap=0.0, min_chosen_q=-100.0, max_overlap=1.0),
        policy=PolicyConfig(max_step_tokens=6, max_rollout_tokens=6, continue_incomplete=0),
        preference=PreferenceConfig(max_steps=1, per_device_batch_size=1, grad_accum_steps=1, max_length=768))



def test_loop_end_to_end_and_resume_after_mining(tiny_dir, tmp_path, monkeypatch):
    import itool_core.train.preference as pref

    real = pref.train_preference
    calls = {"n": 0}

    def dies(*a, **k):
        calls["n"] += 1
        raise RuntimeError("killed during the preference update")

    monkeypatch.setattr(pref, "train_preference", dies)
    with pytest.raises(RuntimeError, match="killed"):
        run_pipeline(_cfg(tiny_dir), tmp_path, data_examples=_data(), progress=lambda s: None)
    assert (tmp_path / "iter_1" / "mine" / "done.json").is_file()
    assert not (tmp_path / "iter_1" / "preference" / "done.json").exists()
    mined_before = json.loads((tmp_path / "iter_1" / "mine" / "done.json").read_text())

    monkeypatch.setattr(pref, "train_preference", real)
    res = run_pipeline(_cfg(tiny_dir), tmp_path, data_examples=_data(), progress=lambda s: None)
    # everything up to mining is reused, the rest runs
    assert {"data", "split", "warmup", "eval_sft", "iter_1/buffer", "iter_1/mine"} <= set(res["skipped"])
    assert res["ran"] == ["iter_1/preference", "iter_1/eval"]
    assert json.loads((tmp_path / "iter_1" / "mine" / "done.json").read_text()) == mined_before
    assert [r["stage"] for r in res["rows"]] == ["SFT (curriculum)", "iTool iteration 1"]
    assert "iTool iteration 1" in results_table(res["rows"])
    # a third run with nothing changed does nothing
    again = run_pipeline(_cfg(tiny_dir), tmp_path, data_examples=_data(), progress=lambda s: None)
    assert again["ran"] == []


def test_an_iteration_without_pairs_keeps_the_policy_and_reuses_its_scores(tiny_dir, tmp_path):
    import dataclasses

    cfg = _cfg(tiny_dir)
    cfg = dataclasses.replace(cfg, mcts=dataclasses.replace(cfg.mcts, min_q_gap=100.0))  # no pair can pass
    lines: list[str] = []
    res = run_pipeline(cfg, tmp_path, data_examples=_data(), progress=lines.append)
    sft, it1 = res["rows"]
    assert it1["pairs"] == 0 and res["final_policy"] == str(tmp_path / "warmup" / "merged")
    assert "iter_1/eval" not in res["ran"]  # the same weights are not evaluated twice
    assert it1["bfcl"] == sft["bfcl"] and it1["apibank"] == sft["apibank"]
    assert any("policy unchanged" in line for line in lines)
