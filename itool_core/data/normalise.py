"""Normalisation of foreign tool schemas into the canonical (BFCL-style) form.

Sources other than BFCL describe tools loosely: ToolACE names tools with spaces ("Market Trends API"), xLAM
gives a flat ``{param: {type, description, default}}`` dict with Python type names (``str, optional``,
``List[str]``).  The policy is taught and scored with one parser (:func:`itool_core.calls.parse_calls`: dotted
identifiers), so every tool is brought to that form here, once, before an :class:`Example` is built:

* tool names become dotted Python identifiers (spaces and other characters → ``_``); the renames are returned
  so the same renaming can be applied to the target (:mod:`.targets`);
* type names become BFCL's vocabulary: ``string integer float boolean array tuple dict any``;
  ``optional`` / ``Optional[...]`` removes a parameter from ``required``;
* a flat parameter dict becomes ``{"type": "dict", "properties": ..., "required": [...]}`` (required = the
  parameters without a ``default`` that are not marked optional).

Target repairs (:mod:`.targets`) and the file reader (:mod:`.files`) used to live here and are re-exported
under their old names.
"""

from __future__ import annotations

import copy
import keyword
import re
from typing import Any

from .files import decode_row, load_file_records, read_records
from .targets import check_calls, keyword_arguments, parse_calls_lenient, rename_calls, rename_in_call_text

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
    "load_file_records",
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
    out: list[str] = []
    cur: list[str] = []
    depth = 0
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
