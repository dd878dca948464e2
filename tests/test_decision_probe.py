"""bench/decision_probe.py: the AUROC and its standard error, and that the probed token is the one SFT trains.

The probe reads p("None") and p("[") at the first answer position of the evaluation prompt; its numbers mean
something only if that prompt is the training prompt token for token and the decision token is the first
answer token the loss sees — checked here on a seeded random model of SmolLM2's architecture.
"""

from __future__ import annotations

import math

import pytest
from conftest import load_bench

from itool_core.calls import PromptStyle, ToolCall
from itool_core.data.records import Example
from itool_core.train.sft import sft_pair, tokenize_pair


@pytest.fixture(scope="module")
def dp():
    return load_bench("decision_probe")


def test_auroc_is_mann_whitney(dp):
    assert dp.auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert dp.auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert dp.auroc([1.0], [1.0]) == 0.5
    assert dp.auroc([2.0, 0.0], [1.0]) == 0.5
    assert dp.auroc([], [1.0]) is None


def test_auroc_standard_error_hanley_mcneil(dp):
    # A = 0.5: Q1 = Q2 = 1/3, var = (1/4 + 29/12 + 59/12) / 1800
    assert dp.auroc_se(0.5, 30, 60) == pytest.approx(math.sqrt((0.25 + 29 / 12 + 59 / 12) / 1800))
    assert dp.auroc_se(1.0, 30, 60) == 0.0
    assert dp.auroc_se(0.8, 30, 60) < dp.auroc_se(0.5, 30, 60)  # the SE shrinks away from 0.5
    assert dp.auroc_se(None, 30, 60) is None


TOOL = {
    "name": "get_weather",
    "description": "Get the current weather of a city.",
    "parameters": {
        "type": "dict",
        "properties": {"city": {"type": "string", "description": "The city."}},
        "required": ["city"],
    },
}


@pytest.mark.parametrize("target", [[], [ToolCall("get_weather", {"city": "Paris"})]], ids=["no_call", "call"])
def test_probe_reads_the_token_sft_trains(dp, tiny, target):
    import torch

    model, tok = tiny
    style = PromptStyle(tools="compact")
    ex = Example("t/1", "handmade", "exec_simple", [TOOL], [{"role": "user", "content": "Weather in Paris?"}], target)
    none_id, bracket_id = dp.first_token_ids(tok)
    assert none_id != bracket_id

    p_ids, c_ids = tokenize_pair(tok, *sft_pair(tok, ex, style))
    assert c_ids[0] == (bracket_id if target else none_id)  # the first trained answer token is the decision

    (row,) = dp.probe(model, tok, [ex], style)
    with torch.no_grad():  # teacher-forced, as the loss sees it: prompt + answer, logits at the last prompt token
        lp = model(torch.tensor([p_ids + c_ids])).logits[0, len(p_ids) - 1].float().log_softmax(-1)
    assert row["p_none"] == pytest.approx(lp[none_id].exp().item(), rel=1e-4)
    assert row["p_bracket"] == pytest.approx(lp[bracket_id].exp().item(), rel=1e-4)
    assert row["log_odds"] == pytest.approx((lp[none_id] - lp[bracket_id]).item(), abs=1e-4)
