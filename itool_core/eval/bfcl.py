"""BFCL v3 single-turn scoring with bfcl-eval's own AST checker, and the leaderboard's summary formula.

What is BFCL's and what is ours:

* **Checker: BFCL's.**  AST categories (simple_python, multiple, parallel, parallel_multiple and their live_*
  versions) are scored by ``bfcl_eval.eval_checker.ast_eval.ast_checker.ast_checker`` with the entry's
  function docs, the possible answers exactly as in bfcl's file, ``Language.PYTHON`` and the category name
  (which picks its simple / multiple / parallel-no-order checker), as ``eval_runner._evaluate_single_ast_entry``
  does, including its two decoder error types (``ast_decoder:decoder_failed`` and
  ``ast_decoder:decoder_wrong_output_format``).
* **Decoder: BFCL's, with arithmetic folded instead of ``eval``ed.**  For scoring, model text is decoded by
  bfcl-eval's own ``default_decode_ast_prompting`` (:func:`bfcl_decode`), so values are exactly what the
  leaderboard sees: a tuple stays a tuple (the checker rejects it for an ``array`` parameter), a bare name is
  its string, ``+5`` reads as ``-5``, positional arguments are dropped, a keyword-less nested call is its text.
  bfcl's decoder ``eval``s the source text of every binary operation it reads in an argument; here the text is
  parsed with :mod:`ast` first and each such operation that is constant numeric arithmetic is replaced by its
  value, computed by :func:`itool_core.calls.fold_arithmetic` (``budget=(1000 - 1) + 1`` → ``1000``, as bfcl
  scores it), before bfcl's decoder sees the text — model text is never executed.  The project's strict parser
  (:func:`itool_core.calls.parse_calls`) still decodes ``SampleScore.calls`` — what the samples table records
  and the tree search / training use.

**Every intentional difference from bfcl-eval's pipeline** — the one list (``tests/test_bfcl_parity.py``
checks on a few hundred generated outputs over simple / multiple / parallel / parallel_multiple /
irrelevance, constant arithmetic among them, that there are no others):

1. *A binary operation that is not bounded numeric arithmetic* — over strings (``'a' + 'b'``), names, calls,
   with another operator (``<<``, ``&``), an int past 256 bits, a NaN or complex result, deeper than 32 levels
   or more than 64 operations (``2**10**9``): bfcl-eval ``eval``s its text (arbitrary code); here it is not
   evaluated.  On AST categories the output is a decode failure (``ast_decoder:decoder_failed``; bfcl would
   check the computed value).  On relevance categories it still counts as a **call** wherever the text is a
   call list (the expression read as a placeholder): bfcl-eval agrees whenever its ``eval`` succeeds, and
   differs (it sees "no call") only where its ``eval`` raises (``x=y+1``, an unknown name).  Such an
   operation where bfcl would not evaluate it (a positional argument, inside a keyword-less nested call or a
   subscript) also makes the output a decode failure here: never handing it on keeps the guard independent of
   bfcl's decoder internals.
2. *Text over 200 000 characters*: bfcl-eval decodes it; here it does not decode (bounded cost per output).
3. *The checker raises* (``repr`` of an int past Python's int-to-str digit limit in its error message,
   ``float()`` of an int past the float range): bfcl-eval's runner aborts the whole evaluation; here that
   output is wrong (``checker:exception``) and the run goes on.
4. *Multi-turn* (:mod:`.bfcl_multi_turn`): outputs are decoded by the project's strict parser and only
   canonical literal call text reaches the executor's ``eval``, so an output bfcl-eval decodes leniently
   (positional arguments dropped, a bare name read as its string, a nested call kept as its text) ends the
   turn as "no call" here instead of being executed.

A lambda where bfcl reads an argument fails its decoder before its ``eval`` (``value.body[0]``): a decode
failure here too, no difference.

* **Relevance: BFCL's rule** (``_evaluate_single_relevance_entry``): text that does not decode, or decodes to
  no call, is "no call".  irrelevance / live_irrelevance are correct iff there is no call; live_relevance iff
  there is at least one.  That rule also counts a malformed call list, or one cut off by ``max_new_tokens``,
  as "no call": :func:`answer_kind` tells such ``broken_call`` answers from real abstentions, and the
  evaluation summary counts the kinds per category (``answer_kinds``) so that an irrelevance score made of
  broken call lists is not read as abstention.
* **Summary: the BFCL v3 formula** (:func:`summarise`): Non-live = unweighted mean of simple (simple_python),
  multiple, parallel, parallel_multiple, irrelevance; Live = count-weighted mean of live_simple,
  live_multiple, live_parallel, live_parallel_multiple, live_irrelevance, live_relevance; Multi-turn = mean
  of its four categories; Overall = mean of the groups that were evaluated (the summary says which);
  Relevance = live_relevance; Irrelevance = count-weighted mean of irrelevance and live_irrelevance.

The checker itself is reached through :mod:`itool_core.bfcl_checker` (re-exported here), which makes it
importable without bfcl-eval's vendor SDKs; the data build checks its training targets with the same one.
"""

from __future__ import annotations

import ast
import hashlib
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..bfcl_checker import CHECKER_MODEL_NAME, ast_checker, install_model_config_stub
from ..calls import (
    MAX_TEXT_CHARS,
    ArithmeticRefused,
    PromptStyle,
    ToolCall,
    fold_arithmetic,
    normalise_answer_text,
    render_prompt,
    try_parse_calls,
)
from ..data.bfcl import AST_CATEGORIES, MULTI_TURN_CATEGORIES, RELEVANCE_CATEGORIES, V3_CATEGORIES
from ..data.records import Example

__all__ = [
    "AST_CATEGORIES",
    "RELEVANCE_CATEGORIES",
    "MULTI_TURN_CATEGORIES",
    "V3_CATEGORIES",
    "NON_LIVE",
    "LIVE",
    "SampleScore",
    "CHECKER_MODEL_NAME",
    "install_model_config_stub",
    "ast_checker",
    "decode",
    "bfcl_decode",
    "ANSWER_KINDS",
    "answer_kind",
    "score_ast",
    "score_relevance",
    "score_single_turn",
    "stable_subset",
    "summarise",
    "single_turn_prompts",
]

NON_LIVE = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")
LIVE = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple", "live_irrelevance", "live_relevance")


@dataclass
class SampleScore:
    """The verdict on one model output."""

    valid: bool
    calls: list[ToolCall] | None = None  # what our parser decoded (None: did not decode)
    error: str = ""
    error_type: str = ""
    details: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ decoding


def decode(text: str) -> tuple[list[ToolCall] | None, str | None]:
    """Our parser, BFCL's normalisation (strip backticks/whitespace, bracket a bare call)."""
    return try_parse_calls(text if isinstance(text, str) else "")


def _bfcl_source(text: str) -> str:
    # Exactly the string bfcl-eval's ast_parse hands to ast.parse (default_decode_ast_prompting's bracketing,
    # then ast_parse's quote strip), so the guard below inspects the very tree bfcl's decoder walks.
    return normalise_answer_text(text).strip().strip("'")


def _bfcl_decoder():
    install_model_config_stub()
    from bfcl_eval.model_handler.utils import default_decode_ast_prompting
    from bfcl_eval.utils import is_empty_output, is_function_calling_format_output

    return default_decode_ast_prompting, is_function_calling_format_output, is_empty_output


class _Unevaluated(Exception):
    """A binary operation that bfcl-eval's decoder would ``eval`` and this module does not."""


class _LambdaArgument(Exception):
    """A lambda where bfcl-eval's decoder reads it: it fails there (``value.body[0]`` of a lambda) before its
    ``eval``, so this is a decode failure in both."""


def _fold_reached(value: ast.expr) -> ast.expr:
    """``value`` with every binary operation that bfcl-eval's ``resolve_ast_by_type`` would ``eval`` replaced by
    its folded constant.  The walk follows that function's recursion exactly: list / tuple elements, dict keys
    and values, the keyword values of a call that has keywords; a unary operation, a keyword-less call and a
    subscript are not entered (bfcl reads ``operand.value`` / unparses them), so a binary operation there keeps
    its text, as it does in bfcl-eval."""
    if isinstance(value, ast.Lambda):
        raise _LambdaArgument("a lambda argument")
    if isinstance(value, ast.BinOp):
        try:
            return ast.copy_location(ast.Constant(fold_arithmetic(value)), value)
        except ArithmeticRefused as e:
            raise _Unevaluated(f"a binary operation that is not bounded numeric arithmetic ({e})") from None
    if isinstance(value, (ast.List, ast.Tuple)):
        value.elts = [_fold_reached(v) for v in value.elts]
    elif isinstance(value, ast.Dict):
        value.keys = [None if k is None else _fold_reached(k) for k in value.keys]
        value.values = [_fold_reached(v) for v in value.values]
    elif isinstance(value, ast.Call) and value.keywords:
        _fold_call(value)
    return value


def _fold_call(call: ast.Call) -> None:
    for kw in call.keywords:  # positional arguments: bfcl-eval drops them unread
        kw.value = _fold_reached(kw.value)


def _folded_source(tree: ast.Expression) -> str:
    """The source with bfcl-eval's evaluated expressions folded (``ast_parse``: a bare call, or the elements of
    the list that are calls).  :class:`_Unevaluated` where an expression is not bounded numeric arithmetic,
    also where bfcl would not reach it (positional arguments, nested keyword-less calls: the table's item 1)."""
    body = tree.body
    for call in [body] if isinstance(body, ast.Call) else getattr(body, "elts", []):
        if isinstance(call, ast.Call):
            _fold_call(call)
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp):  # left over where bfcl would not eval it: still never handed on
            try:
                fold_arithmetic(node)
            except ArithmeticRefused as e:
                raise _Unevaluated(f"a binary operation that is not bounded numeric arithmetic ({e})") from None
    return ast.unparse(tree)


def _parse_bfcl_source(text: str) -> ast.Expression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        return ast.parse(_bfcl_source(text), mode="eval")


def _run_bfcl_decoder(text: str) -> tuple[list | None, str | None]:
    decoder, _, _ = _bfcl_decoder()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            return decoder(text), None
    except Exception as e:  # bfcl's decoder failing on odd text is a decode failure, as in its runner
        return None, f"{type(e).__name__}: {e}"


def bfcl_decode(text: str) -> tuple[list | None, str | None]:
    """``(decoded, None)`` from bfcl-eval's ``default_decode_ast_prompting`` (``[{name: {arg: value}}]``), or
    ``(None, why)`` where it fails.  Constant arithmetic in an argument is folded first (:func:`_folded_source`),
    so bfcl's decoder sees the values its own ``eval`` would have produced and never runs model text; an
    expression that is not bounded numeric arithmetic is a decode failure (see the differences table)."""
    decoded, why, _ = _decode_guarded(text)
    return decoded, why


def _decode_guarded(text: str) -> tuple[list | None, str | None, bool]:
    """:func:`bfcl_decode` plus whether it failed only because an expression was not evaluated."""
    text = text if isinstance(text, str) else ""
    if len(text) > MAX_TEXT_CHARS:
        return None, f"text longer than {MAX_TEXT_CHARS} characters", False
    try:
        tree = _parse_bfcl_source(text)
        has_expr = any(isinstance(n, (ast.BinOp, ast.Lambda)) for n in ast.walk(tree))
        source = _folded_source(tree) if has_expr else text
    except _Unevaluated as e:
        return None, f"{e} (bfcl-eval would eval it)", True
    except _LambdaArgument as e:
        return None, f"{e} (bfcl-eval's decoder fails on it too)", False
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        return None, f"{type(e).__name__}: {getattr(e, 'msg', None) or e}", False
    decoded, why = _run_bfcl_decoder(source)
    return decoded, why, False


def _structure_decodes_to_calls(text: str) -> bool:
    """Whether the output decodes to a non-empty call list once every unevaluated binary operation is read as
    a placeholder value: bfcl-eval ``eval``s those, so such an output is a call there (unless its ``eval``
    raises) — counted as a call here too, so that an expression never passes for abstention."""

    class _Placeholder(ast.NodeTransformer):
        def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
            return ast.copy_location(ast.Constant(None), node)

    try:
        tree = _Placeholder().visit(_parse_bfcl_source(text))
        decoded, _ = _run_bfcl_decoder(_folded_source(tree))
    except (SyntaxError, ValueError, RecursionError, MemoryError, _LambdaArgument):
        return False
    return decoded is not None and not _bfcl_decoder()[2](decoded)


def _decode_for_relevance(text: str) -> tuple[bool, list | None, str | None]:
    """``(has a call, decoded, why not decoded)``: bfcl-eval's relevance test is "decodes, and not to an empty
    output" (``is_empty_output``); an output that is a call list with an unevaluated expression is a call."""
    decoded, err, unevaluated = _decode_guarded(text)
    if unevaluated:
        return _structure_decodes_to_calls(text), decoded, err
    return decoded is not None and not _bfcl_decoder()[2](decoded), decoded, err


ANSWER_KINDS = ("call", "no_call", "broken_call")
# A call list's opening: "[" or a (dotted) name followed by "(", after an optional opening code fence.
_CALL_START = re.compile(r"^(?:```(?:python|tool_code)?\s*)?(?:\[|[A-Za-z_][\w.]*\s*\()")


def answer_kind(text: str) -> str:
    """What an answer does, whatever was asked: ``call`` (decodes to ≥ 1 call), ``no_call`` (decodes to ``[]``
    or is prose, e.g. :data:`~itool_core.calls.NO_CALL_TEXT`) or ``broken_call`` (opens like a call list but
    does not decode: positional arguments, stray elements, cut by ``max_new_tokens``).  BFCL scores a broken
    call as no call."""
    called, decoded, _ = _decode_for_relevance(text)
    if called:
        return "call"
    if decoded is None and _CALL_START.match((text or "").strip() if isinstance(text, str) else ""):
        return "broken_call"
    return "no_call"


def _category(ex: Example) -> str:
    return ex.meta.get("bfcl_category") or ex.category


def score_ast(ex: Example, text: str) -> SampleScore:
    """One AST-category output, scored as ``eval_runner._evaluate_single_ast_entry`` does (bfcl's decoder,
    format check and checker), with the guard of :func:`bfcl_decode`."""
    calls, _ = decode(text)
    model_output, err = bfcl_decode(text)
    if model_output is None:
        return SampleScore(False, calls, f"Invalid syntax. Failed to decode AST. {err}", "ast_decoder:decoder_failed")
    if not _bfcl_decoder()[1](model_output):
        return SampleScore(
            False, calls, "Did not output in the specified format.", "ast_decoder:decoder_wrong_output_format"
        )
    checker, Language = ast_checker()
    try:
        res = checker(
            ex.tools, model_output, ex.meta["ground_truth"], Language.PYTHON, _category(ex), CHECKER_MODEL_NAME
        )
    except Exception as e:  # a checker crash on odd output is that output's failure, not the run's
        return SampleScore(False, calls, f"checker raised {type(e).__name__}: {e}", "checker:exception")
    if res.get("valid"):
        return SampleScore(True, calls)
    error = res.get("error", "")
    return SampleScore(False, calls, error if isinstance(error, str) else repr(error), res.get("error_type", ""))


def score_relevance(ex: Example, text: str) -> SampleScore:
    """irrelevance / live_irrelevance: correct iff no call; live_relevance: correct iff at least one call
    (bfcl's decoder and ``is_empty_output``, as ``eval_runner._evaluate_single_relevance_entry``)."""
    calls, _ = decode(text)
    called, decoded, err = _decode_for_relevance(text)
    if "irrelevance" in _category(ex):
        if not called:
            return SampleScore(True, calls)
        return SampleScore(
            False,
            calls,
            "Valid syntax. Successfully decode AST when it should not.",
            "irrelevance_error:decoder_success",
        )
    if called:
        return SampleScore(True, calls)
    why = err if decoded is None else "decoded to an empty call list"
    return SampleScore(
        False,
        calls,
        f"Invalid syntax. Failed to decode AST when it should have. {why}",
        "relevance_error:decoder_failed",
    )


def score_single_turn(ex: Example, text: str) -> SampleScore:
    cat = _category(ex)
    if cat in RELEVANCE_CATEGORIES or ex.meta.get("relevance"):
        return score_relevance(ex, text)
    if cat in AST_CATEGORIES:
        return score_ast(ex, text)
    raise ValueError(f"{ex.id}: category {cat!r} is not a single-turn BFCL category")


def single_turn_prompts(tokenizer, examples: Sequence[Example], style: PromptStyle = PromptStyle()) -> list[str]:
    return [render_prompt(tokenizer, ex.tools, ex.messages, style) for ex in examples]


# -------------------------------------------------------------------------------------------------- subsets


def _stable_key(seed: int, ex_id: str) -> str:
    return hashlib.sha256(f"{seed}:{ex_id}".encode()).hexdigest()


def stable_subset(examples: Iterable[Example], limit: int | None, seed: int = 0) -> list[Example]:
    """At most ``limit`` examples per category: the ones with the smallest sha256(seed:id).

    The subset of a category does not depend on the other categories or on file order, and growing ``limit``
    only adds examples.  Output order is category order of first appearance, then key order.
    """
    by_cat: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_cat[ex.category].append(ex)
    out: list[Example] = []
    for exs in by_cat.values():
        exs = sorted(exs, key=lambda e: _stable_key(seed, e.id))
        out.extend(exs if limit is None else exs[: max(0, int(limit))])
    return out


# -------------------------------------------------------------------------------------------------- summary


def _acc(cat_stats: Mapping[str, Mapping[str, float]], cat: str) -> tuple[float, int] | None:
    s = cat_stats.get(cat)
    if not s or not s.get("total"):
        return None
    return s["correct"] / s["total"], int(s["total"])


def summarise(cat_stats: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """BFCL v3 group scores from ``{category: {"correct": c, "total": n}}`` (accuracies in [0, 1]).

    A group is computed over its evaluated categories only; ``groups_evaluated`` and ``missing`` say which
    were there, so a partial run is never mistaken for a full one.
    """
    out: dict[str, Any] = {"categories": {}}
    for cat in V3_CATEGORIES:
        a = _acc(cat_stats, cat)
        if a is not None:
            out["categories"][cat] = {"accuracy": a[0], "total": a[1], "correct": int(cat_stats[cat]["correct"])}
    groups: dict[str, float] = {}
    missing: dict[str, list[str]] = {}

    nl = [(cat, _acc(cat_stats, cat)) for cat in NON_LIVE]
    got = [a for _, a in nl if a is not None]
    if got:
        groups["non_live"] = sum(a for a, _ in got) / len(got)
        missing["non_live"] = [c for c, a in nl if a is None]

    lv = [(cat, _acc(cat_stats, cat)) for cat in LIVE]
    got = [a for _, a in lv if a is not None]
    if got:
        groups["live"] = sum(a * n for a, n in got) / sum(n for _, n in got)
        missing["live"] = [c for c, a in lv if a is None]

    mt = [(cat, _acc(cat_stats, cat)) for cat in MULTI_TURN_CATEGORIES]
    got = [a for _, a in mt if a is not None]
    if got:
        groups["multi_turn"] = sum(a for a, _ in got) / len(got)
        missing["multi_turn"] = [c for c, a in mt if a is None]

    if groups:
        out["overall"] = sum(groups.values()) / len(groups)
    out.update(groups)
    rel = _acc(cat_stats, "live_relevance")
    if rel is not None:
        out["relevance"] = rel[0]
    irr = [a for a in (_acc(cat_stats, "irrelevance"), _acc(cat_stats, "live_irrelevance")) if a is not None]
    if irr:
        out["irrelevance"] = sum(a * n for a, n in irr) / sum(n for _, n in irr)
    out["groups_evaluated"] = list(groups)
    out["missing"] = {k: v for k, v in missing.items() if v}
    out["complete"] = bool(groups) and len(groups) == 3 and not out["missing"]
    return out
