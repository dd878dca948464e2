"""Ground-truth call targets brought to the canonical form the policy is taught and scored with.

The policy is taught and scored with one strict parser (:func:`itool_core.calls.parse_calls`: dotted
identifiers, keyword literals only).  Some sources' ground truths pass arguments positionally or as arithmetic
(``p=1/6``), and name tools that :mod:`.normalise` had to rename; this module repairs exactly those, once,
before an :class:`~itool_core.data.records.Example` is built:

* calls and call text are renamed like their tools (:func:`rename_calls`, :func:`rename_in_call_text`), so a
  target always names a tool of its own tool list;
* positional arguments are mapped to keywords by the tool's parameter order (an error when that is not
  possible), and arithmetic on number literals is folded to its value (:func:`parse_calls_lenient`);
* :func:`check_calls` says why calls do not fit their tools.

Nothing is ever executed: call text is read with :mod:`ast`.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Iterable, Sequence
from typing import Any

from ..calls import (
    MAX_TEXT_CHARS,
    ParseError,
    ToolCall,
    dotted_name,
    lists_for_tuples,
    literal_value,
    normalise_answer_text,
    parse_calls,
)

__all__ = [
    "rename_calls",
    "rename_in_call_text",
    "parse_calls_lenient",
    "keyword_arguments",
    "tool_names",
    "check_calls",
]


def rename_calls(calls: Sequence[ToolCall], renames: dict[str, str]) -> list[ToolCall]:
    return [ToolCall(renames.get(c.name, c.name), dict(c.arguments)) for c in calls]


def rename_in_call_text(text: str, renames: dict[str, str]) -> str:
    """Rewrite ``Market Trends API(`` → ``Market_Trends_API(`` in call text, longest names first.

    Only occurrences directly followed by ``(`` and not preceded by a name character are touched, so
    argument values that happen to contain a tool name are left alone (they are not followed by ``(``
    unless quoted text contains a call-like pattern, which a target never needs renamed anyway).
    """
    for old in sorted(renames, key=len, reverse=True):
        pattern = r"(?<![\w.])" + re.escape(old) + r"\s*\("

        def repl(_m: re.Match[str], new: str = renames[old]) -> str:
            return new + "("

        text = re.sub(pattern, repl, text)
    return text


_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}  # fmt: skip


class _FoldNumbers(ast.NodeTransformer):
    """Replace arithmetic on number literals (``1/6``, ``500*500``) by its value; record that it happened."""

    def __init__(self) -> None:
        self.folded: list[str] = []

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        op = _BINOPS.get(type(node.op))
        left, r = node.left, node.right
        if op is None or not (_is_number(left) and _is_number(r)):
            return node
        a, b = _number(left), _number(r)
        if isinstance(node.op, ast.Pow) and (abs(b) > 64 or abs(a) > 1e6):
            raise ParseError(f"refusing to fold a large power {ast.unparse(node)}")
        try:
            v = op(a, b)
        except (ZeroDivisionError, OverflowError, ValueError) as e:
            raise ParseError(f"cannot fold {ast.unparse(node)}: {e}") from None
        if isinstance(v, complex) or (isinstance(v, float) and not math.isfinite(v)):
            raise ParseError(f"cannot fold {ast.unparse(node)}: not a finite real number")
        self.folded.append(f"{ast.unparse(node)} = {v!r}")
        if v < 0:
            return ast.UnaryOp(op=ast.USub(), operand=ast.Constant(-v))
        return ast.Constant(v)


def _is_number(n: ast.AST) -> bool:
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
        n = n.operand
    return isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool)


def _number(n: ast.AST) -> int | float:
    if isinstance(n, ast.UnaryOp):
        v = n.operand.value  # type: ignore[attr-defined]
        return -v if isinstance(n.op, ast.USub) else v
    return n.value  # type: ignore[attr-defined]


def keyword_arguments(
    name: str, positional: Sequence[Any], keywords: dict[str, Any], tools: Sequence[dict] | None
) -> dict[str, Any]:
    """Map positional argument values to parameter names by the tool's parameter order."""
    if not positional:
        return dict(keywords)
    tool = next((t for t in tools or () if t.get("name") == name), None)
    if tool is None:
        raise ParseError(f"call `{name}`: positional arguments but no tool {name!r} to name them by")
    props = list(((tool.get("parameters") or {}).get("properties") or {}).keys())
    if len(positional) > len(props):
        raise ParseError(f"call `{name}`: {len(positional)} positional arguments, the tool has {len(props)} parameters")
    out: dict[str, Any] = {}
    for pname, v in zip(props, positional):
        if pname in keywords:
            raise ParseError(f"call `{name}`: parameter {pname!r} given positionally and by keyword")
        out[pname] = v
    out.update(keywords)
    return out


def parse_calls_lenient(text: str, tools: Sequence[dict] | None = None) -> tuple[list[ToolCall], list[str]]:
    """Parse ground-truth call text that :func:`parse_calls` refuses only for fixable reasons.

    Returns ``(calls, notes)``; ``notes`` lists what was repaired (empty when the strict parser accepted the
    text).  Repairs: positional arguments → keywords (needs ``tools``), arithmetic on number literals folded;
    tuples become lists (a target's JSON form).  Anything else (names, attribute access, comprehensions, ...)
    is still a :class:`ParseError`, and so is text over the strict parser's length limit.
    """
    calls, notes = _parse_lenient(text, tools)
    # a target's stored form: JSON has no tuple, so it would come back a list (and compare differently)
    calls, had_tuple = lists_for_tuples(calls)
    return calls, notes + (["tuple values stored as lists"] if had_tuple else [])


def _parse_lenient(text: str, tools: Sequence[dict] | None) -> tuple[list[ToolCall], list[str]]:
    try:
        return parse_calls(text), []
    except ParseError as strict_error:
        first_error = strict_error
    if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
        raise first_error  # the strict parser's own limits hold here too
    src = normalise_answer_text(text)
    try:
        tree = ast.parse(src, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise first_error from None
    if not isinstance(tree.body, ast.List):
        raise first_error
    folder = _FoldNumbers()
    try:
        tree = folder.visit(tree)
    except RecursionError:
        raise ParseError("call list nested too deeply") from None
    notes: list[str] = [f"folded {f}" for f in folder.folded]
    calls: list[ToolCall] = []
    for i, node in enumerate(tree.body.elts):
        if not isinstance(node, ast.Call):
            raise ParseError(f"item {i} of the call list is a {type(node).__name__}, not a function call")
        name = dotted_name(node.func)
        positional = [literal_value(a, f"call {i} `{name}` positional argument {j}") for j, a in enumerate(node.args)]
        kws: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ParseError(f"call {i} `{name}`: '**' unpacking is not allowed")
            if kw.arg in kws:
                raise ParseError(f"call {i} `{name}`: argument {kw.arg!r} given twice")
            kws[kw.arg] = literal_value(kw.value, f"call {i} `{name}` argument {kw.arg!r}")
        if positional:
            notes.append(f"call {i} `{name}`: {len(positional)} positional argument(s) named by parameter order")
        calls.append(ToolCall(name, keyword_arguments(name, positional, kws, tools)))
    return calls, notes


def tool_names(tools: Iterable[dict]) -> set[str | None]:  # None for a tool without a name
    return {t.get("name") for t in tools if isinstance(t, dict)}


def check_calls(calls: Sequence[ToolCall], tools: Sequence[dict]) -> str | None:
    """Why ``calls`` do not fit ``tools`` (unknown function or argument name), or ``None`` if they do."""
    by_name = {t.get("name"): t for t in tools}
    for c in calls:
        tool = by_name.get(c.name)
        if tool is None:
            return f"calls {c.name!r}, which is not one of the tools {sorted(n for n in by_name if n)}"
        props = (tool.get("parameters") or {}).get("properties") or {}
        unknown = [a for a in c.arguments if a not in props]
        if unknown:
            return f"call {c.name!r}: argument(s) {unknown} are not parameters of the tool ({list(props)})"
    return None
