"""Numbers a model can write never abort a run: parsing, rendering, comparison, BFCL / API-Bank scoring, the
evaluation runner and the MCTS outcome reward all take integers past Python's int-to-str digit limit (hex,
octal, binary and decimal spellings) and integers past the float range as one wrong answer."""

from __future__ import annotations

import sys

import pytest
from test_eval_bfcl import ScriptedEngine  # the model-only test double (real checker, runner, tables)

from itool_core.artifacts import read_table
from itool_core.calls import (
    ParseError,
    ToolCall,
    calls_match,
    calls_to_json,
    format_call,
    number_key,
    parse_calls,
    serialise_calls,
)
from itool_core.config import EvalConfig
from itool_core.data.bfcl import load_bfcl
from itool_core.data.records import Example
from itool_core.eval import apibank as ab
from itool_core.eval import bfcl as bf
from itool_core.eval.runner import EVAL_SAMPLES, evaluate
from itool_core.mcts.reward import Outcome

LIMIT = sys.get_int_max_str_digits()
# Past the digit limit in every spelling Python accepts (a decimal literal that long is a syntax error).
PAST_LIMIT = [
    "0x" + "f" * (LIMIT + 10),
    "-0x" + "f" * (LIMIT + 10),
    "0o" + "7" * (2 * LIMIT),
    "0b" + "1" * (4 * LIMIT),
    "0X_" + "_".join(["ffff"] * LIMIT),
    "9" * (LIMIT + 1),
]
# Within the digit limit but past every float: float(v) raises OverflowError.
PAST_FLOAT = ["1" + "0" * 400, "-" + "9" * 4000, "0x1" + "0" * 300]


@pytest.mark.parametrize("lit", PAST_LIMIT)
def test_parser_refuses_integers_past_the_digit_limit_naming_the_argument(lit):
    with pytest.raises(ParseError, match=r"argument 'x'|not a Python call list"):
        parse_calls(f"[f(x={lit})]")
    with pytest.raises(ParseError):
        parse_calls(f"[f(x=[1, {{'k': ({lit},)}}])]")  # nested as deep as a value goes


@pytest.mark.parametrize("lit", PAST_FLOAT)
def test_integers_past_float_parse_render_store_and_compare(lit):
    calls = parse_calls(f"[f(x={lit}, y=[{lit}])]")
    v = calls[0].arguments["x"]
    assert parse_calls(serialise_calls(calls)) == calls
    assert calls_to_json(calls) and format_call(calls[0])
    assert calls_match(calls, parse_calls(f"[f(y=[{lit}], x={lit})]"))
    assert not calls_match(calls, [ToolCall("f", {"x": float("inf"), "y": [v]})])
    assert not calls_match(calls, [ToolCall("f", {"x": v + 1, "y": [v]})])
    assert number_key(v) != number_key(v + 1) and number_key(1) == number_key(1.0)


def _apibank_item(value) -> Example:
    return Example(
        "apibank/t",
        "apibank",
        "apibank_level1",
        [{"name": "Api", "parameters": {}}],
        [{"role": "user", "content": "q"}],
        [ToolCall("Api", {"n": value})],
        {},
    )


@pytest.mark.parametrize("lit", PAST_LIMIT + PAST_FLOAT + ["1e999", "'[0x" + "f" * 5000 + "]'", "'" + "9" * 5000 + "'"])
def test_apibank_scores_huge_numbers_as_wrong(lit):
    for gold in (5, "5", 10**401 + 7):
        s = ab.score_apibank(_apibank_item(gold), f"API-Request: [Api(n={lit})]")
        assert not s.valid
    big = parse_calls("[f(n=" + PAST_FLOAT[0] + ")]")[0].arguments["n"]
    assert ab.score_apibank(_apibank_item(big), f"[Api(n={PAST_FLOAT[0]})]").valid


@pytest.mark.parametrize("lit", PAST_LIMIT + PAST_FLOAT)
def test_mcts_outcome_reward_takes_huge_numbers(lit):
    gold = [ToolCall("f", {"x": 2}), ToolCall("g", {"y": 1})]
    for check in (None, lambda calls: calls_match(calls, gold)):
        o = Outcome(gold, check)
        assert o(f"[f(x={lit})]", True) == -1.0
        assert o(f"[f(x={lit}), ", False) == -1.0
        assert o(f"[f(x=2), g(y={lit})]", True) == -1.0

    def bfcl_like_check(calls):  # bfcl-eval's checker: float() of an int param, repr() in its messages
        return float(calls[0].arguments.get("x", 0)) == 2.0

    assert Outcome(gold, bfcl_like_check)(f"[f(x={lit})]", True) == -1.0
    big = Outcome([ToolCall("f", {"x": 10**400})])
    assert big("[f(x=1" + "0" * 400 + ")]", True) == 1.0
    assert big("[f(x=1e308)]", True) == -1.0


@pytest.fixture(scope="module")
def bfcl_items():
    exs = load_bfcl(["simple_python", "parallel", "irrelevance"])
    return [next(e for e in exs if e.category == c) for c in ("simple_python", "parallel", "irrelevance")]


def test_bfcl_and_apibank_evaluation_run_on_past_the_limit_outputs(bfcl_items, tmp_path):
    """Evaluation runs over BFCL and API-Bank items whose every answer is a hostile number: each finishes,
    writes every row and scores each as bfcl-eval would (wrong for the AST items; a call, so wrong, for
    irrelevance)."""
    items = bfcl_items + [_apibank_item(5)]
    for k, lit in enumerate(PAST_LIMIT[:3] + PAST_FLOAT[:1]):

        def respond(prompt, lit=lit):
            ex = next(e for e in items if e.messages[-1]["content"] in prompt)
            return f"[{ex.tools[0]['name']}(x={lit})]"

        summary = evaluate(
            ScriptedEngine(respond),
            EvalConfig.covering(items),
            examples=items,
            out_dir=tmp_path / str(k),
            print_tables=False,
        )
        rows = read_table(tmp_path / str(k) / "samples.parquet", EVAL_SAMPLES).to_pylist()
        assert summary["n_items"] == len(rows) == len(items)
        assert not any(r["valid"] for r in rows)
        assert summary["bfcl"]["answer_kinds"]["irrelevance"]["call"] == 1


def test_multi_turn_run_goes_on_past_a_hostile_number():
    from test_eval_bfcl import _gt_turn_text

    from itool_core.calls import NO_CALL_TEXT
    from itool_core.eval.bfcl_multi_turn import run_multi_turn

    exs = bf.stable_subset(load_bfcl(["multi_turn_base"]), 2, seed=0)

    def respond(prompt):
        ex = next(e for e in exs if e.meta["turns"][0][0]["content"] in prompt)
        if prompt.rstrip().endswith('"tool"}]') or '"role": "tool"' in prompt.rsplit('"role": "user"', 1)[-1]:
            return NO_CALL_TEXT
        gt = parse_calls(_gt_turn_text(ex, 0))[0]
        lit = PAST_LIMIT[0] if ex is exs[0] else PAST_FLOAT[1]  # refused by the parser / executed as given
        args = ", ".join(f"{k}={lit}" for k in gt.arguments) or f"x={lit}"
        return f"[{gt.name}({args})]"

    results = run_multi_turn(ScriptedEngine(respond), exs)
    assert len(results) == 2 and not any(r.valid for r in results)
