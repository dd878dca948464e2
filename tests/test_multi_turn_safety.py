"""Multi-turn evaluation never lets model text reach bfcl-eval's ``eval``.

A scripted "model" tries to run code in a multi-turn turn; the real executor and checker run.  Every string
that reaches ``execute_multi_turn_func_call`` (inference and checker) is recorded and must be canonical call
text naming a public method of an involved class (or our inert placeholder); no marker file may appear.
"""

from __future__ import annotations

import json

import pytest

from itool_core.calls import NO_CALL_TEXT, format_call, parse_calls
from itool_core.data.bfcl import load_bfcl
from itool_core.engines.base import Completion, GenerationParams
from itool_core.eval import bfcl_multi_turn as mt


class JsonChatTokenizer:
    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return json.dumps(messages, ensure_ascii=False)


class ScriptedEngine:
    """Test double for the model: answers ``first`` at the first step of turn 0, then ``NO_CALL_TEXT``."""

    def __init__(self, first: str):
        self.first = first
        self.tokenizer = JsonChatTokenizer()
        self.prompts: list[str] = []

    def generate(self, prompts, params=GenerationParams()):
        out = []
        for p in prompts:
            self.prompts.append(p)
            msgs = json.loads(p)
            first_step = msgs[-1]["role"] == "user" and sum(m["role"] == "user" for m in msgs) == 1
            out.append([Completion(self.first if first_step else NO_CALL_TEXT)])
        return out


@pytest.fixture(scope="module")
def entry():
    # A GorillaFileSystem entry: its methods (cd, ls, touch, echo...) are the allowed ones.
    return next(ex for ex in load_bfcl(["multi_turn_base"]) if "GorillaFileSystem" in ex.meta["involved_classes"])


@pytest.fixture
def recorded(monkeypatch):
    """Every call-string list handed to bfcl's executor, from inference and from the checker."""
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_checker, multi_turn_utils

    seen: list[str] = []
    real = multi_turn_utils.execute_multi_turn_func_call

    def spy(func_call_list, *args, **kwargs):
        seen.extend(func_call_list)
        return real(func_call_list, *args, **kwargs)

    monkeypatch.setattr(multi_turn_utils, "execute_multi_turn_func_call", spy)
    monkeypatch.setattr(multi_turn_checker, "execute_multi_turn_func_call", spy)
    return seen


def _assert_only_canonical(strings, allowed, entry):
    gt = {s for turn in entry.meta["ground_truth"] for s in turn}  # the checker also runs bfcl's own answers
    for s in strings:
        if s in gt or s == mt.REJECTED_CALL:
            continue
        (call,) = parse_calls(s)
        assert format_call(call) == s, s  # exactly our canonical text
        assert call.name in allowed, s


ATTACKS = [
    "__import__('os').system('touch {marker}')",
    "[__import__('os').system('touch {marker}')]",
    "[cd(folder=__import__('os').getcwd())]",
    "[cd(folder=open('{marker}', 'w').name)]",
    "[open('{marker}', 'w')]",
    "[open(file='{marker}', mode='w')]",
    "[os.system(command='touch {marker}')]",
    "[__import__(name='os')]",
    "[eval(source=\"__import__('os').system('touch {marker}')\")]",
    "[exec(source=\"open('{marker}', 'w')\")]",
    "[getattr(o='os', name='system')]",
    "[_load_scenario(scenario={{}})]",
    "[ls(a=True).__class__(x=1)]",
    "[cd(folder=(lambda: open('{marker}', 'w'))())]",
    "[cd(folder='a' + 'b')]",
    "[cd(**{{'folder': 'x'}})]",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_code_in_model_output_is_rejected_and_nothing_runs(attack, entry, recorded, tmp_path):
    marker = tmp_path / "pwned"
    text = attack.format(marker=marker)
    engine = ScriptedEngine(text)
    res = mt.run_multi_turn(engine, [entry])[0]
    assert not marker.exists()
    assert not res.valid
    allowed = mt.allowed_methods(entry.meta["involved_classes"])
    _assert_only_canonical(recorded, allowed, entry)
    # Either the text did not decode (the turn ended, nothing executed) or every call was refused.
    executed_turn0 = res.executed[0]
    assert all(s == mt.REJECTED_CALL for step in executed_turn0 for s in step)


def test_unknown_and_valid_calls_in_one_step(entry, recorded, tmp_path):
    marker = tmp_path / "pwned"
    text = f"[ls(a=True), open(file='{marker}'), echo(content=\"__import__('os').system('touch {marker}')\")]"
    engine = ScriptedEngine(text)
    res = mt.run_multi_turn(engine, [entry])[0]
    assert not marker.exists()
    assert res.executed[0][0] == [
        "ls(a=True)",
        mt.REJECTED_CALL,
        "echo(content=\"__import__('os').system('touch " + str(marker) + "')\")",
    ]
    assert [r["call"]["name"] for r in res.rejected] == ["open"]
    # The model is told what bfcl's executor says about an unknown name; the other calls really ran.
    second = json.loads(engine.prompts[1])
    tool_msgs = [m for m in second if m["role"] == "tool"]
    assert len(tool_msgs) == 3
    assert tool_msgs[1]["content"] == "Error during execution: name 'open' is not defined"
    assert "Error" not in tool_msgs[0]["content"]
    _assert_only_canonical(recorded, mt.allowed_methods(entry.meta["involved_classes"]), entry)


def test_refusal_message_matches_bfcls_executor_for_unknown_names(entry):
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import execute_multi_turn_func_call

    args = (entry.meta["initial_config"], entry.meta["involved_classes"], "itool_probe_refusal", "probe")
    try:
        for call in (
            "no_such_tool(x=1)",
            "GorillaFileSystem.cd(folder='x')",
            "tools.search(q='a')",
            "exit(code=1)",
            "os.remove(path='x')",
            "a.b.unlink(p='x')",
        ):
            (bfcl_says,), _ = execute_multi_turn_func_call([call], *args)  # safe: fixed, harmless strings
            (parsed,) = parse_calls(call)
            assert mt.refusal_message(parsed) == bfcl_says
    finally:
        mt.cleanup_instances("itool_probe_refusal")


def test_validate_call_rules(entry):
    from itool_core.calls import ToolCall

    allowed = mt.allowed_methods(entry.meta["involved_classes"])
    assert "cd" in allowed and "_load_scenario" not in allowed
    assert mt.validate_call(ToolCall("cd", {"folder": "x"}), allowed) is None
    assert "not available" in mt.validate_call(ToolCall("open", {"file": "x"}), allowed)
    assert "dotted" in mt.validate_call(ToolCall("GorillaFileSystem.cd", {"folder": "x"}), allowed)
    assert mt.validate_call(ToolCall("_load_scenario", {}), allowed) is not None


def test_simulator_state_never_leaks_between_entries_or_runs(entry):
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils

    # Positive control: with one model name, bfcl's executor keeps state (a second mkdir fails).
    args = (entry.meta["initial_config"], entry.meta["involved_classes"], "itool_probe_same_name", "probe")
    multi_turn_utils.execute_multi_turn_func_call(["mkdir(dir_name='itool_leak_probe')"], *args)
    again, _ = multi_turn_utils.execute_multi_turn_func_call(["mkdir(dir_name='itool_leak_probe')"], *args)
    assert "File exists" in again[0]
    mt.cleanup_instances("itool_probe_same_name")

    # Two runs of one entry: the second must start from the initial state, not the first run's.
    for _ in range(2):
        engine = ScriptedEngine("[mkdir(dir_name='itool_leak_probe')]")
        mt.run_multi_turn(engine, [entry])
        first_result = [m for m in json.loads(engine.prompts[1]) if m["role"] == "tool"][0]["content"]
        assert "File exists" not in first_result
    assert not [k for k in vars(multi_turn_utils) if k.startswith("itool_")]
