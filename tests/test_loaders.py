"""Loaders into the one example schema: fixtures per format, bad rows, real BFCL / API-Bank data, round trip."""

from __future__ import annotations

import copy
import json
import sys
import types
from pathlib import Path

import pytest

from itool_core import schemas
from itool_core.artifacts import read_table, write_table
from itool_core.calls import ParseError, ToolCall, parse_calls
from itool_core.data import bfcl as bfcl_mod
from itool_core.data.apibank import default_apibank_dir, load_apibank, parse_api_request
from itool_core.data.bfcl import (
    AST_CATEGORIES,
    MULTI_TURN_CATEGORIES,
    UNUSED_CATEGORIES,
    V3_CATEGORIES,
    load_bfcl,
    load_bfcl_unused,
    preprocess_function_docs,
)
from itool_core.data.loaders import FORMATS, load, load_default_training_set
from itool_core.data.normalise import (
    SchemaError,
    normalise_tool,
    normalise_type,
    parse_calls_lenient,
    safe_tool_name,
)
from itool_core.data.records import BadRow, Example, LoadReport
from itool_core.data.toolace import load_toolace
from itool_core.data.xlam import load_xlam

FIX = Path(__file__).parent / "fixtures"
APIBANK = default_apibank_dir()
needs_apibank = pytest.mark.skipif(
    not (APIBANK / "level-1-api.json").exists(), reason=f"API-Bank data not found in {APIBANK}"
)

#: BFCL v3 category sizes in bfcl-eval 2026.3.23 (BFCL_v4_* files).
BFCL_COUNTS = {
    "simple_python": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200, "irrelevance": 240,
    "live_simple": 258, "live_multiple": 1053, "live_parallel": 16, "live_parallel_multiple": 24,
    "live_irrelevance": 884, "live_relevance": 16, "multi_turn_base": 200, "multi_turn_miss_func": 200,
    "multi_turn_miss_param": 200, "multi_turn_long_context": 200,
}  # fmt: skip
UNUSED_COUNTS = {"exec_simple": 100, "exec_multiple": 50, "exec_parallel": 50, "exec_parallel_multiple": 40, "sql": 100}


# ------------------------------------------------------------------------------------------------ helpers


def _write(path: Path, rows, jsonl: bool = False) -> str:
    if jsonl:
        path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    else:
        path.write_text(json.dumps(rows))
    return str(path)


def _assert_bad(report: LoadReport, file: str, row, field: str, reason_part: str) -> BadRow:
    assert len(report.skipped) == 1, report.summary()
    bad = report.skipped[0]
    msg = str(bad)
    assert file in msg and f"row {row}" in msg and repr(field) in msg, msg
    assert bad.row == row and bad.field == field
    assert reason_part in bad.reason, bad.reason
    return bad


def _check_bad_row(loader, path: str, n_good: int, row, field: str, reason_part: str, **kw) -> None:
    """Non-strict: the bad row is reported (file, row, field) and good rows still load; strict: BadRow."""
    reports: list[LoadReport] = []
    out = loader(path, report_list=reports, **kw)
    assert len(out) == n_good
    _assert_bad(reports[0], path, row, field, reason_part)
    with pytest.raises(BadRow) as ei:
        loader(path, strict=True, **kw)
    assert ei.value.field == field and ei.value.row == row and path in str(ei.value)


# -------------------------------------------------------------------------------------------- fixtures: ok


def test_formats_and_dispatch(tmp_path):
    assert set(FORMATS) == {"toolace", "xlam", "bfcl", "apibank", "examples"}
    with pytest.raises(ValueError, match="unknown data format 'nope'"):
        load("nope", "x")
    # "examples": our own table reads back as it was written
    from itool_core.data.loaders import write_examples

    exs, reports = load("toolace", str(FIX / "toolace.json"))
    write_examples(exs, tmp_path / "t.parquet", reports)
    again, rep = load("examples", str(tmp_path / "t.parquet"))
    assert again == exs and rep[0].loaded == len(exs)


def test_toolace_fixture():
    reports: list[LoadReport] = []
    ex = load_toolace(str(FIX / "toolace.json"), report_list=reports)
    assert [e.id for e in ex] == ["toolace/0/1", "toolace/0/5", "toolace/1/1"]
    assert reports[0].loaded == 3 and not reports[0].skipped
    e0, e1, e2 = ex
    assert [t["name"] for t in e0.tools] == ["Market_Trends_API", "getStockQuote"]
    assert e0.tools[0]["parameters"] == {
        "type": "dict",
        "properties": {
            "trend_type": {"description": "Trend type.", "type": "string"},
            "country": {"description": "Country code.", "type": "string"},
        },
        "required": ["trend_type"],
    }
    assert e0.tools[1]["parameters"]["properties"]["fields"] == {
        "description": "Fields to return.",
        "type": "array",
        "items": {"type": "string"},
    }
    assert e0.messages == [{"role": "user", "content": "What are the market indexes in the US right now?"}]
    assert e0.target == [ToolCall("Market_Trends_API", {"trend_type": "MARKET_INDEXES", "country": "us"})]
    assert e0.meta["renamed_tools"] == {"Market Trends API": "Market_Trends_API"}
    # Second call turn: earlier call kept as canonical call text, tool result and text turn as context.
    assert [m["role"] for m in e1.messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert e1.messages[1]["content"] == "[Market_Trends_API(trend_type='MARKET_INDEXES', country='us')]"
    assert e1.target == [
        ToolCall("getStockQuote", {"symbol": "AAPL", "fields": ["price"]}),
        ToolCall("getStockQuote", {"symbol": "MSFT", "fields": ["price"]}),
    ]
    # Positional argument named by parameter order; the text-only dialogue (row 2) gives no example.
    assert e2.target == [ToolCall("get_weather", {"city": "Paris"})]
    assert "positional" in e2.meta["target_notes"][0]
    assert all(e.source == "toolace" and e.category == "toolace" for e in ex)


def test_xlam_fixture():
    ex, reports = load("xlam", str(FIX / "xlam.json"))
    assert [e.id for e in ex] == ["xlam/0", "xlam/1"]
    e0, e1 = ex
    assert e0.tools == [
        {
            "name": "live_giveaways_by_type",
            "description": "Retrieve live giveaways from the GamerPower API based on the specified type.",
            "parameters": {
                "type": "dict",
                "properties": {
                    "type": {
                        "description": "The type of giveaways to retrieve (e.g., game, loot, beta).",
                        "type": "string",
                        "default": "game",
                    }
                },
                "required": [],  # has a default → optional
            },
        }
    ]
    assert e0.messages == [{"role": "user", "content": "Where can I find live giveaways for beta access and games?"}]
    assert e0.target == [
        ToolCall("live_giveaways_by_type", {"type": "beta"}),
        ToolCall("live_giveaways_by_type", {"type": "game"}),
    ]
    assert [t["name"] for t in e1.tools] == ["add_numbers", "mean"]
    assert e1.tools[0]["parameters"]["required"] == ["a", "b"]  # "int, optional" drops c
    assert e1.tools[1]["parameters"]["properties"]["weights"] == {
        "description": "Weights.",
        "type": "array",
        "items": {"type": "float"},
    }
    assert e1.tools[1]["parameters"]["required"] == ["values"]  # Optional[...] drops weights
    assert e1.target[0] == ToolCall("add_numbers", {"a": 3, "b": 4})
    assert reports[0].loaded == 2 and not reports[0].skipped


def test_bfcl_fixture_pair():
    ex, reports = load("bfcl", str(FIX / "bfcl"), categories="simple_python,irrelevance")
    assert [e.id for e in ex] == ["bfcl/simple_python_0", "bfcl/simple_python_1", "bfcl/irrelevance_0"]
    e0, e1, e2 = ex
    hint = " Note that the provided function is in Python 3 syntax."
    assert e0.tools[0]["description"] == "Calculate the area of a triangle given its base and height." + hint
    assert e0.messages == [
        {"role": "user", "content": "Find the area of a triangle with a base of 10 units and height of 5 units."}
    ]
    # "unit" may be omitted ("" among its possible values) → not in the target.
    assert e0.target == [ToolCall("calculate_triangle_area", {"base": 10, "height": 5})]
    assert e0.meta == {
        "ground_truth": [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}],
        "bfcl_id": "simple_python_0",
        "bfcl_category": "simple_python",
    }
    # dict-typed parameter: possible values per key, optional key dropped.
    assert e1.target == [ToolCall("restaurant.book", {"people": 2, "options": {"time": "7pm", "window": True}})]
    assert e2.target == [] and e2.category == "irrelevance" and e2.source == "bfcl"
    assert all(not r.skipped for r in reports)


def test_apibank_fixture():
    ex, reports = load("apibank", str(FIX / "apibank"), level="1,train")
    assert [e.id for e in ex] == ["apibank/level1/0", "apibank/level1/1", "apibank/train/0"]
    e0, e1, e2 = ex
    assert [t["name"] for t in e0.tools] == ["GetUserToken", "AddMeeting"]
    meet = e0.tools[1]
    assert meet["parameters"]["properties"]["attendees"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": "The attendees.",
    }
    assert meet["parameters"]["properties"]["remind"]["type"] == "boolean"
    assert meet["parameters"]["required"] == ["token", "meeting_topic", "attendees"]  # "[Optional]" dropped
    assert meet["response"]["properties"]["status"]["type"] == "string"
    assert e0.messages == [
        {"role": "system", "content": "The current year is 2023."},
        {"role": "user", "content": "Please schedule a meeting about the budget with John and Jane."},
        {"role": "assistant", "content": "Sure, I need your username and password first."},
        {"role": "user", "content": "My username is admin and my password is adminpass."},
    ]
    assert e0.target == [ToolCall("GetUserToken", {"username": "admin", "password": "adminpass"})]
    assert e0.meta["level"] == 1 and e0.meta["file"] == "AddMeeting-level-1-1.jsonl"
    assert e0.meta["expected_output"].startswith("API-Request: [GetUserToken(")
    assert set(e0.meta) >= {"level", "instruction", "input", "expected_output", "file"}
    # Earlier call + result → assistant call text + tool message; quoted list read as the list.
    assert e1.messages[4:] == [
        {"role": "assistant", "content": "[GetUserToken(username='admin', password='adminpass')]"},
        {"role": "tool", "content": "{'token': 'a9s8d7f6'}"},
        {"role": "assistant", "content": "Got it."},
    ]
    assert e1.target == [
        ToolCall("AddMeeting", {"token": "a9s8d7f6", "meeting_topic": "budget", "attendees": ["John", "Jane"]})
    ]
    # Train: apiCode/parameters keys, retrieved API added to tools, unquoted values read as text.
    assert [t["name"] for t in e2.tools] == ["ToolSearcher", "GetOccupationSalary"]
    assert e2.tools[0]["response"]["properties"]["best_matchs"] == {
        "type": "string",
        "description": "The best match tool(s). (original type: Union[List[dict], dict])",
    }
    assert e2.meta["retrieved_tools"] == ["GetOccupationSalary"]
    assert e2.messages[0]["role"] == "user"  # "{{time}}" template → no system message
    assert e2.target == [ToolCall("GetOccupationSalary", {"occupation": "Nurse", "location": "New York"})]
    assert e2.category == "apibank_train" and e2.source == "apibank"
    assert all(not r.skipped for r in reports)


# ------------------------------------------------------------------------------------------------ bad rows


def _xlam_rows():
    return json.loads((FIX / "xlam.json").read_text())


def test_bad_xlam_missing_field(tmp_path):
    rows = _xlam_rows()
    del rows[1]["query"]
    _check_bad_row(load_xlam, _write(tmp_path / "x.json", rows), 1, 1, "query", "missing")


def test_bad_xlam_malformed_json_string(tmp_path):
    rows = _xlam_rows()
    rows[0]["tools"] = rows[0]["tools"][:-5]
    _check_bad_row(load_xlam, _write(tmp_path / "x.json", rows), 1, 0, "tools", "malformed JSON")


def test_bad_xlam_unknown_type_name(tmp_path):
    rows = _xlam_rows()
    tools = json.loads(rows[1]["tools"])
    tools[0]["parameters"]["a"]["type"] = "Callable[[int], int]"
    rows[1]["tools"] = json.dumps(tools)
    _check_bad_row(load_xlam, _write(tmp_path / "x.json", rows), 1, 1, "tools", "unknown type name")


def test_bad_xlam_non_dict_params(tmp_path):
    rows = _xlam_rows()
    tools = json.loads(rows[0]["tools"])
    tools[0]["parameters"] = ["type"]
    rows[0]["tools"] = json.dumps(tools)
    _check_bad_row(load_xlam, _write(tmp_path / "x.json", rows), 1, 0, "tools", "expected an object")


def test_bad_xlam_target_names_unknown_tool_or_argument(tmp_path):
    rows = _xlam_rows()
    rows[0]["answers"] = json.dumps([{"name": "no_such_tool", "arguments": {}}])
    _check_bad_row(load_xlam, _write(tmp_path / "x.json", rows), 1, 0, "answers", "not one of the tools")
    rows = _xlam_rows()
    rows[0]["answers"] = json.dumps([{"name": "live_giveaways_by_type", "arguments": {"kind": "beta"}}])
    _check_bad_row(load_xlam, _write(tmp_path / "y.json", rows), 1, 0, "answers", "not parameters of the tool")


def test_bad_xlam_duplicate_id_and_jsonl_bad_line(tmp_path):
    rows = _xlam_rows()
    rows.append(copy.deepcopy(rows[0]))
    _check_bad_row(load_xlam, _write(tmp_path / "x.json", rows), 2, 2, "id", "duplicate")
    lines = [json.dumps(r) for r in _xlam_rows()]
    lines.insert(1, '{"id": 7, "query": "broken')
    _check_bad_row(load_xlam, _write(tmp_path / "x.jsonl", lines, jsonl=True), 2, 1, "<line>", "malformed JSON")


def _toolace_rows():
    return json.loads((FIX / "toolace.json").read_text())


def test_bad_toolace_target_does_not_parse(tmp_path):
    rows = _toolace_rows()
    rows[0]["conversations"][5]["value"] = "[getStockQuote(symbol=AAPL MSFT)]"
    # The whole dialogue is one row: its examples go, the other rows still load.
    _check_bad_row(load_toolace, _write(tmp_path / "t.json", rows), 1, 0, "conversations[5].value", "does not parse")


def test_bad_toolace_no_tools_and_unknown_speaker(tmp_path):
    rows = _toolace_rows()
    rows[1]["system"] = "You are a helpful assistant."
    _check_bad_row(load_toolace, _write(tmp_path / "t.json", rows), 2, 1, "system", "no JSON list of tools")
    rows = _toolace_rows()
    rows[1]["conversations"][0]["from"] = "narrator"
    _check_bad_row(load_toolace, _write(tmp_path / "u.json", rows), 2, 1, "conversations[0].from", "unknown speaker")


def test_bad_toolace_call_to_unknown_tool(tmp_path):
    rows = _toolace_rows()
    rows[1]["conversations"][1]["value"] = "[get_forecast(city='Paris')]"
    path = _write(tmp_path / "t.json", rows)
    _check_bad_row(load_toolace, path, 2, 1, "conversations[1].value", "not one of the tools")


def _bfcl_copy(tmp_path: Path) -> Path:
    d = tmp_path / "bfcl"
    (d / "possible_answer").mkdir(parents=True)
    for rel in ("BFCL_v4_simple_python.json", "possible_answer/BFCL_v4_simple_python.json", "BFCL_v4_irrelevance.json"):
        (d / rel).write_text((FIX / "bfcl" / rel).read_text())
    return d


def _bfcl_loader(d: Path):
    def loader(path, **kw):
        return load_bfcl(["simple_python"], data_dir=d, **kw)

    return loader


def test_bad_bfcl_missing_possible_answer(tmp_path):
    d = _bfcl_copy(tmp_path)
    pa = d / "possible_answer" / "BFCL_v4_simple_python.json"
    pa.write_text(pa.read_text().splitlines()[1] + "\n")
    q = str(d / "BFCL_v4_simple_python.json")
    _check_bad_row(_bfcl_loader(d), q, 1, 0, "ground_truth", "no possible answer")


def test_bad_bfcl_malformed_line_and_bad_question(tmp_path):
    d = _bfcl_copy(tmp_path)
    q = d / "BFCL_v4_simple_python.json"
    lines = q.read_text().splitlines()
    q.write_text(lines[0][:40] + "\n" + lines[1] + "\n")
    _check_bad_row(_bfcl_loader(d), str(q), 1, 0, "<line>", "malformed JSON")
    row = json.loads(lines[1])
    row["question"] = "not a list"
    q.write_text(lines[0] + "\n" + json.dumps(row) + "\n")
    _check_bad_row(_bfcl_loader(d), str(q), 1, 1, "question", "non-empty list")


def test_bad_bfcl_ground_truth_not_lists(tmp_path):
    d = _bfcl_copy(tmp_path)
    pa = d / "possible_answer" / "BFCL_v4_simple_python.json"
    lines = pa.read_text().splitlines()
    row = json.loads(lines[0])
    row["ground_truth"][0]["calculate_triangle_area"]["base"] = 10  # not a list of possible values
    pa.write_text(json.dumps(row) + "\n" + lines[1] + "\n")
    q = str(d / "BFCL_v4_simple_python.json")
    _check_bad_row(
        _bfcl_loader(d), q, 1, 0, "ground_truth[0].calculate_triangle_area.base", "possible values must be a list"
    )


def _apibank_copy(tmp_path: Path, mutate) -> Path:
    d = tmp_path / "apibank"
    d.mkdir()
    rows = json.loads((FIX / "apibank" / "level-1-api.json").read_text())
    mutate(rows)
    (d / "level-1-api.json").write_text(json.dumps(rows))
    return d


def _apibank_loader(d: Path):
    def loader(path, **kw):
        return load_apibank(1, d, **kw)

    return loader


def test_bad_apibank_missing_expected_output(tmp_path):
    d = _apibank_copy(tmp_path, lambda rows: rows[0].pop("expected_output"))
    _check_bad_row(_apibank_loader(d), str(d / "level-1-api.json"), 1, 0, "expected_output", "missing")


def test_bad_apibank_request_does_not_parse(tmp_path):
    def mutate(rows):
        rows[1]["expected_output"] = "API-Request: [AddMeeting(token=<TOKEN>, meeting_topic='budget')]"

    d = _apibank_copy(tmp_path, mutate)
    _check_bad_row(_apibank_loader(d), str(d / "level-1-api.json"), 1, 1, "expected_output", "placeholder")


def test_bad_apibank_malformed_api_description(tmp_path):
    def mutate(rows):
        rows[0]["instruction"] = rows[0]["instruction"].replace('"GetUserToken",', '"GetUserToken"', 1)

    d = _apibank_copy(tmp_path, mutate)
    _check_bad_row(_apibank_loader(d), str(d / "level-1-api.json"), 1, 0, "instruction", "malformed JSON")


def test_bad_apibank_non_dict_params(tmp_path):
    def mutate(rows):
        instr = rows[1]["instruction"]
        head, descs = instr.split("API descriptions:\n")
        first, second = descs.split("\n")
        d0 = json.loads(first)
        d0["input_parameters"] = ["username", "password"]
        rows[1]["instruction"] = head + "API descriptions:\n" + json.dumps(d0) + "\n" + second

    d = _apibank_copy(tmp_path, mutate)
    _check_bad_row(
        _apibank_loader(d), str(d / "level-1-api.json"), 1, 1, "instruction (API description 0)", "must be an object"
    )


def test_whole_file_not_json_is_an_error(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("[{oops")
    with pytest.raises(BadRow, match="<file>"):
        load_xlam(str(p))


# ------------------------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "name, frag, optional",
    [
        ("str", {"type": "string"}, False),
        ("int", {"type": "integer"}, False),
        ("float", {"type": "float"}, False),
        ("bool", {"type": "boolean"}, False),
        ("dict", {"type": "dict"}, False),
        ("list", {"type": "array"}, False),
        ("tuple", {"type": "tuple"}, False),
        ("str, optional", {"type": "string"}, True),
        ("List[str]", {"type": "array", "items": {"type": "string"}}, False),
        ("List[int], optional", {"type": "array", "items": {"type": "integer"}}, True),
        ("Optional[float]", {"type": "float"}, True),
        ("Dict[str, Any]", {"type": "dict"}, False),
        ("Tuple[int, int]", {"type": "tuple", "items": {"type": "integer"}}, False),
        ("Union[int, float]", {"type": "float"}, False),
        ("object", {"type": "dict"}, False),
        ("number", {"type": "float"}, False),
    ],
)
def test_normalise_type(name, frag, optional):
    assert normalise_type(name) == (frag, optional)


def test_normalise_type_unknown():
    for bad in ("Callable", "frobnicator", "List[Callable]", 3):
        with pytest.raises(SchemaError):
            normalise_type(bad)


def test_safe_tool_name_and_flat_params():
    assert safe_tool_name("Market Trends API") == "Market_Trends_API"
    assert safe_tool_name("math.factorial") == "math.factorial"
    assert safe_tool_name("1Password lookup") == "_1Password_lookup"
    assert safe_tool_name("pkg.class") == "pkg.class_"
    for n in ("Market Trends API", "Get Stock/Market Info", "a-b c"):
        parse_calls(f"[{safe_tool_name(n)}(x=1)]")  # always a name our parser accepts
    t = normalise_tool({"name": "f", "parameters": {"a": {"type": "str"}, "b": {"type": "int", "default": 3}}})
    assert t["parameters"] == {
        "type": "dict",
        "properties": {"a": {"type": "string"}, "b": {"type": "integer", "default": 3}},
        "required": ["a"],
    }


def test_parse_calls_lenient():
    tools = [{"name": "f", "parameters": {"type": "dict", "properties": {"x": {}, "y": {}}, "required": []}}]
    assert parse_calls_lenient("[f(x=1)]", tools) == ([ToolCall("f", {"x": 1})], [])
    calls, notes = parse_calls_lenient("[f(1, y=1/4)]", tools)
    assert calls == [ToolCall("f", {"x": 1, "y": 0.25})] and len(notes) == 2
    assert parse_calls_lenient("[f(-2*3)]", tools)[0] == [ToolCall("f", {"x": -6})]
    with pytest.raises(ParseError):
        parse_calls_lenient("[g(1)]", tools)  # positional, unknown tool
    with pytest.raises(ParseError):
        parse_calls_lenient("[f(1, 2, 3)]", tools)  # more positional arguments than parameters
    with pytest.raises(ParseError):
        parse_calls_lenient("[f(x=y)]", tools)  # a name is still not a literal
    with pytest.raises(ParseError):
        parse_calls_lenient("[f(x=10**1000)]", tools)


def test_parse_api_request():
    assert parse_api_request("API-Request: [A(k='v', n=3)]") == ([ToolCall("A", {"k": "v", "n": 3})], [])
    calls, notes = parse_api_request("API-Request: [A(city=New York, NY, date=2034-01-02, n=5)]")
    assert calls == [ToolCall("A", {"city": "New York, NY", "date": "2034-01-02", "n": 5})] and notes


# ------------------------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def bfcl_all():
    reports: list[LoadReport] = []
    ex = load_bfcl(report_list=reports)
    return ex, reports


@pytest.fixture(scope="module")
def bfcl_unused_all():
    reports: list[LoadReport] = []
    ex = load_bfcl_unused(report_list=reports)
    return ex, reports


def test_bfcl_simple_python_400():
    assert len(load_bfcl(["simple_python"])) == 400


def test_bfcl_every_v3_category_loads_without_skips(bfcl_all):
    ex, reports = bfcl_all
    for r in reports:
        print(r.summary())
    assert all(not r.skipped for r in reports), [r.summary() for r in reports if r.skipped]
    counts = {c: sum(e.category == c for e in ex) for c in V3_CATEGORIES}
    print(counts)
    assert counts == BFCL_COUNTS
    assert len({e.id for e in ex}) == len(ex)
    assert all(e.id == f"bfcl/{e.meta['bfcl_id']}" and e.source == "bfcl" for e in ex)


def test_bfcl_unused_sets(bfcl_unused_all):
    ex, reports = bfcl_unused_all
    for r in reports:
        print(r.summary())
    assert all(not r.skipped for r in reports)
    assert {c: sum(e.category == c for e in ex) for c in UNUSED_CATEGORIES} == UNUSED_COUNTS
    assert all(e.source == "bfcl_unused" and e.id.startswith("bfcl_unused/") for e in ex)
    hint = " Note that the provided function is in Python 3 syntax."
    assert all(t["description"].endswith(hint) for e in ex for t in e.tools)
    for e in ex:
        names = {t["name"] for t in e.tools}
        assert e.target and all(c.name in names for c in e.target), e.id
    by_id = {e.id: e for e in ex}
    # 1/6 folded, positional argument named.
    assert by_id["bfcl_unused/exec_multiple_0"].target[0].arguments["p"] == pytest.approx(1 / 6)
    assert by_id["bfcl_unused/exec_parallel_multiple_18"].target[0] == ToolCall(
        "calculate_mean", {"numbers": [1, 3, 4, 6, 8]}
    )


def test_bfcl_target_names_are_tool_names(bfcl_all):
    ex, _ = bfcl_all
    for e in ex:
        names = {t["name"] for t in e.tools}
        for c in e.target:
            assert c.name in names, (e.id, c.name)
        if e.category in AST_CATEGORIES:
            assert e.target, e.id
            assert set(e.meta) >= {"ground_truth", "bfcl_id", "bfcl_category"}
        elif e.category in ("irrelevance", "live_irrelevance"):
            assert e.target == []
        elif e.category == "live_relevance":
            assert e.target == [] and e.meta["relevance"] is True


def test_bfcl_multi_turn_meta(bfcl_all):
    ex, _ = bfcl_all
    mt = [e for e in ex if e.category in MULTI_TURN_CATEGORIES]
    assert len(mt) == 800
    for e in mt:
        assert set(e.meta) >= {
            "bfcl_id", "bfcl_category", "involved_classes", "initial_config", "turns", "ground_truth",
            "missed_function", "missed_function_docs", "path", "long_context",
        }  # fmt: skip
        assert e.messages == e.meta["turns"][0]
        assert e.meta["long_context"] == (e.category == "multi_turn_long_context")
        assert "target_parse_error" not in e.meta, (e.id, e.meta.get("target_parse_error"))
        missed = {d["name"] for docs in e.meta["missed_function_docs"].values() for d in docs}
        assert not missed & {t["name"] for t in e.tools}
        # The first turn's calls, parsed; a first turn without calls (miss_param/miss_func) → no call.
        assert len(e.target) == len(e.meta["ground_truth"][0])
    by_id = {e.id: e for e in mt}
    assert by_id["bfcl/multi_turn_miss_func_0"].meta["missed_function"] == {"3": ["sort"]}
    assert [d["name"] for d in by_id["bfcl/multi_turn_miss_func_0"].meta["missed_function_docs"]["3"]] == ["sort"]
    assert by_id["bfcl/multi_turn_base_0"].target[0] == ToolCall("cd", {"folder": "document"})


def test_bfcl_preprocessing_matches_bfcl_eval(bfcl_all, monkeypatch):
    """Tools, first-turn messages and withheld docs equal what bfcl_eval's own loader builds."""
    u = pytest.importorskip("bfcl_eval.utils")
    orig = u.load_file
    # bfcl's loader takes a file lock under the package folder by default; reading needs none.
    monkeypatch.setattr(u, "load_file", lambda p, sort_by_id=False, use_lock=True: orig(p, sort_by_id, use_lock=False))
    ex, _ = bfcl_all
    mine = {e.meta["bfcl_id"]: e for e in ex}
    for cat in V3_CATEGORIES:
        for ref in u.load_dataset_entry(cat):
            e = mine[ref["id"]]
            assert e.tools == ref["function"], e.id
            assert e.messages == ref["question"][0], e.id
            if "missed_function" in ref:
                assert e.meta["missed_function_docs"] == ref["missed_function"], e.id
    # The unused sets: the same function bfcl applies, on the raw docs.
    data = bfcl_mod.bfcl_data_dir() / "unused_datasets" / "question"
    for cat in UNUSED_CATEGORIES + ("simple_java", "simple_javascript"):
        base = data if cat in UNUSED_CATEGORIES else bfcl_mod.bfcl_data_dir()
        for line in (base / f"BFCL_v4_{cat}.json").read_text().splitlines():
            entry = json.loads(line)
            ref = u._func_doc_language_specific_pre_processing(copy.deepcopy(entry["function"]), cat)
            assert preprocess_function_docs(entry["function"], cat) == ref, entry["id"]
    from bfcl_eval.constants.executable_backend_config import MULTI_TURN_FUNC_DOC_FILE_MAPPING

    assert bfcl_mod.MULTI_TURN_FUNC_DOC_FILE_MAPPING == MULTI_TURN_FUNC_DOC_FILE_MAPPING


@pytest.fixture()
def bfcl_ast_checker():
    """bfcl's ast_checker, importable without the SDK-heavy model_config (stubbed, then removed again)."""
    stub_name = "bfcl_eval.constants.model_config"
    checker_name = "bfcl_eval.eval_checker.ast_eval.ast_checker"
    saved = {n: sys.modules.get(n) for n in (stub_name, checker_name)}
    if saved[stub_name] is None:

        class _Cfg:
            underscore_to_dot = False

        class _Mapping(dict):
            def __missing__(self, key):
                return _Cfg()

        stub = types.ModuleType(stub_name)
        stub.MODEL_CONFIG_MAPPING = _Mapping()
        sys.modules[stub_name] = stub
    try:
        import importlib

        mod = importlib.import_module(checker_name)
        from bfcl_eval.constants.enums import Language

        yield lambda e: mod.ast_checker(
            e.tools, [c.to_bfcl() for c in e.target], e.meta["ground_truth"], Language.PYTHON, e.category, "x"
        )
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def test_bfcl_ast_targets_pass_bfcl_checker(bfcl_all, bfcl_ast_checker):
    """Every AST target is accepted by bfcl's own checker, except the items whose ground truth it rejects."""
    ex, _ = bfcl_all
    failing, unanswerable = [], []
    for e in ex:
        if e.category not in AST_CATEGORIES:
            continue
        if e.meta.get("unanswerable"):
            unanswerable.append(e.id)
            continue
        r = bfcl_ast_checker(e)
        if not r["valid"]:
            failing.append((e.id, r["error"]))
    assert not failing, failing[:5]
    print("bfcl ground truth its own checker rejects:", unanswerable)
    assert sorted(unanswerable) == sorted(
        ["bfcl/live_simple_106-63-0", "bfcl/live_simple_112-68-0", "bfcl/live_multiple_862-181-3",
         "bfcl/live_multiple_964-207-0"]
    )  # fmt: skip


@needs_apibank
def test_apibank_real_counts():
    counts = {}
    for lv, expected in ((1, 399), (2, 135), ("train", 903)):
        reports: list[LoadReport] = []
        ex = load_apibank(lv, report_list=reports)
        print(reports[0].summary())
        counts[lv] = len(ex)
        assert len(ex) == expected
        assert len({e.id for e in ex}) == len(ex)
        for e in ex:
            names = {t["name"] for t in e.tools}
            undescribed = set(e.meta.get("undescribed_target_tools", []))
            assert all(c.name in names or c.name in undescribed for c in e.target), e.id
            assert e.target and e.messages[-1]["role"] in ("user", "assistant", "tool")
        if lv == "train":
            # Every skip explained: 2 placeholder values, 2 calls to APIs the dialogue never describes.
            skipped = {(b.row, b.field, b.reason.split(":")[0]) for b in reports[0].skipped}
            assert {(r, f) for r, f, _ in skipped} == {(r, "output") for r in (157, 491, 559, 672)}
        elif lv == 2:
            assert sum("undescribed_target_tools" in e.meta for e in ex) == 14
        else:
            assert not reports[0].skipped
    print(counts)


def test_default_apibank_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ITOOL_APIBANK_DIR", str(tmp_path))
    assert default_apibank_dir() == tmp_path
    monkeypatch.delenv("ITOOL_APIBANK_DIR")
    # the default is the package's own copy: nothing outside the clone
    root = Path(__file__).resolve().parents[1]
    assert default_apibank_dir() == root / "itool_core" / "data" / "api_bank"
    assert (default_apibank_dir() / "LICENSE").is_file()


@needs_apibank
def test_default_training_set():
    ex, reports = load_default_training_set()
    assert {e.source for e in ex} == {"bfcl_unused", "apibank"}
    assert sum(e.category == "apibank_train" for e in ex) == 903
    assert sum(e.source == "bfcl_unused" for e in ex) == sum(UNUSED_COUNTS.values())
    assert len(reports) == len(UNUSED_CATEGORIES) + 1


# ---------------------------------------------------------------------------------------------- round trip


def test_schema_round_trip(tmp_path, bfcl_all, bfcl_unused_all):
    ex: list[Example] = []
    ex += load_toolace(str(FIX / "toolace.json"))
    ex += load_xlam(str(FIX / "xlam.json"))
    ex += load("apibank", str(FIX / "apibank"), level="1,train")[0]
    # Real data: a slice of every BFCL category (multi-turn meta is the largest and most nested).
    for c in V3_CATEGORIES:
        ex += [e for e in bfcl_all[0] if e.category == c][:20]
    ex += bfcl_unused_all[0][::25]
    ref = write_table([e.to_row() for e in ex], tmp_path / "examples.parquet", schemas.EXAMPLES)
    assert ref.rows == len(ex)
    table = read_table(ref, schemas.EXAMPLES)
    back = [Example.from_row(r) for r in table.to_pylist()]
    assert back == ex
    rows = table.to_pylist()
    assert all(r["n_calls"] == len(e.target) and r["n_tools"] == len(e.tools) for r, e in zip(rows, ex))
