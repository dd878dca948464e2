"""The project's BFCL verdicts equal bfcl-eval's own pipeline on the same outputs.

Reference = ``eval_runner._evaluate_single_ast_entry`` / ``_evaluate_single_relevance_entry`` step by step,
with bfcl-eval's real ``default_decode_ast_prompting``, ``is_function_calling_format_output``,
``is_empty_output`` and ``ast_checker`` on the raw entries of its data files (its runner module itself
imports SDKs that are not installed).  Outputs are generated from each entry's possible answers with a seeded
RNG: right answers written several ways (constant arithmetic among them: ``budget=(1000 - 1) + 1``), wrong
ones, and malformed or hostile ones.  Outputs whose expressions the reference would ``eval`` reach it only
when that is harmless (literal numbers and strings, bounded); the rest are checked here without it.  The only
verdicts allowed to differ are the cases the differences table of :mod:`itool_core.eval.bfcl` lists.
"""

from __future__ import annotations

import ast
import copy
import json
import random
from pathlib import Path

import pytest

from itool_core.calls import NO_CALL_TEXT, ArithmeticRefused, fold_arithmetic
from itool_core.data.bfcl import load_bfcl
from itool_core.eval import bfcl as bf

CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")
ENTRIES_PER_CATEGORY = 14
SEED = 20240


def _bfcl():
    bf.install_model_config_stub()
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
    from bfcl_eval.model_handler.utils import default_decode_ast_prompting
    from bfcl_eval.utils import is_empty_output, is_function_calling_format_output

    return default_decode_ast_prompting, is_function_calling_format_output, is_empty_output, ast_checker, Language


def _data_dir() -> Path:
    import bfcl_eval

    return Path(bfcl_eval.__file__).parent / "data"


def _raw(category: str) -> tuple[dict[str, dict], dict[str, list]]:
    d = _data_dir()
    entries = {json.loads(line)["id"]: json.loads(line) for line in (d / f"BFCL_v4_{category}.json").open()}
    answers: dict[str, list] = {}
    pa = d / "possible_answer" / f"BFCL_v4_{category}.json"
    if pa.exists():
        answers = {json.loads(line)["id"]: json.loads(line)["ground_truth"] for line in pa.open()}
    return entries, answers


def reference_verdict(functions: list, text: str, possible: list | None, category: str) -> tuple[bool, str]:
    """bfcl-eval's verdict (valid, error_type) for one output; a checker exception (which aborts bfcl's runner)
    is reported as ``checker:exception``."""
    decode, is_fc_format, is_empty, checker, Language = _bfcl()
    if "irrelevance" in category:
        try:
            contain = not is_empty(decode(text))
        except Exception:
            contain = False
        return (not contain), ("irrelevance_error:decoder_success" if contain else "")
    try:
        decoded = decode(text)
    except Exception:
        return False, "ast_decoder:decoder_failed"
    if not is_fc_format(decoded):
        return False, "ast_decoder:decoder_wrong_output_format"
    try:
        res = checker(copy.deepcopy(functions), decoded, copy.deepcopy(possible), Language.PYTHON, category, "m")
    except Exception:
        return False, "checker:exception"
    return bool(res["valid"]), "" if res["valid"] else res.get("error_type", "")


# ------------------------------------------------------------------------------------------- generation


def _lit(v, rng: random.Random, tuples: bool = False) -> str:
    """Python literal text of a JSON value; lists sometimes written as tuples when ``tuples``."""
    if isinstance(v, list):
        inner = ", ".join(_lit(x, rng, tuples) for x in v)
        if tuples and rng.random() < 0.7:
            return "(" + inner + ("," if len(v) == 1 else "") + ")"
        return "[" + inner + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {_lit(x, rng, tuples)}" for k, x in v.items()) + "}"
    if isinstance(v, str):
        return rng.choice([repr(v), json.dumps(v)])
    return repr(v)


def _pick(values: list, rng: random.Random):
    """One allowed value of a parameter (``""`` = may be left out, returned as ``None``)."""
    v = rng.choice(values)
    if isinstance(v, dict):  # dict parameter: possible values per key
        return {k: x for k, vals in v.items() if (x := _pick(vals, rng)) is not None}
    return None if v == "" else v


def _gold_calls(possible: list, rng: random.Random) -> list[tuple[str, dict]]:
    out = []
    for item in possible:
        ((name, params),) = item.items()
        args = {k: x for k, vals in params.items() if (x := _pick(vals, rng)) is not None}
        out.append((name, args))
    return out


def _text(calls, rng: random.Random, *, tuples: bool = False, style: str = "list") -> str:
    parts = [f"{n}(" + ", ".join(f"{k}={_lit(v, rng, tuples)}" for k, v in a.items()) + ")" for n, a in calls]
    body = ", ".join(parts)
    if style == "bare":
        return body
    if style == "fence":
        return f"```python\n[{body}]\n```"
    return f"[{body}]"


def _mutate_value(v, rng: random.Random):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + rng.choice([1, -7, 1000])
    if isinstance(v, float):
        return v * 3 + 0.5
    if isinstance(v, str):
        return v + " extra"
    if isinstance(v, list):
        return v[:-1] if v else [1]
    if isinstance(v, dict):
        return {**v, "unexpected_key": 1}
    return 0


def generated_outputs(functions: list, possible: list | None, rng: random.Random) -> list[str]:
    """Right, wrong and malformed outputs for one entry (no binary operations: bfcl-eval would eval those)."""
    fn = functions[0]["name"]
    prose = ["I cannot help with that.", NO_CALL_TEXT, "", "[]", "[{}]", "None", "```\n```"]
    hostile = [
        f"[{fn}(x=0x{'f' * 4000})]",  # an int past the int-to-str limit: gets past ast, breaks repr
        f"[{fn}(x={'9' * 5000})]",  # the same as decimal: a syntax error
        f"[{fn}(x=1e999)]",
        f"[{fn}(x={'[' * 120}1{']' * 120})]",
        f"[{fn}(x=...)]",
        f"[{fn}(x={{1, 2}})]",
        f"[{fn}(x=f'{{y}}')]",
        f"[{fn}(x=b'raw')]",
        f"[{fn}(**{{'x': 1}})]",
        f"[{fn}(x=__import__('os').getcwd())]",  # a nested call: bfcl keeps its text, nothing runs
        f"[{fn}(x=y.z)]",
        f"[{fn}(x=[1][0])]",
        f"[{fn}(x=not True)]",
        f"[{fn}(x=-'s')]",
        f"[{fn}(x={{1: 2}})]",
        f"[{fn}(x=1, x=2)]",
        f"[{fn}(x=1) for _ in y]",
        f"[{fn}(x=1)][0]",
        f"[{fn}(x=1), 'text']",
        f"[{fn}(x=1 if y else 2)]",
        f"'[{fn}(x=1)]'",
        f"[{fn}(x=1), {fn}(x=",
    ]
    outs = rng.sample(prose, 2) + rng.sample(hostile, 5)
    if not possible:  # irrelevance: calls of the entry's tools with made-up arguments
        props = list((functions[0].get("parameters") or {}).get("properties") or {})
        args = {p: rng.choice([1, "x", [1, 2], True]) for p in props[:2]}
        outs += [
            _text([(fn, args)], rng),
            _text([(fn, {})], rng, style="bare"),
            f"[{fn}(1, 2)]",
            f"[{fn}(unit=celsius)]",
            _text([(fn, args)], rng, tuples=True),
            # expression arguments: bfcl-eval evals them and sees a call
            f"[{fn}(x=1+2)]",
            f"[{fn}(x=[2 * 3.5, -(4 - 1)])]",
            f"[{fn}(x=g(1 + 2))]",
            f"[{fn}(x={{'k': 10 // 3}})]",
            f"[{fn}(x='a' + 'b')]",
            f"[{fn}(x=-(1 + 2))]",
            f"[{fn}(1 + 2)]",
        ]
        return outs
    gold = _gold_calls(possible, rng)
    outs += [_text(gold, rng), _text(gold, rng, style=rng.choice(["bare", "fence"])), _text(list(reversed(gold)), rng)]
    outs.append(_text(gold, rng, tuples=True))  # tuple for a list: bfcl-eval's checker refuses it
    name, args = gold[0]
    if args:
        k = rng.choice(sorted(args))
        outs.append(_text([(name, {**args, k: _mutate_value(args[k], rng)})] + gold[1:], rng))
        outs.append(_text([(name, {kk: v for kk, v in args.items() if kk != k})] + gold[1:], rng))
        v = args[k]
        if isinstance(v, (int, float)) and not isinstance(v, bool):  # +n reads as -n in bfcl-eval
            outs.append(_text([(name, args)] + gold[1:], rng).replace(f"{k}={v!r}", f"{k}=+{v!r}", 1))
        if isinstance(v, int) and not isinstance(v, bool):  # constant arithmetic: bfcl-eval evals it
            written = _text([(name, args)] + gold[1:], rng)
            for expr in (f"({v} - 1) + 1", f"{v} * 2 // 2", f"-(-{v})", f"2 * {v} - {v}"):
                outs.append(written.replace(f"{k}={v!r}", f"{k}={expr}", 1))
            outs.append(written.replace(f"{k}={v!r}", f"{k}={v} + 1", 1))  # arithmetic to a wrong value
            outs.append(written.replace(f"{k}={v!r}", f"{k}=-({v} + 0)", 1))  # unary on a binop: bfcl fails
        if isinstance(v, float):
            written = _text([(name, args)] + gold[1:], rng)
            outs.append(written.replace(f"{k}={v!r}", f"{k}={v} * 1", 1))
            outs.append(written.replace(f"{k}={v!r}", f"{k}={v} / 2 * 2", 1))
        if isinstance(v, str) and len(v) > 1:  # string arithmetic: bfcl evals it, here a documented failure
            outs.append(_text([(name, args)] + gold[1:], rng).replace(repr(v), f"{v[:1]!r} + {v[1:]!r}", 1))
        if isinstance(v, str) and v.isidentifier():  # a bare name is its string in bfcl-eval
            outs.append(
                f"[{name}(" + ", ".join(f"{kk}={vv if kk == k else _lit(vv, rng)}" for kk, vv in args.items()) + ")]"
            )
        pos = ", ".join(_lit(args[kk], rng) for kk in sorted(args)[:1])
        outs.append(f"[{name}({pos})]")  # positional: bfcl-eval drops it
    outs.append(_text([(name, {**args, "unexpected": 1})] + gold[1:], rng))
    outs.append(_text([(name + "_x", args)] + gold[1:], rng))
    outs.append(_text(gold + gold[:1], rng))
    outs.append(_text(gold, rng)[:-4])  # cut off by max_new_tokens
    return outs


def _reference_safe(text: str) -> bool:
    """Whether bfcl-eval's decoder may see ``text``: every binary operation in it is bounded numeric arithmetic
    or the sum of two short string literals, so the reference's ``eval`` of it is harmless."""
    try:
        tree = ast.parse(bf._bfcl_source(text), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return True
    for n in ast.walk(tree):
        if isinstance(n, ast.Lambda):
            return False
        if isinstance(n, ast.BinOp):
            try:
                fold_arithmetic(n)
            except ArithmeticRefused:
                strings = isinstance(n.op, ast.Add) and all(
                    isinstance(x, ast.Constant) and isinstance(x.value, str) and len(x.value) < 200
                    for x in (n.left, n.right)
                )
                if not strings:
                    return False
    return True


def documented_difference(text: str, category: str) -> str | None:
    """The differences-table item that allows this output's verdict to differ, or None (must agree)."""
    if "irrelevance" in category:
        return None  # an unevaluated expression in a call list counts as a call, as in bfcl-eval
    decoded, why = bf.bfcl_decode(text)
    if decoded is None and why and "not bounded numeric arithmetic" in why:
        return "1: a binary operation that is not bounded numeric arithmetic"
    return None


# ------------------------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def cases():
    rng = random.Random(SEED)
    examples = {ex.meta["bfcl_id"]: ex for ex in load_bfcl(list(CATEGORIES))}
    out = []
    for cat in CATEGORIES:
        entries, answers = _raw(cat)
        for eid in rng.sample(sorted(entries), ENTRIES_PER_CATEGORY):
            functions, possible = entries[eid]["function"], answers.get(eid)
            for text in generated_outputs(functions, possible, rng):
                out.append((cat, eid, examples[eid], functions, possible, text))
    return out


def test_verdicts_equal_bfcl_eval_on_generated_outputs(cases):
    assert len(cases) >= 300
    mismatches, compared, valid, arithmetic, documented = [], 0, 0, 0, []
    for cat, eid, ex, functions, possible, text in cases:
        s = bf.score_single_turn(ex, text)
        got = (bool(s.valid), s.error_type if not s.valid else "")
        if not _reference_safe(text):
            continue  # hostile expressions: checked without the reference (tests below)
        want = reference_verdict(functions, text, possible, cat)
        compared += 1
        valid += want[0]
        arithmetic += "+" in text or "*" in text or "//" in text
        if got != want:
            why = documented_difference(text, cat)
            if why is None:
                mismatches.append((eid, text[:120], got, want))
            else:
                documented.append(why)
    assert not mismatches, f"{len(mismatches)} of {compared} differ, e.g. {mismatches[:5]}"
    # the set is not degenerate: both verdicts occur, arithmetic is exercised, few differences are documented ones
    assert 0.15 * compared < valid < 0.85 * compared
    assert arithmetic >= 40, arithmetic
    assert len(documented) < 0.05 * compared, documented


def test_tuple_for_an_array_parameter_is_wrong_as_on_the_leaderboard(cases):
    hits = 0
    for cat, eid, ex, functions, _possible, text in cases:
        if cat == "irrelevance":
            continue
        s = bf.score_single_turn(ex, text)
        for c in s.calls or []:
            props = next((f["parameters"].get("properties", {}) for f in functions if f["name"] == c.name), {})
            if any(isinstance(v, tuple) and props.get(k, {}).get("type") == "array" for k, v in c.arguments.items()):
                hits += 1
                assert not s.valid, (eid, text)
                if cat == "simple_python":
                    assert s.error_type == "type_error:simple", (eid, text)
    assert hits >= 4


@pytest.mark.parametrize(
    ("value", "decodes_to"),
    [("(1000 - 1) + 1", 1000), ("1 / 4", 0.25), ("(-2) ** 3", -8), ("7 // 2 * 3 % 5", 4), ("2 ** -1", 0.5)],
)
def test_constant_arithmetic_folds_to_the_value_bfcl_eval_computes(value, decodes_to):
    decoded, err = bf.bfcl_decode(f"[f(x={value})]")
    assert err is None and decoded == [{"f": {"x": decodes_to}}]
    assert decoded == _bfcl()[0](f"[f(x={value})]")  # bfcl-eval's own decoder (it evals: safe literals here)


@pytest.mark.parametrize("value", ["2**10**9", "'a' * 10**9", "2 ** 257", "1 << 3", "x + 1", "1e309 - 1e309"])
@pytest.mark.parametrize("cat", ["simple_python", "irrelevance"])
def test_documented_difference_unbounded_or_non_numeric_expressions(value, cat):
    ex = next(e for e in load_bfcl([cat]))
    text = f"[{ex.tools[0]['name']}(x={value})]"
    s = bf.score_single_turn(ex, text)
    if cat == "irrelevance":
        assert not s.valid  # a call list with an expression is a call: never counted as abstention
    else:
        assert not s.valid and s.error_type == "ast_decoder:decoder_failed"
    assert bf.answer_kind(text) == "call"


def test_a_lambda_where_bfcl_reads_it_fails_as_in_bfcl_eval():
    text = "[f(x=lambda: 1)]"
    assert bf.bfcl_decode(text)[0] is None
    with pytest.raises((TypeError, AttributeError)):  # bfcl's own decoder fails before its eval
        _bfcl()[0](text)
    assert bf.answer_kind(text) == "broken_call"
    assert bf.bfcl_decode("[f(x=g(lambda: 1))]")[0] == [{"f": {"x": "g(lambda: 1)"}}]  # only its text is read


@pytest.mark.parametrize(
    "wrap",
    [
        "[f(a={})]",
        "f(a={})",
        "  f(a={})  ",
        "'[f(a={})]'",
        "```python\n[f(a={})]\n```",
        "`f(a={})`",
        "[f(a=[{}])]",
        "[f(a={{'k': {}}})]",
        "[f(a=({},))]",
        "[f(a=g(b={}))]",
        "[f(a=x[{}])]",
        "[f(a=-({}))]",
        "[f(a=1), g(b={})]",
    ],
)
def test_guard_keeps_every_binary_operation_from_bfcl_eval(tmp_path, wrap):
    marker = tmp_path / "ran"
    text = wrap.format(f"__import__('pathlib').Path({str(marker)!r}).touch() + 1")
    decoded, err = bf.bfcl_decode(text)
    # where the wrapped text parses at all, it is the guard that stops it (else a syntax error, in bfcl too)
    assert decoded is None and ("binary operation" in err or err.startswith("SyntaxError")), err
    ex = next(e for e in load_bfcl(["irrelevance"]))
    bf.score_single_turn(ex, text), bf.answer_kind(text)
    assert not marker.exists()
