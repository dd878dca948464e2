"""Tools → prompt text, model text → calls, and call comparison.

This is the single place where the pipeline turns a tool list and a conversation into the model's prompt and
where model text becomes structured calls.  Training (warm-up SFT, DPO pairs), tree search and evaluation all
go through it, so the format the policy is taught is exactly the format the benchmarks decode (the method's
reward O(s) and the BFCL score both rely on this one parser).

Prompt: BFCL's prompt-mode default system prompt (``ret_fmt=python``, tools as JSON), reproduced verbatim so
that evaluation matches the leaderboard (a test checks it against ``bfcl_eval``'s own ``formulate_system_prompt``).
A ``compact`` tool rendering (no indentation, redundant keys dropped) exists to fit long tool sets into a small
model's context; it is used by training and evaluation alike through :class:`PromptStyle`.

Answer: a Python-style list of calls ``[f(a=1), pkg.g(b='x')]``.  It is parsed with :mod:`ast` only — never
``eval``/``exec`` — and every argument must be a literal (numbers, strings, booleans, None, lists, tuples,
dicts with string keys, nested; a unary minus/plus on a number).  Anything else is a :class:`ParseError` with a
message.  Values stay the Python values written: a tuple stays a tuple (bfcl-eval's checker rejects a tuple
for an ``array`` parameter, so the tree-search reward must see it too); only the JSON form stores it as a
list (:func:`lists_for_tuples` turns training targets into that form up front).  An integer too long for
Python's int-to-str digit limit (``sys.get_int_max_str_digits()``, 4300 digits) is refused like the decimal
literal of the same size, which ``ast`` already refuses: a hex literal would otherwise pass and make every later
rendering (JSON, call text, the API-Bank / reward comparisons) raise mid-run.

This parser is the project's; BFCL *scoring* uses bfcl-eval's own decoder where it is safe to run
(:mod:`itool_core.eval.bfcl` lists every difference between the two in one table).
"""

from __future__ import annotations

import ast
import json
import math
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ParseError",
    "ToolCall",
    "PromptStyle",
    "NO_CALL_TEXT",
    "parse_calls",
    "try_parse_calls",
    "literal_value",
    "fold_arithmetic",
    "ArithmeticRefused",
    "dotted_name",
    "normalise_answer_text",
    "decode_answer",
    "format_call",
    "serialise_calls",
    "format_value",
    "calls_match",
    "number_key",
    "lists_for_tuples",
    "tuples_to_lists",
    "calls_from_json",
    "calls_to_json",
    "render_tools",
    "system_prompt",
    "build_messages",
    "render_prompt",
    "render_target",
]

# Limits that keep a hostile or degenerate model output from costing more than a parse should.
MAX_TEXT_CHARS = 200_000
MAX_DEPTH = 64
#: Below this many bits every int converts to decimal text whatever the interpreter's digit limit.
_SAFE_INT_BITS = 4096

#: Bounds of :func:`fold_arithmetic`: int operands and results, the nesting of an expression, its operations.
ARITH_MAX_INT_BITS = 256
ARITH_MAX_DEPTH = 32
ARITH_MAX_OPS = 64

#: What the policy is trained to answer when no tool applies.  It must NOT decode as a call list, so that
#: BFCL's relevance rule (no decodable call = no call) counts it as abstention.
NO_CALL_TEXT = "None of the given functions can be used to answer this question."


class ParseError(ValueError):
    """Model text that is not a list of calls with literal keyword arguments."""


@dataclass(frozen=True)
class ToolCall:
    """One call: a (possibly dotted) function name and keyword arguments holding JSON-like literals."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    __hash__ = None  # type: ignore[assignment]  # arguments is a dict: calls compare, they do not hash

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ToolCall:
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            raise ValueError(f"a call must be an object with a string 'name', got {obj!r}")
        args = obj.get("arguments", {})
        if not isinstance(args, dict):
            raise ValueError(f"call {obj['name']!r}: 'arguments' must be an object, got {type(args).__name__}")
        return cls(obj["name"], dict(args))

    def to_bfcl(self) -> dict[str, dict[str, Any]]:
        """The ``{name: {arg: value}}`` form that bfcl-eval's checkers take."""
        return {self.name: dict(self.arguments)}

    def __str__(self) -> str:
        return format_call(self)


# --------------------------------------------------------------------------------------------------- parsing


def literal_value(node: ast.AST, where: str, depth: int = 0) -> Any:
    """The value of a literal expression node; :class:`ParseError` (naming ``where``) for anything else."""
    if depth > MAX_DEPTH:
        raise ParseError(f"{where}: value nested deeper than {MAX_DEPTH}")
    if isinstance(node, ast.Constant):
        v: Any = node.value
        if isinstance(v, int) and not isinstance(v, bool):
            return _checked_int(v, where)
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, float):
            if not math.isfinite(v):
                raise ParseError(f"{where}: non-finite float {v!r} is not allowed")
            return v
        raise ParseError(f"{where}: constant of type {type(v).__name__} is not allowed")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = node.operand
        if (
            isinstance(operand, ast.Constant)
            and isinstance(operand.value, (int, float))
            and not isinstance(operand.value, bool)
        ):
            v = literal_value(operand, where, depth + 1)
            return -v if isinstance(node.op, ast.USub) else v
        raise ParseError(f"{where}: unary {type(node.op).__name__} is only allowed on a number")
    if isinstance(node, ast.List):
        return [literal_value(e, f"{where}[{i}]", depth + 1) for i, e in enumerate(node.elts)]
    if isinstance(node, ast.Tuple):
        # kept a tuple: bfcl-eval's checker tells it from a list ("Incorrect type ... got tuple")
        return tuple(literal_value(e, f"{where}[{i}]", depth + 1) for i, e in enumerate(node.elts))
    if isinstance(node, ast.Dict):
        out: dict[str, Any] = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                raise ParseError(f"{where}: '**' unpacking is not allowed in a dict")
            key = literal_value(k, f"{where} key", depth + 1)
            if not isinstance(key, str):
                raise ParseError(f"{where}: dict keys must be strings, got {type(key).__name__}")
            if key in out:
                raise ParseError(f"{where}: duplicate dict key {key!r}")
            out[key] = literal_value(v, f"{where}[{key!r}]", depth + 1)
        return out
    kind = type(node).__name__
    try:
        shown = ast.unparse(node)
    except Exception:  # pragma: no cover - unparse of a valid tree should not fail
        shown = kind
    if len(shown) > 60:
        shown = shown[:57] + "..."
    raise ParseError(f"{where}: only literal values are allowed, got {kind} `{shown}`")


class ArithmeticRefused(ValueError):
    """An expression :func:`fold_arithmetic` does not compute: not numbers, another operator, or past a bound."""


_ARITH_OPS: dict[type, Any] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
    ast.Pow: lambda a, b: a**b,
}


def _arith_number(v: Any) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ArithmeticRefused(f"not a real number: {type(v).__name__}")
    if isinstance(v, int) and v.bit_length() > ARITH_MAX_INT_BITS:
        raise ArithmeticRefused(f"an integer of {v.bit_length()} bits (bound {ARITH_MAX_INT_BITS})")
    if isinstance(v, float) and math.isnan(v):
        raise ArithmeticRefused("a NaN")
    return v


def fold_arithmetic(node: ast.AST) -> int | float:
    """The value Python gives a constant arithmetic expression — numbers (int, float), ``+ - * / // % **`` and
    unary ``-`` / ``+`` — computed by walking the :mod:`ast` tree, never by ``eval``.

    Why: bfcl-eval's decoder ``eval``s the text of every binary operation it meets in an argument
    (``budget=(1000 - 1) + 1`` scores as ``1000``); folding it here gives the same value without running model
    text.  Every operand and result is bounded (ints of at most :data:`ARITH_MAX_INT_BITS` bits — checked
    *before* a product or power is computed —, :data:`ARITH_MAX_DEPTH` levels, :data:`ARITH_MAX_OPS`
    operations), so ``2**10**9`` costs nothing; anything else — strings, names, calls, another operator, a
    complex or NaN result, division by zero, an overflow — raises :class:`ArithmeticRefused`.
    """
    ops = [0]

    def walk(n: ast.AST, depth: int) -> int | float:
        if depth > ARITH_MAX_DEPTH:
            raise ArithmeticRefused(f"nested deeper than {ARITH_MAX_DEPTH}")
        if isinstance(n, ast.Constant):
            return _arith_number(n.value)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            v = walk(n.operand, depth + 1)
            return -v if isinstance(n.op, ast.USub) else +v
        if isinstance(n, ast.BinOp) and type(n.op) in _ARITH_OPS:
            ops[0] += 1
            if ops[0] > ARITH_MAX_OPS:
                raise ArithmeticRefused(f"more than {ARITH_MAX_OPS} operations")
            a, b = walk(n.left, depth + 1), walk(n.right, depth + 1)
            if isinstance(a, int) and isinstance(b, int):
                bits = a.bit_length()
                if isinstance(n.op, ast.Mult) and bits + b.bit_length() > ARITH_MAX_INT_BITS + 1:
                    raise ArithmeticRefused(f"a product past {ARITH_MAX_INT_BITS} bits")
                if isinstance(n.op, ast.Pow) and b > 0 and abs(a) > 1 and (bits - 1) * b > ARITH_MAX_INT_BITS:
                    raise ArithmeticRefused(f"a power past {ARITH_MAX_INT_BITS} bits")
            try:
                r = _ARITH_OPS[type(n.op)](a, b)
            except (ArithmeticError, ValueError) as e:  # ZeroDivisionError, OverflowError
                raise ArithmeticRefused(f"{type(e).__name__}: {e}") from None
            return _arith_number(r)  # a complex power, a NaN, an int past the bound: refused
        raise ArithmeticRefused(f"{type(n).__name__} is not constant arithmetic")

    return walk(node, 0)


def _checked_int(v: int, where: str) -> int:
    if v.bit_length() > _SAFE_INT_BITS:
        try:
            str(v)
        except ValueError:
            raise ParseError(
                f"{where}: integer of {v.bit_length()} bits exceeds Python's int-to-str limit of "
                f"{sys.get_int_max_str_digits()} digits"
            ) from None
    return v


def dotted_name(func: ast.AST) -> str:
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        raise ParseError(f"a function name must be a (dotted) identifier, got {type(func).__name__}")
    parts.append(func.id)
    return ".".join(reversed(parts))


def _call(node: ast.AST, index: int) -> ToolCall:
    if not isinstance(node, ast.Call):
        raise ParseError(f"item {index} of the call list is a {type(node).__name__}, not a function call")
    name = dotted_name(node.func)
    if node.args:
        raise ParseError(f"call {index} `{name}`: positional arguments are not allowed, use keyword form")
    args: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ParseError(f"call {index} `{name}`: '**' unpacking is not allowed")
        if kw.arg in args:
            raise ParseError(f"call {index} `{name}`: argument {kw.arg!r} given twice")
        args[kw.arg] = literal_value(kw.value, f"call {index} `{name}` argument {kw.arg!r}")
    return ToolCall(name, args)


def normalise_answer_text(text: str) -> str:
    # Same normalisation as bfcl-eval's default_decode_ast_prompting: strip backticks/newlines/spaces and
    # bracket a bare call, so the same outputs decode the same way here and on the leaderboard.
    s = text.strip("`\n ")
    if not s.startswith("["):
        s = "[" + s
    if not s.endswith("]"):
        s = s + "]"
    return s


def parse_calls(text: str) -> list[ToolCall]:
    """Parse model text into calls; raise :class:`ParseError` if it is not a call list.

    ``"[]"`` parses to an empty list.  Nothing in the text is ever executed.
    """
    if not isinstance(text, str):
        raise ParseError(f"expected text, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise ParseError(f"text longer than {MAX_TEXT_CHARS} characters")
    src = normalise_answer_text(text)
    try:
        with warnings.catch_warnings():
            # model text like "1st" makes the tokenizer warn; the text is data, not our code
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(src, mode="eval")
    except SyntaxError as e:
        raise ParseError(f"not a Python call list: {e.msg} (column {e.offset})") from None
    except (ValueError, RecursionError, MemoryError) as e:  # null bytes, absurd nesting
        raise ParseError(f"not a Python call list: {type(e).__name__}") from None
    body = tree.body
    if not isinstance(body, ast.List):
        raise ParseError(f"expected a list of calls, got {type(body).__name__}")
    try:
        return [_call(elt, i) for i, elt in enumerate(body.elts)]
    except RecursionError:
        raise ParseError("call list nested too deeply") from None


def try_parse_calls(text: str) -> tuple[list[ToolCall] | None, str | None]:
    """``(calls, None)`` or ``(None, error message)``."""
    try:
        return parse_calls(text), None
    except ParseError as e:
        return None, str(e)


def decode_answer(text: str) -> list[ToolCall]:
    """The calls an answer makes, BFCL-style: text that does not parse, or parses to ``[]``, is "no call"."""
    calls, _ = try_parse_calls(text)
    return calls or []


# ------------------------------------------------------------------------------------------------- serialising


def format_value(v: Any) -> str:
    """Canonical literal text of an argument value (round-trips through :func:`parse_calls`)."""
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, int):
        return repr(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot serialise non-finite float {v!r}")
        return repr(v)
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, tuple):
        return "(" + ", ".join(format_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, dict):
        for k in v:
            if not isinstance(k, str):
                raise ValueError(f"cannot serialise a dict key of type {type(k).__name__}")
        return "{" + ", ".join(f"{k!r}: {format_value(x)}" for k, x in v.items()) + "}"
    raise ValueError(f"cannot serialise a value of type {type(v).__name__}")


def format_call(call: ToolCall) -> str:
    args = ", ".join(f"{k}={format_value(v)}" for k, v in call.arguments.items())
    return f"{call.name}({args})"


def serialise_calls(calls: Sequence[ToolCall]) -> str:
    """``[f(a=1), g(b='x')]`` — the canonical answer text."""
    return "[" + ", ".join(format_call(c) for c in calls) + "]"


def render_target(calls: Sequence[ToolCall]) -> str:
    """What the assistant should say: the call list, or :data:`NO_CALL_TEXT` when no call is correct."""
    return serialise_calls(calls) if calls else NO_CALL_TEXT


def calls_to_json(calls: Sequence[ToolCall]) -> str:
    """The stored JSON form (a tuple is written as a list: JSON has none)."""
    return json.dumps([c.to_json() for c in calls], ensure_ascii=False)


def tuples_to_lists(v: Any) -> Any:
    """``v`` with every tuple (at any depth) made a list: the value's JSON form."""
    if isinstance(v, (list, tuple)):
        return [tuples_to_lists(x) for x in v]
    if isinstance(v, dict):
        return {k: tuples_to_lists(x) for k, x in v.items()}
    return v


def lists_for_tuples(calls: Sequence[ToolCall]) -> tuple[list[ToolCall], bool]:
    """``(calls with every tuple made a list, whether there was one)``: a training target's stored form, so a
    target compares and renders the same before and after its JSON round trip."""
    return [ToolCall(c.name, tuples_to_lists(c.arguments)) for c in calls], any(_has_tuple(c.arguments) for c in calls)


def calls_from_json(text: str | list) -> list[ToolCall]:
    data = json.loads(text) if isinstance(text, str) else text
    if not isinstance(data, list):
        raise ValueError(f"a target must be a JSON list of calls, got {type(data).__name__}")
    return [ToolCall.from_json(c) for c in data]


# ------------------------------------------------------------------------------------------------- comparison


def number_key(v: int | float) -> tuple:
    """A comparison key for a number: 1 and 1.0 share it; an int beyond every float (``float(v)`` raises
    ``OverflowError``) gets its own exact key instead of aborting the comparison."""
    try:
        return ("num", float(v))
    except OverflowError:
        assert isinstance(v, int)  # float(v) overflows only for an int
        return ("bigint", hex(v))  # hex never hits the int-to-str digit limit


def _has_tuple(v: Any) -> bool:
    if isinstance(v, tuple):
        return True
    if isinstance(v, list):
        return any(_has_tuple(x) for x in v)
    if isinstance(v, dict):
        return any(_has_tuple(x) for x in v.values())
    return False


def _norm(v: Any) -> Any:
    # Exact match up to int/float equality (1 == 1.0), as bfcl-eval's checker compares; a tuple is not a list
    # (its checker refuses a tuple for an array parameter).
    if isinstance(v, list):
        return ("list", tuple(_norm(x) for x in v))
    if isinstance(v, tuple):
        return ("tuple", tuple(_norm(x) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple(sorted((k, _norm(x)) for k, x in v.items())))
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return (type(v).__name__, v)
    if isinstance(v, (int, float)):
        return number_key(v)
    return ("other", repr(v))


def _call_key(c: ToolCall) -> tuple:
    return (c.name, _norm(c.arguments))


def calls_match(pred: Sequence[ToolCall], gold: Sequence[ToolCall], ordered: bool = False) -> bool:
    """Exact match of two call lists; order-insensitive unless ``ordered`` (BFCL parallel is unordered)."""
    if len(pred) != len(gold):
        return False
    pk = [_call_key(c) for c in pred]
    gk = [_call_key(c) for c in gold]
    if ordered:
        return pk == gk
    return sorted(pk, key=repr) == sorted(gk, key=repr)


# ------------------------------------------------------------------------------------------------ prompt text


@dataclass(frozen=True)
class PromptStyle:
    """How tools are shown to the model.

    ``tools="json"`` is BFCL's default (``json.dumps(tools, indent=4)``), bit-identical to the leaderboard
    prompt.  ``tools="compact"`` drops indentation and keys that carry no information for the model (empty
    ``required``, empty ``properties``, the top-level ``"type": "dict"``), typically halving the tool tokens; it
    keeps every name, type, description, enum and default.  Whatever the style, training and evaluation of
    one experiment use the same one.
    """

    tools: str = "json"

    def __post_init__(self) -> None:
        if self.tools not in ("json", "compact"):
            raise ValueError(f"unknown tool rendering {self.tools!r} (json|compact)")


_SYSTEM_TEMPLATE = (
    "You are an expert in composing functions."
    "You are given a question and a set of possible functions. Based on the question, you will need to make "
    "one or more function/tool calls to achieve the purpose. If none of the functions can be used, point it "
    "out. If the given question lacks the parameters required by the function, also point it out."
    "\n\n"
    "You should only return the function calls in your response.\n\nIf you decide to invoke any of the "
    "function(s), you MUST put it in the format of [func_name1(params_name1=params_value1, "
    "params_name2=params_value2...), func_name2(params)].  You SHOULD NOT include any other text in the response."
    "\n\n"
    "At each turn, you should try your best to complete the tasks requested by the user within the current "
    "turn. Continue to output functions to call until you have fulfilled the user's request to the best of "
    "your ability. Once you have no more functions to call, the system will consider the current turn complete "
    "and proceed to the next turn or task."
    "\n\n"
    "Here is a list of functions in json format that you can invoke.\n{functions}\n"
)


def _compact_schema(obj: Any, top: bool = False) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in ("required", "properties") and not v:
                continue
            if top and k == "type" and v in ("dict", "object"):
                continue
            out[k] = _compact_schema(v)
        return out
    if isinstance(obj, list):
        return [_compact_schema(x) for x in obj]
    return obj


def render_tools(tools: list[dict], style: PromptStyle = PromptStyle()) -> str:
    if style.tools == "json":
        return json.dumps(tools, indent=4)
    compact = []
    for t in tools:
        t2 = dict(t)
        if isinstance(t2.get("parameters"), dict):
            t2["parameters"] = _compact_schema(t2["parameters"], top=True)
        compact.append(t2)
    return json.dumps(compact, separators=(",", ":"), ensure_ascii=False)


def system_prompt(tools: list[dict], style: PromptStyle = PromptStyle()) -> str:
    return _SYSTEM_TEMPLATE.format(functions=render_tools(tools, style))


def build_messages(tools: list[dict], messages: Iterable[dict], style: PromptStyle = PromptStyle()) -> list[dict]:
    """Chat messages with the tool system prompt first (merged into an existing system message, as BFCL does).

    SmolLM2's chat template ignores ``tools=``, so the tool documentation always travels in the system text.
    """
    msgs = [dict(m) for m in messages]
    sp = system_prompt(tools, style)
    if msgs and msgs[0].get("role") == "system":
        msgs[0]["content"] = sp + "\n\n" + (msgs[0].get("content") or "")
    else:
        msgs.insert(0, {"role": "system", "content": sp})
    return msgs


def render_prompt(tokenizer, tools: list[dict], messages: Iterable[dict], style: PromptStyle = PromptStyle()) -> str:
    """The exact prompt string (chat template, generation prompt added) the policy sees."""
    return tokenizer.apply_chat_template(
        build_messages(tools, messages, style), tokenize=False, add_generation_prompt=True
    )
