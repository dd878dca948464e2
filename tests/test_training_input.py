"""Training-file input (``itool data import`` and the loaders): every bad input is a clear message naming the
file / row / field, good rows still load, skipped rows are counted, an input with no good row is an error,
and nothing ends in a traceback.  Real files in tmp_path, the real CLI."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from itool_core.artifacts import read_table
from itool_core.calls import MAX_TEXT_CHARS, ParseError
from itool_core.cli import main
from itool_core.data.normalise import parse_calls_lenient
from itool_core.data.records import BadRow, LoadReport
from itool_core.data.toolace import load_toolace, toolace_examples

FIX = Path(__file__).parent / "fixtures"


def _rows() -> list[dict]:
    return json.loads((FIX / "toolace.json").read_text())


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _import(src, out, capsys, fmt="toolace"):
    rc = main(["data", "import", "--format", fmt, str(src), "-o", str(out)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _ids(path) -> list[str]:
    return read_table(path).column("id").to_pylist()


@pytest.mark.parametrize("shape", ["json", "jsonl"])
@pytest.mark.parametrize("bom", [b"\xef\xbb\xbf", b"\xef\xbb\xbf\n  "])
def test_byte_order_mark_loses_no_row(tmp_path, capsys, shape, bom):
    text = json.dumps(_rows()) if shape == "json" else _jsonl(_rows())
    src = tmp_path / f"t.{shape}"
    src.write_bytes(bom + text.encode())
    rc, out, err = _import(src, tmp_path / "o.parquet", capsys)
    assert rc == 0, err
    off = bom.count(b"\n") if shape == "jsonl" else 0  # a JSON Lines row is named by its line number
    assert _ids(tmp_path / "o.parquet") == [f"toolace/{off}/1", f"toolace/{off}/5", f"toolace/{1 + off}/1"]
    assert "none skipped" in err


def test_non_utf8_json_list_is_one_clear_error(tmp_path, capsys):
    src = tmp_path / "latin1.json"
    src.write_bytes(json.dumps(_rows(), ensure_ascii=False).replace("Paris", "Pär\u00efs").encode("latin-1"))
    rc, out, err = _import(src, tmp_path / "o.parquet", capsys)
    assert rc == 2 and "Traceback" not in err
    assert f"{src}: row -: field '<file>': not UTF-8 text (byte 0xe4 at offset" in err
    assert not (tmp_path / "o.parquet").exists()


def test_non_utf8_line_of_json_lines_is_one_bad_row(tmp_path, capsys):
    lines = _jsonl(_rows()).encode().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"Paris", b"P\xe4ris")
    src = tmp_path / "t.jsonl"
    src.write_bytes(b"".join(lines))
    rc, out, err = _import(src, tmp_path / "o.parquet", capsys)
    assert rc == 0
    assert _ids(tmp_path / "o.parquet") == ["toolace/0/1", "toolace/0/5"]
    assert "2 rows loaded, 1 skipped" in err
    assert f"{src}: row 1: field '<line>': not UTF-8 text (byte 0xe4" in err


def test_folder_as_input_is_a_clear_error(tmp_path, capsys):
    rc, out, err = _import(tmp_path, tmp_path / "o.parquet", capsys)
    assert rc == 2 and "is a folder" in err and str(tmp_path) in err and "Traceback" not in err


@pytest.mark.parametrize("out", ["file/o.parquet", "file/sub/o.parquet", "folder"])
def test_output_under_a_file_or_onto_a_folder_fails_before_loading(tmp_path, capsys, out):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    src = tmp_path / "t.json"
    src.write_text(json.dumps(_rows()))
    rc, _, err = _import(src, tmp_path / out, capsys)
    assert rc == 2 and str(tmp_path / out) in err and "Traceback" not in err
    assert "is a file, not a folder" in err or "is a folder" in err
    assert "rows loaded" not in err  # refused before the load


def test_output_in_a_read_only_folder_is_a_clear_error(tmp_path, capsys):
    src = tmp_path / "t.json"
    src.write_text(json.dumps(_rows()))
    # /sys is read-only even for root; a chmod-ed folder only stops other users
    rc, _, err = _import(src, "/sys/itool-test/o.parquet", capsys)
    assert rc == 2 and "/sys/itool-test/o.parquet" in err and "Traceback" not in err
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, _, err = _import(src, ro / "o.parquet", capsys)
        if os.geteuid() != 0:
            assert rc == 2 and "not writable" in err
        else:
            assert rc == 0  # root writes anyway: not an error then
    finally:
        ro.chmod(0o755)


def test_unreachable_hub_id_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    rc, _, err = _import("nobody-xyz/no-such-dataset", tmp_path / "o.parquet", capsys)
    assert rc == 2 and "Traceback" not in err
    assert "hf://nobody-xyz/no-such-dataset: row -: field '<source>': hub dataset cannot be loaded" in err


@pytest.mark.parametrize(
    "value",
    [
        "0x" + "f" * 5000,  # an int past the int-to-str limit
        "9" * 5000,  # the same in decimal: a syntax error
        "1e999",
        "[" * 400 + "1" + "]" * 400,  # nesting
        "'" + "x" * (MAX_TEXT_CHARS + 10) + "'",  # longer than the parser's limit
    ],
)
def test_huge_target_literal_is_that_rows_failure(tmp_path, capsys, value):
    rows = _rows()
    rows[1]["conversations"][1]["value"] = f"[get_weather(city={value})]"
    src = tmp_path / "t.json"
    src.write_text(json.dumps(rows))
    rc, _, err = _import(src, tmp_path / "o.parquet", capsys)
    assert rc == 0 and "Traceback" not in err
    assert _ids(tmp_path / "o.parquet") == ["toolace/0/1", "toolace/0/5"]
    assert "1 skipped" in err and f"{src}: row 1: field 'conversations[1].value'" in err


def test_row_without_assistant_turn_is_reported_text_only_row_counted(tmp_path, capsys):
    rows = _rows()
    rows.append({"system": rows[1]["system"], "conversations": [{"from": "user", "value": "Hello?"}]})
    src = tmp_path / "t.json"
    src.write_text(json.dumps(rows))
    rc, _, err = _import(src, tmp_path / "o.parquet", capsys)
    assert rc == 0
    assert f"{src}: row 3: field 'conversations': no assistant turn" in err and "1 skipped" in err
    assert "1 row(s) gave no example (nothing to learn from): rows 2" in err  # the text-only dialogue


def test_zero_good_rows_is_an_error_not_an_empty_table(tmp_path, capsys):
    rows = [{"system": "no tools here", "conversations": [{"from": "user", "value": "hi"}]}] * 3
    for name, text in (
        ("bad.json", json.dumps(rows)),
        ("bad.jsonl", _jsonl(rows)),
        ("empty.jsonl", "\n\n"),
        ("garbage.jsonl", "not json\n{also not\n"),
    ):
        src = tmp_path / name
        src.write_text(text)
        rc, out, err = _import(src, tmp_path / "o.parquet", capsys)
        assert rc == 2 and "no good rows" in err and "Traceback" not in err, (name, err)
        assert not (tmp_path / "o.parquet").exists()
    assert "no good rows (2 skipped; first:" in err


def test_call_start_check_is_linear_on_long_whitespace(tmp_path):
    rows = _rows()
    for pad in (" " * 200_000, "[" + " " * 200_000, "[ a" + " " * 200_000, "\t" * 100_000 + "[" + " \n" * 50_000):
        rows[1]["conversations"][1]["value"] = pad
        t = time.perf_counter()
        assert toolace_examples(rows[1], 1) == []  # a text turn, found so in one pass
        assert time.perf_counter() - t < 2.0, repr(pad[:5])


def test_lenient_parser_has_the_strict_length_limit():
    # positional arguments: the strict parser refuses them, the lenient one would name them — not past the limit
    tools = [{"name": "f", "parameters": {"type": "dict", "properties": {"a": {"type": "string"}}}}]
    assert parse_calls_lenient("[f('x')]", tools)[0][0].arguments == {"a": "x"}
    long = "[f('" + "x" * MAX_TEXT_CHARS + "')]"
    t = time.perf_counter()
    with pytest.raises(ParseError, match=f"longer than {MAX_TEXT_CHARS}"):
        parse_calls_lenient(long, tools)
    assert time.perf_counter() - t < 1.0


def test_loader_level_reports_and_strict_mode(tmp_path):
    rows = _rows()
    rows[1]["conversations"][1]["value"] = "[get_weather(city=0x" + "f" * 5000 + ")]"
    src = tmp_path / "t.json"
    src.write_text(json.dumps(rows))
    reports: list[LoadReport] = []
    assert len(load_toolace(str(src), report_list=reports)) == 2
    (bad,) = reports[0].skipped
    assert (bad.file, bad.row, bad.field) == (str(src), 1, "conversations[1].value")
    assert "int-to-str limit" in bad.reason
    with pytest.raises(BadRow, match="row 1"):
        load_toolace(str(src), strict=True)
