"""ToolACE (Team-ACE/ToolACE) dialogues → canonical examples, one per assistant turn that makes calls.

A row is ``{"system": "...Here is a list of functions in JSON format that you can invoke.\\n[...]...",
"conversations": [{"from": "user"|"assistant"|"tool", "value": "..."}]}`` (a separate ``tools`` field, as
some derived copies have, is used when present).  The tool list is the JSON array embedded in the system
text; ToolACE's own instructions around it are dropped, because the prompt is always built by
:func:`itool_core.calls.build_messages` (BFCL's system prompt), for training and evaluation alike.

Assistant turns of the form ``[func(a=1), g(b='x')]`` are call turns: each one gives an example whose
messages are the dialogue before it and whose target is its calls.  Earlier call turns stay in the context
in canonical call text; text turns and tool results stay as they are.  ToolACE names many tools with spaces
("Market Trends API"): names are made identifiers (``Market_Trends_API``) in the tools and in the calls.

Source: a local JSON (list) or JSON Lines file, or a hub id read lazily with ``datasets`` (not reachable
from the build machines; only local files are tested).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from ..calls import ParseError, serialise_calls
from .files import load_file_records
from .normalise import SchemaError, normalise_tools
from .records import Example, FieldError, LoadReport
from .targets import check_calls, parse_calls_lenient, rename_in_call_text

__all__ = ["DEFAULT_HUB_ID", "extract_tools", "toolace_examples", "load_toolace"]

DEFAULT_HUB_ID = "Team-ACE/ToolACE"

_ROLES = {
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant",
    "tool": "tool", "function": "tool", "observation": "tool",
    "system": "system",
}  # fmt: skip
_MARKER = re.compile(r"list of functions in JSON format that you can invoke[.:]?", flags=re.IGNORECASE)
# "[" then a name then "(": the name starts with a non-space character so that a long whitespace run is scanned
# once (the former "\s*" followed by a class that also matched spaces backtracked quadratically).
_CALL_START = re.compile(r"^\s*\[\s*[^\[\]()\"'=,\s][^\[\]()\"'=,]*\(")


def _first_tool_array(text: str, start: int = 0) -> list | None:
    dec = json.JSONDecoder()
    for m in re.finditer(r"\[\s*\{", text[start:]):
        try:
            value, _ = dec.raw_decode(text, start + m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, list) and value and all(isinstance(t, dict) and "name" in t for t in value):
            return value
    return None


def extract_tools(system: str) -> list:
    """The JSON tool list embedded in a ToolACE system text (after the "list of functions" marker if any)."""
    m = _MARKER.search(system)
    tools = _first_tool_array(system, m.end() if m else 0)
    if tools is None and m:
        tools = _first_tool_array(system)
    if tools is None:
        raise FieldError("system", "no JSON list of tools found in the system text")
    return tools


def toolace_examples(row: dict, rowno: int | str, id_prefix: str = "toolace") -> list[Example]:
    """All call-turn examples of one ToolACE row (raises :class:`FieldError` naming the bad field)."""
    if "tools" in row and row["tools"] not in (None, ""):
        raw_tools: Any = row["tools"]
        tools_field = "tools"
        if isinstance(raw_tools, str):
            try:
                raw_tools = json.loads(raw_tools)
            except json.JSONDecodeError as e:
                raise FieldError("tools", f"malformed JSON: {e}") from None
    else:
        if not isinstance(row.get("system"), str):
            raise FieldError("system", "missing or not a string (and no 'tools' field)")
        raw_tools, tools_field = extract_tools(row["system"]), "system"
    try:
        tools, renames = normalise_tools(raw_tools, tools_field)
    except SchemaError as e:
        raise FieldError(tools_field, str(e)) from None

    conv = row.get("conversations")
    if isinstance(conv, str):
        try:
            conv = json.loads(conv)
        except json.JSONDecodeError as e:
            raise FieldError("conversations", f"malformed JSON: {e}") from None
    if not isinstance(conv, list) or not conv:
        raise FieldError("conversations", "missing or not a non-empty list")

    messages: list[dict] = []
    out: list[Example] = []
    assistant_turns = 0
    for i, turn in enumerate(conv):
        where = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise FieldError(where, f"a turn must be an object, got {type(turn).__name__}")
        role = _ROLES.get(str(turn.get("from", turn.get("role", ""))).lower())
        if role is None:
            raise FieldError(f"{where}.from", f"unknown speaker {turn.get('from', turn.get('role'))!r}")
        value = turn.get("value", turn.get("content"))
        if value is None:
            raise FieldError(f"{where}.value", "missing")
        if not isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False)
        assistant_turns += role == "assistant"
        if role == "assistant" and _CALL_START.match(value):
            try:
                calls, notes = parse_calls_lenient(rename_in_call_text(value, renames), tools)
            except ParseError as e:
                raise FieldError(f"{where}.value", f"assistant call does not parse: {e}") from None
            problem = check_calls(calls, tools)
            if problem:
                raise FieldError(f"{where}.value", problem)
            if not any(m["role"] == "user" for m in messages):
                raise FieldError(where, "call turn before any user turn")
            meta: dict[str, Any] = {"row": rowno, "turn": i}
            if renames:
                meta["renamed_tools"] = renames
            if notes:
                meta["target_notes"] = notes
            ex_id = f"{id_prefix}/{rowno}/{i}"
            out.append(Example(ex_id, "toolace", "toolace", tools, copy.deepcopy(messages), calls, meta))
            messages.append({"role": "assistant", "content": serialise_calls(calls)})
        else:
            messages.append({"role": role, "content": value})
    if not assistant_turns:  # nothing the policy says: a broken row, reported (text-only dialogues are counted)
        raise FieldError("conversations", "no assistant turn")
    return out


def load_toolace(
    src: str | None = None,
    *,
    strict: bool = False,
    report_list: list[LoadReport] | None = None,
    split: str = "train",
) -> list[Example]:
    """ToolACE from a local JSON/JSONL file or a hub id (default :data:`DEFAULT_HUB_ID`)."""
    return load_file_records(src or DEFAULT_HUB_ID, split, toolace_examples, strict=strict, report_list=report_list)
