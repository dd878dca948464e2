"""API-Bank level-1/level-2 scoring through the real runner, with a scripted model."""

from __future__ import annotations

import json

import pytest

from itool_core.artifacts import read_table
from itool_core.calls import ToolCall, render_prompt, serialise_calls
from itool_core.config import EvalConfig
from itool_core.data.loaders import load
from itool_core.engines.base import Completion, GenerationParams
from itool_core.eval import apibank as ab
from itool_core.eval.runner import EVAL_SAMPLES, evaluate


class JsonChatTokenizer:
    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return json.dumps(messages, ensure_ascii=False)


class ScriptedEngine:
    """Test double for the model only."""

    def __init__(self, respond):
        self.respond = respond
        self.tokenizer = JsonChatTokenizer()

    def generate(self, prompts, params=GenerationParams()):
        return [[Completion(self.respond(p))] for p in prompts]


@pytest.fixture(scope="module")
def items():
    exs, reports = load("apibank", level=[1, 2])
    assert all(not r.skipped for r in reports)
    return exs


def test_ground_truth_scores_100_percent_on_both_levels(items, tmp_path):
    by_prompt = {}
    tok = JsonChatTokenizer()
    for ex in items:
        p = render_prompt(tok, ex.tools, ex.messages)
        text = "API-Request: " + serialise_calls(ex.target)  # the prefix is accepted
        assert by_prompt.setdefault(p, text) == text  # one answer per distinct prompt
    summary = evaluate(
        ScriptedEngine(by_prompt.__getitem__),
        EvalConfig.covering(items),
        examples=items,
        out_dir=tmp_path,
        print_tables=False,
    )
    a = summary["apibank"]
    from itool_core.eval.stats import wilson

    assert a["level1"] == {"accuracy": 1.0, "correct": 399, "total": 399, "ci95": list(wilson(399, 399))}
    assert a["level2"] == {"accuracy": 1.0, "correct": 135, "total": 135, "ci95": list(wilson(135, 135))}
    rows = read_table(tmp_path / "samples.parquet", EVAL_SAMPLES).to_pylist()
    assert len(rows) == 534 and all(r["valid"] and r["benchmark"] == "apibank" for r in rows)


def test_decoding_and_value_normalisation(items):
    ex = items[0]  # ModifyRegistration(appointment_id='34567890', new_appointment_date='2023-03-26', ...)
    gold = ex.target[0]
    args = dict(gold.arguments)
    assert ab.score_apibank(ex, serialise_calls([gold])).valid
    assert ab.score_apibank(ex, serialise_calls([gold])[1:-1]).valid  # a bare call (no brackets)
    k = next(k for k, v in args.items() if isinstance(v, str) and not v.isdigit())
    shouted = {**args, k: "  " + args[k].upper().replace(" ", "   ") + " "}
    assert ab.score_apibank(ex, serialise_calls([ToolCall(gold.name, shouted)])).valid
    num = next((k for k, v in args.items() if isinstance(v, str) and v.isdigit()), None)
    if num:
        assert ab.score_apibank(ex, serialise_calls([ToolCall(gold.name, {**args, num: int(args[num])})])).valid

    assert ab.normalise_value("5") == ab.normalise_value(5) == ab.normalise_value(5.0)
    assert ab.normalise_value("True") == ab.normalise_value(True)
    assert ab.normalise_value("['John', 'Jane']") == ab.normalise_value(["john", "jane "])
    assert ab.normalise_value("New  York") == ab.normalise_value("new york")
    assert ab.normalise_value("2023-03-26") != ab.normalise_value("2023-03-27")


def test_corrupted_answers_fail(items):
    ex = items[0]
    gold = ex.target[0]
    k = next(iter(gold.arguments))
    cases = {
        "apibank:wrong_value": [ToolCall(gold.name, {**gold.arguments, k: "something else"})],
        "apibank:wrong_api": [ToolCall(gold.name + "X", gold.arguments)],
        "apibank:wrong_count": [gold, gold],
        "apibank:wrong_keys": [ToolCall(gold.name, {kk: v for kk, v in gold.arguments.items() if kk != k})],
    }
    for err, calls in cases.items():
        s = ab.score_apibank(ex, serialise_calls(calls))
        assert not s.valid and s.error_type == err, err
    s = ab.score_apibank(ex, "API-Request: [ModifyRegistration(appointment_id=__import__('os').getpid())]")
    assert not s.valid and s.error_type == "apibank:decoder_failed"
    assert not ab.score_apibank(ex, "Sure, I will modify it.").valid


def test_native_prompt_is_the_items_own_text(items):
    tok = JsonChatTokenizer()
    (p,) = ab.apibank_prompts(tok, items[:1], prompt="native")
    msgs = json.loads(p)
    assert len(msgs) == 1 and msgs[0]["role"] == "user"
    assert msgs[0]["content"].startswith("Generate an API request") and "Generate API Request:" in msgs[0]["content"]
    (q,) = ab.apibank_prompts(tok, items[:1], prompt="ours")
    assert json.loads(q)[0]["role"] == "system" and "ModifyRegistration" in json.loads(q)[0]["content"]
    with pytest.raises(ValueError):
        ab.apibank_prompts(tok, items[:1], prompt="other")


def test_level_filter_and_limit(items, tmp_path):
    seen = []

    def respond(p):
        seen.append(p)
        return "[]"

    s = evaluate(
        ScriptedEngine(respond), EvalConfig(categories=("apibank_level2",), limit=7), examples=items, print_tables=False
    )
    assert list(s["apibank"]) == ["level2"] and s["apibank"]["level2"]["total"] == 7 and len(seen) == 7
    assert s["apibank"]["level2"]["accuracy"] == 0.0
