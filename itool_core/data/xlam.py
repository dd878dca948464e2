"""xLAM function-calling data (Salesforce/xlam-function-calling-60k) → canonical examples.

A row is ``{"id", "query", "tools", "answers"}`` where ``tools`` is a JSON string of
``[{name, description, parameters: {pname: {type, description, default?}}}]`` (flat parameters, Python type
names such as ``str, optional`` or ``List[int]``) and ``answers`` a JSON string of ``[{name, arguments}]``.
Each row is one example: the query as the user message, the tools normalised to BFCL form by
:mod:`itool_core.data.normalise` (a parameter is required unless it has a default or is marked optional),
the answers as the target.  Tool names that are not identifiers are renamed in tools and target alike.

Source: a local JSON (list) or JSON Lines file, or a hub id read lazily with ``datasets`` (the hub is not
reachable from the build machines; only local files are tested).
"""

from __future__ import annotations

import json
from typing import Any

from ..calls import ToolCall
from .files import load_file_records
from .normalise import SchemaError, normalise_tools
from .records import Example, FieldError, LoadReport
from .targets import check_calls

__all__ = ["DEFAULT_HUB_ID", "xlam_example", "load_xlam"]

DEFAULT_HUB_ID = "Salesforce/xlam-function-calling-60k"


def _json_field(row: dict, name: str, kind: type) -> Any:
    if name not in row:
        raise FieldError(name, "missing")
    v = row[name]
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError as e:
            raise FieldError(name, f"malformed JSON: {e}") from None
    if not isinstance(v, kind):
        raise FieldError(name, f"expected a JSON {kind.__name__}, got {type(v).__name__}")
    return v


def xlam_example(row: dict, rowno: int | str) -> Example:
    """One xLAM row → :class:`Example` (raises :class:`FieldError` naming the bad field)."""
    query = row.get("query")
    if not isinstance(query, str) or not query.strip():
        raise FieldError("query", "missing or empty")
    raw_tools = _json_field(row, "tools", list)
    try:
        tools, renames = normalise_tools(raw_tools, "tools")
    except SchemaError as e:
        raise FieldError("tools", str(e)) from None
    answers = _json_field(row, "answers", list)
    target: list[ToolCall] = []
    for j, a in enumerate(answers):
        where = f"answers[{j}]"
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            raise FieldError(where, "a call must be an object with a string 'name'")
        args = a.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError as e:
                raise FieldError(f"{where}.arguments", f"malformed JSON: {e}") from None
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise FieldError(f"{where}.arguments", f"expected keyword arguments (an object), got {type(args).__name__}")
        name: str = a["name"]  # a string: checked above
        target.append(ToolCall(renames.get(name, name), dict(args)))
    problem = check_calls(target, tools)
    if problem:
        raise FieldError("answers", problem)
    xid = row.get("id", rowno)
    meta: dict[str, Any] = {"xlam_id": xid}
    if renames:
        meta["renamed_tools"] = renames
    return Example(f"xlam/{xid}", "xlam", "xlam", tools, [{"role": "user", "content": query}], target, meta)


def load_xlam(
    src: str | None = None,
    *,
    strict: bool = False,
    report_list: list[LoadReport] | None = None,
    split: str = "train",
) -> list[Example]:
    """xLAM from a local JSON/JSONL file or a hub id (default :data:`DEFAULT_HUB_ID`)."""
    seen: set[str] = set()

    def convert(row: dict, rowno: int) -> Example:
        ex = xlam_example(row, rowno)
        if ex.id in seen:
            raise FieldError("id", f"duplicate id {ex.meta['xlam_id']!r}")
        seen.add(ex.id)
        return ex

    return load_file_records(src or DEFAULT_HUB_ID, split, convert, strict=strict, report_list=report_list)
