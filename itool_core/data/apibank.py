"""API-Bank (Li et al., 2023) level-1/level-2 test sets and the level-3 training set → canonical examples.

Files (``default_apibank_dir()``: ``$ITOOL_APIBANK_DIR`` or the package's own copy, ``itool_core/data/api_bank``):

=================== ======== ============================================================================
``level-1-api.json`` level 1  call one of the APIs described in ``instruction`` from the dialogue
``level-2-api.json`` level 2  ``ToolSearcher`` first, then call the API it retrieved
``lv3-api-train.json`` train  the authors' training set (``output`` instead of ``expected_output``; API
                              descriptions as JSON lines at the top of ``input`` with ``apiCode`` /
                              ``parameters`` / ``response`` keys instead of ``name`` / ``input_parameters``)
=================== ======== ============================================================================

Every item becomes one example:

* ``tools``: the API descriptions (JSON lines) in canonical BFCL form.  Types: str→string, int→integer,
  float→float, bool→boolean, list→array (``list(str)`` → array of string), dict→dict; any other type →
  string, with the original type named in the description.  A parameter is required unless its description says it
  is optional.  Output parameters are kept as ``response`` (as in BFCL's multi-turn docs).  APIs that an
  earlier ``ToolSearcher`` call *returned* in the dialogue (level 2, train) are added to the tools, because
  the expected call uses them: in API-Bank the model learns them from the dialogue, here the tool list is
  where a BFCL-style prompt shows callable functions (``meta["retrieved_tools"]`` names them).
* ``messages``: an optional system message with the instruction's date line ("The current year is
  2023."), then ``User:`` → user, ``AI:`` → assistant, ``API-Request: [call]->result`` → an assistant message
  with the call (canonical call text) and a ``tool`` message with the result.
* ``target``: the expected ``API-Request: [Name(key='v')]`` parsed with :func:`parse_calls`.  The training
  set writes ~100 requests with unquoted values (``[GetOccupationSalary(occupation=Financial Analyst)]``) and
  level 1/2 ~40 with a list inside quotes (``attendees='['John', 'Jane']'``); these are read as API-Bank's
  own regex parser reads them (values as text), a list/dict text for a list/dict parameter is then read as
  that list/dict, and each repair is noted in ``meta["target_notes"]``.  A request that cannot be read even
  so (a ``<placeholder>`` value) is a reported bad row; so is a *training* item whose expected call names an
  API the dialogue never describes (test items keep it, flagged ``meta["undescribed_target_tools"]``).
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..calls import ParseError, ToolCall, lists_for_tuples, literal_value, parse_calls, serialise_calls, tuples_to_lists
from .records import BadRow, Example, FieldError, LoadReport, convert_rows

__all__ = [
    "LEVEL_FILES",
    "default_apibank_dir",
    "apibank_tool",
    "parse_api_request",
    "parse_dialogue",
    "load_apibank",
    "EVAL_CATEGORIES",
    "load_source",
]

#: The scored categories (levels 1 and 2; "train" is training data): the ``apibank`` benchmark's categories.
EVAL_CATEGORIES = ("apibank_level1", "apibank_level2")

LEVEL_FILES: dict[Any, str] = {1: "level-1-api.json", 2: "level-2-api.json", "train": "lv3-api-train.json"}
_LEVEL_NAMES = {1: "level1", 2: "level2", "train": "train"}

_TYPE_MAP = {"str": "string", "int": "integer", "float": "float", "bool": "boolean", "list": "array", "dict": "dict"}


def default_apibank_dir() -> Path:
    """``$ITOOL_APIBANK_DIR``, else the copy carried inside the package (``itool_core/data/api_bank``, see its
    README for origin and licence): a clone or an installed wheel needs nothing beside it."""
    env = os.environ.get("ITOOL_APIBANK_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "api_bank"


def _level_key(level: Any) -> Any:
    s = str(level).strip().lower().replace("-", "").replace("_", "")
    for key in (1, 2):
        if s in (str(key), f"level{key}", f"l{key}"):
            return key
    if s in ("train", "lv3", "level3train", "lv3train"):
        return "train"
    raise ValueError(f"unknown API-Bank level {level!r} (1, 2 or 'train')")


# -------------------------------------------------------------------------------------------------- tools


def _param_schema(pname: str, spec: Any, where: str) -> tuple[dict[str, Any], bool]:
    """``(canonical property, optional)`` for one API-Bank parameter ``{"type": "str", "description": ...}``."""
    if not isinstance(spec, dict):
        raise FieldError(where, f"parameter {pname!r} must be an object, got {type(spec).__name__}")
    raw_type = spec.get("type", "str")
    desc = spec.get("description", "")
    if not isinstance(desc, str):
        desc = str(desc)
    prop: dict[str, Any]
    t = raw_type if isinstance(raw_type, str) else getattr(raw_type, "__name__", str(raw_type))
    m = re.fullmatch(r"\s*(?:list|List)\s*[\[(]\s*(\w+)\s*[\])]\s*", t)
    if t in _TYPE_MAP:
        prop = {"type": _TYPE_MAP[t], "description": desc}
    elif m and m.group(1) in _TYPE_MAP:
        prop = {"type": "array", "items": {"type": _TYPE_MAP[m.group(1)]}, "description": desc}
    else:
        # Unknown to BFCL's vocabulary (e.g. "Union[List[dict], dict]"): a string, type kept for the reader.
        sep = " " if desc and not desc.endswith(" ") else ""
        prop = {"type": "string", "description": f"{desc}{sep}(original type: {t})"}
    optional = bool(re.search(r"\boptional\b", desc, flags=re.IGNORECASE))
    return prop, optional


def apibank_tool(desc: Any, where: str = "API description") -> dict[str, Any]:
    """One API-Bank API description (test or train key names) → canonical tool."""
    if not isinstance(desc, dict):
        raise FieldError(where, f"an API description must be an object, got {type(desc).__name__}")
    name = desc.get("name", desc.get("apiCode"))
    if not isinstance(name, str) or not name.isidentifier():
        raise FieldError(where, f"API name must be an identifier, got {name!r}")
    params = desc.get("input_parameters", desc.get("parameters", {})) or {}
    outputs = desc.get("output_parameters", desc.get("response", {})) or {}
    if not isinstance(params, dict):
        raise FieldError(where, f"{name}: input parameters must be an object, got {type(params).__name__}")
    if not isinstance(outputs, dict):
        raise FieldError(where, f"{name}: output parameters must be an object, got {type(outputs).__name__}")
    props, required = {}, []
    for pname, spec in params.items():
        props[pname], optional = _param_schema(pname, spec, where)
        if not optional:
            required.append(pname)
    tool: dict[str, Any] = {
        "name": name,
        "description": str(desc.get("description", "")),
        "parameters": {"type": "dict", "properties": props, "required": required},
    }
    if outputs:
        tool["response"] = {
            "type": "dict",
            "properties": {p: _param_schema(p, s, where)[0] for p, s in outputs.items()},
        }
    return tool


def _loose_literal(node: ast.AST) -> Any:
    """A Python literal where bare names read as strings (retrieved API dicts write ``'type': str``)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_loose_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_loose_literal(k): _loose_literal(v) for k, v in zip(node.keys, node.values) if k is not None}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return -node.operand.value  # type: ignore[operator]
    raise ValueError(type(node).__name__)


def _retrieved_apis(result: str) -> list[dict]:
    """API descriptions returned by a ToolSearcher call (a dict, or a list of dicts), else []."""
    s = result.strip()
    if not s.startswith(("{", "[")):
        return []
    try:
        value = _loose_literal(ast.parse(s, mode="eval").body)
    except (SyntaxError, ValueError, RecursionError, TypeError):
        return _retrieved_apis_by_pattern(s)
    items = value if isinstance(value, list) else [value]
    return [
        x
        for x in items
        if isinstance(x, dict)
        and isinstance(x.get("name"), str)
        and x["name"].isidentifier()
        and ("input_parameters" in x or "output_parameters" in x)  # not e.g. a knowledge-base hit {'name': ...}
    ]


_PARAM_RE = re.compile(r"'(\w+)':\s*\{'type':\s*'?([\w\[\], ]+?)'?,\s*'description':\s*['\"](.*?)['\"]\}")


def _retrieved_apis_by_pattern(s: str) -> list[dict]:
    """Fallback for descriptions that are not Python literals because of an unescaped quote inside a string
    (``'description': 'The user's budget.'``, a dozen training items): read the fixed layout with patterns."""
    out = []
    for m in re.finditer(r"\{'name':\s*'(\w+)',\s*'description':\s*['\"](.*?)['\"],\s*'input_parameters':\s*\{", s):
        rest = s[m.end() :]
        end = rest.find("'output_parameters'")
        section = rest if end < 0 else rest[:end]
        params = {p.group(1): {"type": p.group(2), "description": p.group(3)} for p in _PARAM_RE.finditer(section)}
        outputs = {}
        if end >= 0:
            nxt = rest[end:].find("{'name'")
            out_section = rest[end:] if nxt < 0 else rest[end : end + nxt]
            outputs = {
                p.group(1): {"type": p.group(2), "description": p.group(3)} for p in _PARAM_RE.finditer(out_section)
            }
        out.append(
            {"name": m.group(1), "description": m.group(2), "input_parameters": params, "output_parameters": outputs}
        )
    return out


# ------------------------------------------------------------------------------------------------- calls


def _split_args(body: str) -> list[str]:
    """Split ``a=1, b=New York, NY, c='x'`` at top-level commas that start a new ``key=``."""
    pieces: list[str] = []
    cur: list[str] = []
    depth, quote = 0, ""
    i = 0
    while i < len(body):
        ch = body[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"" and (not cur or "".join(cur).rstrip().endswith("=")):
            quote = ch  # only a quote that opens a value counts (apostrophes inside bare text do not)
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        elif ch == "," and depth == 0 and re.match(r"\s*[A-Za-z_]\w*\s*=", body[i + 1 :]):
            pieces.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    pieces.append("".join(cur))
    return [p.strip() for p in pieces if p.strip()]


def _repair_request(text: str) -> list[ToolCall]:
    """Read ``[Name(key=bare value, ...)]`` (unquoted values) as API-Bank's own regex-based parser does."""
    m = re.fullmatch(r"\s*\[?\s*([A-Za-z_][\w.]*)\s*\((.*)\)\s*\]?\s*", text, flags=re.S)
    if not m:
        raise ParseError("not of the form [ApiName(key=value, ...)]")
    name, body = m.groups()
    args: dict[str, Any] = {}
    for piece in _split_args(body):
        key, eq, raw = piece.partition("=")
        key, raw = key.strip(), raw.strip()
        if not eq or not key.isidentifier():
            raise ParseError(f"argument {piece!r} is not key=value")
        if key in args:
            raise ParseError(f"argument {key!r} given twice")
        if not raw:
            raise ParseError(f"argument {key!r} has no value")
        if re.fullmatch(r"<[^<>]*>", raw):
            raise ParseError(f"argument {key!r} is a placeholder {raw!r}, not a value")
        try:
            value = tuples_to_lists(literal_value(ast.parse(raw, mode="eval").body, key))
        except (SyntaxError, ParseError, ValueError, RecursionError):
            value = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"" else raw
        args[key] = value
    return [ToolCall(name, args)]


def parse_api_request(text: str) -> tuple[list[ToolCall], list[str]]:
    """``API-Request: [Name(k='v')]`` (prefix optional) → ``(calls, notes)``; notes say what was repaired."""
    s = text.strip()
    if s.startswith("API-Request:"):
        s = s[len("API-Request:") :].strip()
    try:
        return lists_for_tuples(parse_calls(s))[0], []  # a target's JSON form: tuples are lists
    except ParseError as strict_error:
        try:
            return _repair_request(s), ["read leniently: unquoted (or badly quoted) argument values taken as text"]
        except ParseError as e:
            raise ParseError(f"{strict_error}; read leniently: {e}") from None


def _split_request_line(rest: str) -> tuple[str, str]:
    """``[call]->result`` → (call text, result); the call is the shortest prefix before a ``->`` that parses."""
    positions = [m.start() for m in re.finditer(r"->", rest)]
    for p in positions:
        head = rest[:p].rstrip()
        if head.endswith("]"):
            try:
                parse_api_request(head)
                return head, rest[p + 2 :]
            except ParseError:
                continue
    if positions:
        p = positions[0]
        return rest[:p].rstrip(), rest[p + 2 :]
    return rest.strip(), ""


# ---------------------------------------------------------------------------------------------- dialogue


def parse_dialogue(
    text: str, field: str = "input"
) -> tuple[list[dict], list[dict], list[dict], list[tuple[int, list[ToolCall]]]]:
    """API-Bank ``input`` → ``(leading API descriptions, chat messages, retrieved API descriptions, calls)``.

    ``calls`` pairs the index of each assistant call message with the calls it makes (for re-rendering once
    the tool types are known).
    """
    apis: list[dict] = []
    messages: list[dict] = []
    retrieved: list[dict] = []
    call_msgs: list[tuple[int, list[ToolCall]]] = []
    for k, line in enumerate(text.split("\n")):
        s = line.strip()
        if not s:
            continue
        if s.startswith("Generate API Request"):
            break
        if s.startswith("{") and not messages:
            try:
                apis.append(json.loads(s))
            except json.JSONDecodeError as e:
                raise FieldError(field, f"line {k}: API description is not valid JSON: {e}") from None
            continue
        if s.startswith("User:"):
            messages.append({"role": "user", "content": s[len("User:") :].strip()})
        elif s.startswith("AI:"):
            messages.append({"role": "assistant", "content": s[len("AI:") :].strip()})
        elif s.startswith("API-Request:"):
            call_text, result = _split_request_line(s[len("API-Request:") :].strip())
            try:
                calls, _ = parse_api_request(call_text)
                content = serialise_calls(calls)
                call_msgs.append((len(messages), calls))
            except ParseError:
                content = call_text  # context only: keep the text as the dialogue wrote it
            messages.append({"role": "assistant", "content": content})
            messages.append({"role": "tool", "content": result.strip()})
            retrieved.extend(_retrieved_apis(result))
        elif messages:
            # A line without a speaker continues the previous utterance.
            messages[-1]["content"] += "\n" + line.rstrip()
        else:
            raise FieldError(field, f"line {k}: unrecognised dialogue line {s[:60]!r}")
    return apis, messages, retrieved, call_msgs


def _typed_values(target: list[ToolCall], tools: list[dict]) -> list[str]:
    """Read list/dict literals written as strings (``attendees='['John', 'Jane']'``) as the list/dict the
    parameter type asks for; edits the calls in place and returns a note per change."""
    notes = []
    by_name = {t["name"]: t for t in tools}
    for c in target:
        props = (by_name.get(c.name) or {}).get("parameters", {}).get("properties", {})
        for k, v in list(c.arguments.items()):
            want = (props.get(k) or {}).get("type")
            if not isinstance(v, str) or want not in ("array", "dict"):
                continue
            try:
                parsed = tuples_to_lists(literal_value(ast.parse(v.strip(), mode="eval").body, k))
            except (SyntaxError, ParseError, ValueError, RecursionError):
                continue
            if isinstance(parsed, list if want == "array" else dict):
                c.arguments[k] = parsed
                notes.append(f"{c.name}.{k}: string value read as the {want} the parameter type asks for")
    return notes


def _instruction_apis(instruction: str) -> list[dict]:
    out: list[dict] = []
    after = instruction.split("API descriptions:", 1)
    if len(after) < 2:
        return out
    for k, line in enumerate(after[1].split("\n")):
        s = line.strip()
        if not s:
            continue
        if not s.startswith("{"):
            raise FieldError("instruction", f"API descriptions line {k}: not a JSON object: {s[:60]!r}")
        try:
            out.append(json.loads(s))
        except json.JSONDecodeError as e:
            raise FieldError("instruction", f"API descriptions line {k}: malformed JSON: {e}") from None
    return out


def _date_line(instruction: str) -> str | None:
    m = re.search(r"^\s*(The current (?:year|time|date) is [^\n]*?)\s*$", instruction, flags=re.M)
    if m and "{{" not in m.group(1):  # the training set leaves a "{{time}}" template unfilled
        return m.group(1)
    return None


# ----------------------------------------------------------------------------------------------- loading


def _convert(item: Any, rowno: int, level: Any, file_name: str) -> Example:
    if not isinstance(item, dict):
        raise FieldError("<item>", f"expected an object, got {type(item).__name__}")
    for f in ("instruction", "input"):
        if not isinstance(item.get(f), str):
            raise FieldError(f, "missing or not a string")
    out_field = "expected_output" if "expected_output" in item else "output"
    if not isinstance(item.get(out_field), str):
        raise FieldError("expected_output", "missing ('expected_output' or 'output') or not a string")

    tools: list[dict] = []
    for k, d in enumerate(_instruction_apis(item["instruction"])):
        tools.append(apibank_tool(d, f"instruction (API description {k})"))
    input_apis, messages, retrieved, call_msgs = parse_dialogue(item["input"], "input")
    for k, d in enumerate(input_apis):
        tools.append(apibank_tool(d, f"input (API description {k})"))
    names = {t["name"] for t in tools}
    retrieved_names = []
    for d in retrieved:
        t = apibank_tool(d, "input (retrieved API)")
        if t["name"] not in names:
            tools.append(t)
            names.add(t["name"])
            retrieved_names.append(t["name"])
    if not tools:
        raise FieldError("instruction", "no API descriptions")
    for k, calls in call_msgs:  # earlier calls in the same canonical form as targets (lists as lists)
        if _typed_values(calls, tools):
            messages[k]["content"] = serialise_calls(calls)
    date = _date_line(item["instruction"])
    if date:
        messages.insert(0, {"role": "system", "content": date})
    if not any(m["role"] == "user" for m in messages):
        raise FieldError("input", "dialogue has no user utterance")

    try:
        target, notes = parse_api_request(item[out_field])
    except ParseError as e:
        raise FieldError(out_field, f"API request does not parse: {e}") from None
    undescribed = [c.name for c in target if c.name not in names]
    if undescribed and level == "train":
        # Training data must not teach calling APIs the prompt never describes.
        raise FieldError(
            out_field, f"calls {undescribed[0]!r}, which is neither described nor retrieved ({sorted(names)})"
        )
    notes.extend(_typed_values(target, tools))

    lv = _LEVEL_NAMES[level]
    meta: dict[str, Any] = {
        "level": level,
        "instruction": item["instruction"],
        "input": item["input"],
        "expected_output": item[out_field],
        "file": item.get("file", file_name),
    }
    if "id" in item:
        meta["item_id"] = item["id"]
    if retrieved_names:
        meta["retrieved_tools"] = retrieved_names
    if notes:
        meta["target_notes"] = notes
    if undescribed:
        # 14 level-2 items call an API that the dialogue only names in prose (never retrieved or described);
        # they stay, so that the level keeps its published size, and are flagged for the scorer.
        meta["undescribed_target_tools"] = undescribed
    return Example(f"apibank/{lv}/{rowno}", "apibank", f"apibank_{lv}", tools, messages, target, meta)


def load_apibank(
    level: int | str = 1,
    apibank_dir: str | os.PathLike | None = None,
    *,
    strict: bool = False,
    report_list: list[LoadReport] | None = None,
) -> list[Example]:
    """Load one API-Bank file: ``level`` 1, 2 or ``"train"``; ids ``apibank/<level1|level2|train>/<row>``."""
    key = _level_key(level)
    d = Path(apibank_dir) if apibank_dir is not None else default_apibank_dir()
    path = d / LEVEL_FILES[key]
    if not path.exists():
        raise FileNotFoundError(
            f"API-Bank {LEVEL_FILES[key]} not found in {d} (set --apibank-dir or ITOOL_APIBANK_DIR)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise BadRow(str(path), "-", "<file>", f"not valid JSON: {e}") from None
    if not isinstance(data, list):
        raise BadRow(str(path), "-", "<file>", f"expected a JSON list of items, got {type(data).__name__}")
    report = LoadReport(str(path))
    rows = list(enumerate(data))
    out = list(convert_rows(str(path), rows, lambda item, rowno: _convert(item, rowno, key, path.name), report, strict))
    if report_list is not None:
        report_list.append(report)
    return out


def _levels(level: Any) -> list[Any]:
    if level is None:
        return [1, 2]
    if isinstance(level, str):
        if level.strip().lower() == "all":
            return [1, 2, "train"]
        return [x.strip() for x in level.split(",") if x.strip()]
    if isinstance(level, Iterable):
        return list(level)
    return [level]


def load_source(
    src: str | os.PathLike | None = None,
    *,
    strict: bool = False,
    report_list: list[LoadReport] | None = None,
    level: Any = None,
) -> list[Example]:
    """The ``apibank`` format of ``data.loaders.load``: ``src`` = an API-Bank folder (default
    :func:`default_apibank_dir`); ``level`` 1, 2, "train", a list or comma string of those, or "all"
    (default: the two test levels)."""
    out: list[Example] = []
    for lv in _levels(level):
        out.extend(load_apibank(lv, src, strict=strict, report_list=report_list))
    return out
