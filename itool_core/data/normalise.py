"""Normalisation of foreign tool schemas and call targets into the canonical (BFCL-style) form.

Sources other than BFCL describe tools loosely: ToolACE names tools with spaces ("Market Trends API"), xLAM
gives a flat ``{param: {type, description, default}}`` dict with Python type names (``str, optional``,
``List[str]``), and some ground truths pass arguments positionally or as arithmetic (``p=1/6``).  The policy
is taught and scored with one parser (:func:`itool_core.calls.parse_calls`: dotted identifiers, keyword
literals only), so everything is brought to that form here, once, before an :class:`Example` is built:

* tool names become dotted Python identifiers (spaces and other characters → ``_``) and the same renaming
  is applied to the calls of the target, so a target always names a tool of its own tool list;
* type names become BFCL's vocabulary: ``string integer float boolean array tuple dict any``;
  ``optional`` / ``Optional[...]`` removes a parameter from ``required``;
* a flat parameter dict becomes ``{"type": "dict", "properties": ..., "required": [...]}`` (required = the
  parameters without a ``default`` that are not marked optional);
* positional arguments are mapped to keywords by the tool's parameter order (an error when that is not
  possible), and arithmetic on number literals is folded to its value.

It also holds the small reader shared by the ToolACE and xLAM loaders (JSON list, JSON Lines or hub id).

Nothing is ever executed: call text is read with :mod:`ast`.
"""

from __future__ import annotations

import ast
import copy
import json
import keyword
import math
import operator
import os
import re
from typing import Any, Iterable, Sequence

from ..calls import (MAX_TEXT_CHARS, ParseError, ToolCall, dotted_name, lists_for_tuples, literal_value,
                     normalise_answer_text, parse_calls)
from .records import BadRow, FieldError

__all__ = [
    "CANONICAL_TYPES",
    "SchemaError",
    "safe_tool_name",
    "normalise_type",
    "normalise_property",
    "flat_params_to_schema",
    "normalise_parameters",
    "normalise_tool",
    "normalise_tools",
    "rename_calls",
    "rename_in_call_text",
    "parse_calls_lenient",
    "keyword_arguments",
    "check_calls",
    "decode_row",
    "read_records",
]

#: BFCL's type vocabulary (what ``bfcl_eval``'s AST checker knows for Python).
CANONICAL_TYPES = ("string", "integer", "float", "boolean", "array", "tuple", "dict", "any")


class SchemaError(ValueError):
    """A tool schema that cannot be normalised (unknown type name, parameters not a dict, ...)."""


# ---------------------------------------------------------------------------------------------- tool names


def safe_tool_name(name: str) -> str:
    """A dotted Python identifier for ``name`` (what :func:`parse_calls` accepts as a function name).

    Spaces and any other character outside ``[A-Za-z0-9_.]`` become ``_``; a part starting with a digit gets
    a leading ``_`` and a part that is a Python keyword a trailing ``_`` (``a.class`` would not parse).
    A name that is already valid is returned unchanged.
    """
    if not isinstance(name, str) or not name.strip():
        raise SchemaError(f"a tool name must be a non-empty string, got {name!r}")
    if _valid_dotted(name):
        return name
    s = re.sub(r"[^A-Za-z0-9_.]", "_", name.strip())
    parts = []
    for part in s.split("."):
        if not part:
            part = "_"
        if part[0].isdigit():
            part = "_" + part
        if keyword.iskeyword(part):
            part += "_"
        parts.append(part)
    return ".".join(parts)


def _valid_dotted(name: str) -> bool:
    return all(p.isidentifier() and not keyword.iskeyword(p) for p in name.split("."))


# ----------------------------------------------------------------------------------------------- type names

_SCALARS = {
    "str": "string", "string": "string", "text": "string", "char": "string",
    "int": "integer", "integer": "integer", "long": "integer", "short": "integer",
    "float": "float", "double": "float", "number": "float", "decimal": "float",
    "bool": "boolean", "boolean": "boolean",
    "list": "array", "array": "array", "arraylist": "array", "set": "array", "sequence": "array",
    "iterable": "array",
    "tuple": "tuple",
    "dict": "dict", "dictionary": "dict", "object": "dict", "mapping": "dict", "hashmap": "dict", "map": "dict",
    "any": "any",
}  # fmt: skip
_NONE_NAMES = {"none", "nonetype", "null"}


def _split_top(s: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside brackets (for ``Dict[str, List[int]]``)."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [x.strip() for x in out]


def normalise_type(type_name: Any) -> tuple[dict[str, Any], bool]:
    """``(schema fragment, optional)`` for a (possibly Python-style) type name.

    ``"str, optional"`` → ``({"type": "string"}, True)``; ``"List[int]"`` → ``({"type": "array", "items":
    {"type": "integer"}}, False)``; ``"Optional[float]"`` → ``({"type": "float"}, True)``.  Unknown names
    raise :class:`SchemaError` (the row is reported, not guessed).
    """
    if not isinstance(type_name, str):
        raise SchemaError(f"type must be a string, got {type(type_name).__name__} {type_name!r}")
    t = type_name.strip()
    optional = False
    # "str, optional" / "int, default: 5" / "str optional" (xLAM and docstring styles)
    m = re.fullmatch(r"(.+?)\s*,?\s*\b(optional\b.*|default\b.*)", t, flags=re.IGNORECASE)
    if m and m.group(1).strip():
        t, optional = m.group(1).strip().rstrip(","), True
    m = re.fullmatch(r"([A-Za-z_][\w.]*)\s*[\[(](.*)[\])]", t)
    if m:
        base, inner = m.group(1).split(".")[-1].lower(), m.group(2)
        args = [a for a in _split_top(inner) if a]
        if base == "optional" and len(args) == 1:
            frag, _ = normalise_type(args[0])
            return frag, True
        if base == "union":
            non_none = [a for a in args if a.lower() not in _NONE_NAMES]
            optional = optional or len(non_none) < len(args)
            frags = [normalise_type(a)[0] for a in non_none]
            types = {f["type"] for f in frags}
            if len(frags) == 1:
                return frags[0], optional
            if types <= {"integer", "float"}:
                return {"type": "float"}, optional
            if types <= {"array", "tuple"}:
                return {"type": "array"}, optional
            return {"type": "any"}, optional
        kind = _SCALARS.get(base)
        if kind in ("array", "tuple"):
            if args and not (len(args) == 2 and args[1] == "..."):
                item_frags = [normalise_type(a)[0] for a in args]
                if kind == "array" or all(f == item_frags[0] for f in item_frags):
                    return {"type": kind, "items": item_frags[0]}, optional
                return {"type": kind}, optional
            if len(args) == 2 and args[1] == "...":
                return {"type": kind, "items": normalise_type(args[0])[0]}, optional
            return {"type": kind}, optional
        if kind == "dict":
            if args and len(args) != 2:
                raise SchemaError(f"dict type {type_name!r} needs a key and a value type")
            for a in args:  # validate the parts; JSON-schema dicts carry no key/value types
                normalise_type(a)
            return {"type": "dict"}, optional
        raise SchemaError(f"unknown type name {type_name!r}")
    base = t.lower()
    if base in _SCALARS:
        return {"type": _SCALARS[base]}, optional
    raise SchemaError(f"unknown type name {type_name!r}")


def normalise_property(prop: Any, where: str) -> tuple[dict[str, Any], bool]:
    """Normalise one property schema (type names, nested ``items``/``properties``); ``(schema, optional)``."""
    if not isinstance(prop, dict):
        raise SchemaError(f"{where}: a parameter schema must be an object, got {type(prop).__name__}")
    out = copy.deepcopy(prop)
    optional = False
    if "type" in out:
        frag, optional = normalise_type(out["type"])
        out["type"] = frag["type"]
        if "items" in frag and "items" not in out:
            out["items"] = frag["items"]
    else:
        out["type"] = "any"  # JSON schema: no type = anything
    if isinstance(out.get("items"), dict):
        out["items"], _ = normalise_property(out["items"], f"{where}.items")
    if out["type"] == "dict" and isinstance(out.get("properties"), dict):
        nested = normalise_parameters(out, where)
        out["properties"], out["required"] = nested["properties"], nested["required"]
        if not out["required"] and "required" not in prop:
            del out["required"]
    if isinstance(out.get("description"), str) and re.match(r"^\s*\[?optional\]?\b", out["description"], re.I):
        optional = True
    return out, optional


def flat_params_to_schema(params: dict[str, Any], where: str = "parameters") -> dict[str, Any]:
    """xLAM-style ``{name: {type, description, default?}}`` → ``{"type": "dict", "properties", "required"}``.

    A parameter is required unless it has a ``default`` or its type is marked optional.
    """
    if not isinstance(params, dict):
        raise SchemaError(f"{where}: expected an object of parameters, got {type(params).__name__}")
    props: dict[str, Any] = {}
    required: list[str] = []
    for pname, prop in params.items():
        schema, optional = normalise_property(prop, f"{where}.{pname}")
        props[pname] = schema
        if not optional and "default" not in prop:
            required.append(pname)
    return {"type": "dict", "properties": props, "required": required}


def normalise_parameters(params: Any, where: str = "parameters") -> dict[str, Any]:
    """Accept either a JSON-schema object (``type`` dict/object + ``properties``) or a flat parameter dict."""
    if params is None:
        return {"type": "dict", "properties": {}, "required": []}
    if not isinstance(params, dict):
        raise SchemaError(f"{where}: expected an object, got {type(params).__name__}")
    is_schema = "properties" in params or (
        isinstance(params.get("type"), str) and params["type"].lower() in ("dict", "object")
    )
    if not is_schema:
        return flat_params_to_schema(params, where)
    raw_props = params.get("properties") or {}
    if not isinstance(raw_props, dict):
        raise SchemaError(f"{where}.properties: expected an object, got {type(raw_props).__name__}")
    req = params.get("required")
    if req is None:
        req = []
    if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
        raise SchemaError(f"{where}.required: expected a list of names, got {req!r}")
    props: dict[str, Any] = {}
    optional_names: set[str] = set()
    for pname, prop in raw_props.items():
        props[pname], optional = normalise_property(prop, f"{where}.{pname}")
        if optional:
            optional_names.add(pname)
    unknown = [r for r in req if r not in props]
    if unknown:
        raise SchemaError(f"{where}.required names unknown parameters {unknown}")
    out = {k: copy.deepcopy(v) for k, v in params.items() if k not in ("type", "properties", "required")}
    return {"type": "dict", "properties": props, "required": [r for r in req if r not in optional_names], **out}


def normalise_tool(tool: Any, where: str = "tool") -> dict[str, Any]:
    """One tool in canonical form ``{name, description, parameters: {type: dict, properties, required}}``.

    Keys other than these (``response``, ...) are kept; a top-level ``"required": null`` (ToolACE) is dropped.
    """
    if not isinstance(tool, dict):
        raise SchemaError(f"{where}: a tool must be an object, got {type(tool).__name__}")
    if "name" not in tool:
        raise SchemaError(f"{where}: tool has no 'name'")
    name = safe_tool_name(tool["name"])
    desc = tool.get("description", "")
    if desc is None:
        desc = ""
    if not isinstance(desc, str):
        raise SchemaError(f"{where} {tool['name']!r}: description must be a string, got {type(desc).__name__}")
    raw_params = tool.get("parameters", tool.get("arguments"))
    params = normalise_parameters(raw_params, f"{where} {tool['name']!r}.parameters")
    # A top-level 'required' list (some ToolACE rows put it beside 'parameters') belongs inside.
    top_req = tool.get("required")
    if isinstance(top_req, list) and top_req and not params["required"]:
        params["required"] = [r for r in top_req if r in params["properties"]]
    out: dict[str, Any] = {"name": name, "description": desc, "parameters": params}
    for k, v in tool.items():
        if k not in ("name", "description", "parameters", "arguments", "required"):
            out[k] = copy.deepcopy(v)
    return out


def normalise_tools(tools: Any, where: str = "tools") -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Normalise a tool list; return it and the renames ``{original name: new name}`` that were needed."""
    if not isinstance(tools, list):
        raise SchemaError(f"{where}: expected a list of tools, got {type(tools).__name__}")
    out: list[dict[str, Any]] = []
    renames: dict[str, str] = {}
    seen: dict[str, str] = {}
    for i, t in enumerate(tools):
        nt = normalise_tool(t, f"{where}[{i}]")
        orig = t["name"]
        if nt["name"] in seen and seen[nt["name"]] != orig:
            raise SchemaError(f"{where}[{i}]: tools {seen[nt['name']]!r} and {orig!r} both normalise to {nt['name']!r}")
        if nt["name"] in seen:
            continue  # the exact same tool listed twice: keep one
        seen[nt["name"]] = orig
        if nt["name"] != orig:
            renames[orig] = nt["name"]
        out.append(nt)
    return out, renames


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
        text = re.sub(pattern, lambda _m, new=renames[old]: new + "(", text)
    return text


# ------------------------------------------------------------------------------------------------- targets

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
        l, r = node.left, node.right
        if op is None or not (_is_number(l) and _is_number(r)):
            return node
        a, b = _number(l), _number(r)
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
    for i, node in enumerate(tree.body.elts):  # type: ignore[attr-defined]
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


def tool_names(tools: Iterable[dict]) -> set[str]:
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


# ------------------------------------------------------------------------------- local files and hub datasets


class JsonLine(str):
    """One undecoded line of a JSON Lines file (decoded by the row converter, so a bad line is a bad row).

    ``error`` is set for a line that is not UTF-8 text: that row is reported, the others still load."""

    error: str = ""


def decode_row(raw: Any) -> dict:
    """A row object from :func:`read_records`; a malformed JSON line raises ``FieldError('<line>', ...)``."""
    if isinstance(raw, JsonLine):
        if raw.error:
            raise FieldError("<line>", raw.error)
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise FieldError("<line>", f"malformed JSON: {e}") from None
        except RecursionError:
            raise FieldError("<line>", "JSON nested too deeply") from None
    if not isinstance(raw, dict):
        raise FieldError("<row>", f"expected an object, got {type(raw).__name__}")
    return raw


def _not_utf8(data: bytes, e: UnicodeDecodeError) -> str:
    return f"not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); re-encode the file as UTF-8"


def _jsonl_rows(data: bytes) -> list[tuple[int, Any]]:
    # Decoded line by line, so one line with bad bytes is one bad row, not a lost file.
    rows: list[tuple[int, Any]] = []
    for i, raw in enumerate(data.split(b"\n")):
        if i == 0 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark is not part of the first row
        try:
            line = JsonLine(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            line = JsonLine("")
            line.error = _not_utf8(raw, e)
            rows.append((i, line))
            continue
        if line.strip():
            rows.append((i, line))
    return rows


def read_records(src: str, split: str = "train") -> tuple[str, list[tuple[int, Any]]]:
    """``(label, [(row index, raw row)])`` from a JSON list file, a JSON Lines file, or a Hugging Face hub id.

    Row indices are 0-based positions (for JSON Lines: the 0-based line number).  A UTF-8 byte-order mark is
    skipped.  A hub id (``owner/name`` that is not a local path) is read lazily with
    ``datasets.load_dataset(src, split=split)``.  A file that cannot be read at all (a folder, not UTF-8 JSON,
    an unreachable hub id) is a :class:`BadRow` naming it, with row ``-`` and field ``<file>``/``<source>``.
    """
    if os.path.exists(src):
        if os.path.isdir(src):
            raise BadRow(src, "-", "<file>", "is a folder; expected a JSON list or JSON Lines file")
        try:
            with open(src, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BadRow(src, "-", "<file>", f"cannot be read: {e.strerror or e}") from None
        if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as e:
                raise BadRow(src, "-", "<file>", _not_utf8(data, e)) from None
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as e:
                raise BadRow(src, "-", "<file>", f"not valid JSON: {e}") from None
            except RecursionError:
                raise BadRow(src, "-", "<file>", "not valid JSON: nested too deeply") from None
            if not isinstance(rows, list):  # "[1] x" cannot get here; a top-level list is what "[" opened
                raise BadRow(src, "-", "<file>", f"expected a JSON list, got {type(rows).__name__}")
            return src, list(enumerate(rows))
        return src, _jsonl_rows(data)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", src) and not src.endswith((".json", ".jsonl")):
        try:
            import datasets  # heavy: only when a hub dataset is actually requested
        except ImportError:
            raise BadRow(src, "-", "<source>", "a hub dataset id, but the `datasets` package is not installed; "
                                               "pass a local JSON / JSON Lines file") from None
        try:
            ds = datasets.load_dataset(src, split=split)
        except Exception as e:  # network, offline mode, unknown id, missing split: all "cannot load this source"
            first = (str(e).splitlines() or [""])[0][:300]
            why = f"hub dataset cannot be loaded ({type(e).__name__}: {first}); offline, pass a local JSON file"
            raise BadRow(f"hf://{src}", "-", "<source>", why) from None
        return f"hf://{src}", [(i, dict(row)) for i, row in enumerate(ds)]
    raise FileNotFoundError(f"{src}: no such file, and not a hub dataset id (owner/name)")


def load_file_records(src: str, split: str, convert: Any, *, strict: bool = False,
                      report_list: list | None = None) -> list:
    """The loading skeleton of the file/hub formats (ToolACE, xLAM): read the rows (:func:`read_records`),
    ``convert(decoded row, row index) -> Example | list[Example]`` each through ``records.convert_rows`` (bad
    rows reported with file, row and field, or fatal with ``strict``), append the report to ``report_list``."""
    from .records import LoadReport, convert_rows

    label, rows = read_records(src, split=split)
    report = LoadReport(label)
    out = list(convert_rows(label, rows, lambda raw, rowno: convert(decode_row(raw), rowno), report, strict))
    if report_list is not None:
        report_list.append(report)
    return out
