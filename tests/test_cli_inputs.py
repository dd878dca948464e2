"""Every command checks its inputs before it loads anything: a missing path, an offline hub id, a bad format → exit
2 with one line naming the flag and the value, no traceback (itool_core/cli/checks.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from itool_core.artifacts import write_table
from itool_core.cli import main
from itool_core.data.replay import REPLAY_BUFFER
from itool_core.schemas import EXAMPLES

HUB_ID = "no-such-org/no-such-model-xyz"
M = "smollm2-135m-instruct"  # the embedded model: a valid --model


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A text file posing as Parquet, an examples table (the wrong schema for a buffer), a folder that is no
    model, a file under which nothing can be created; the hub switched off as on this machine."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    text = tmp_path / "notes.parquet"
    text.write_text("not parquet\n")
    examples = tmp_path / "examples.parquet"
    write_table([], examples, EXAMPLES)
    buffer = tmp_path / "buffer.parquet"
    write_table([], buffer, REPLAY_BUFFER)
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    return {
        "buffer": str(buffer),
        "text": str(text),
        "examples": str(examples),
        "folder": str(empty),
        "missing": str(tmp_path / "nope"),
    }


def _fails_with_one_line(capsys, argv: list[str], *must: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, (argv, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for m in must:
        assert m in err, (m, err)
    return err


CASES = [
    # itool eval
    (["eval", "--model", "{missing}"], ["--model", "{missing}", "no such folder"]),
    (["eval", "--model", HUB_ID], ["--model", HUB_ID, "HF_HUB_OFFLINE"]),
    (["eval", "--model", "{text}"], ["--model", "is a file"]),
    (["eval", "--model", "{folder}"], ["--model", "config.json"]),
    (["eval", "--adapter", "{folder}"], ["--adapter", "adapter_config.json"]),
    (["eval", "--apibank-dir", "{missing}"], ["--apibank-dir", "{missing}"]),
    (["eval", "--engine", "openai", "--engine-url", "localhost:8000"], ["--engine-url", "localhost:8000"]),
    # itool mine
    (["mine", "--buffer", "{missing}", "--model", M, "-o", "{folder}/p.parquet"], ["--buffer", "{missing}", "no such"]),
    (["mine", "--buffer", "{text}", "--model", M, "-o", "{folder}/p.parquet"], ["--buffer", "not a Parquet file"]),
    (["mine", "--buffer", "{examples}", "--model", M, "-o", "{folder}/p.parquet"], ["--buffer", "schema tag"]),
    (["mine", "--buffer", "{buffer}", "--model", HUB_ID, "-o", "{folder}/p.parquet"], ["--model", HUB_ID]),
    (["mine", "--buffer", "{buffer}", "--model", M, "-o", "{text}/p.parquet"], ["{text}", "is a file"]),
    # itool buffer
    (["buffer", "refresh", "--pool", "{missing}", "--model", "{missing}", "-o", "b.parquet"], ["--pool", "{missing}"]),
    (["buffer", "refresh", "--pool", "{examples}", "--model", HUB_ID, "-o", "b.parquet"], ["--model", HUB_ID]),
    (["buffer", "refresh", "--pool", "{examples}", "--model", "{folder}", "-o", "{text}/b.parquet"], ["--model"]),
    (["buffer", "select", "{examples}", "-o", "s.parquet"], ["buffer", "{examples}", "schema tag"]),
    # itool warmup
    (["warmup", "--data", "{missing}", "--out", "{folder}/w"], ["--data", "{missing}"]),
    (["warmup", "--data", "{text}", "--out", "{folder}/w"], ["--data", "not a Parquet file"]),
    (["warmup", "--data", "default", "--model", HUB_ID, "--out", "{folder}/w"], ["--model", HUB_ID, "HF_HUB_OFFLINE"]),
    (["warmup", "--data", "default", "--model", "{missing}", "--out", "{folder}/w"], ["model", "{missing}"]),
    # itool serve
    (["serve", "gguf", "{missing}"], ["model", "{missing}", "no such folder"]),
    (["serve", "gguf", HUB_ID], ["model", HUB_ID]),
    (["serve", "start", "{folder}"], ["model", "config.json"]),
    (["serve", "start", "smollm2-135m-instruct", "--port", "70000"], ["--port", "70000"]),
]


@pytest.mark.parametrize(("argv", "must"), CASES, ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _) in enumerate(CASES)])
def test_bad_input_is_one_line_naming_the_flag(files, capsys, argv, must):
    argv = [a.format(**files) for a in argv]
    _fails_with_one_line(capsys, argv, *[m.format(**files) for m in must])


def test_checks_come_before_anything_is_loaded(tmp_path):
    """As a user runs it: exit 2, one line, and neither torch nor transformers imported (checked from inside)."""
    code = (
        "import sys; from itool_core.cli import main; rc = main(sys.argv[1:]); "
        "print(json.dumps({'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules}), "
        "file=sys.stdout); sys.exit(rc)"
    )
    for argv in (["eval", "--model", str(tmp_path / "nope")], ["mine", "--buffer", "x", "--model", M, "-o", "y"]):
        r = subprocess.run(
            [sys.executable, "-c", "import json; " + code, *argv],
            capture_output=True,
            text=True,
            env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
            timeout=120,
        )
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert json.loads(r.stdout.strip().splitlines()[-1]) == {"torch": False, "transformers": False}


# ------------------------------------------------------------------------------------------------ size limits


def _xlam_row(i: int, query: str) -> dict:
    tools = [{"name": "add", "description": "add", "parameters": {"a": {"type": "int"}, "b": {"type": "int"}}}]
    answers = [{"name": "add", "arguments": {"a": i, "b": 2}}]
    return {"id": i, "query": query, "tools": json.dumps(tools), "answers": json.dumps(answers)}


@pytest.mark.parametrize("suffix", ["json", "jsonl"])
def test_import_skips_an_oversized_field_and_keeps_the_other_rows(tmp_path, capsys, suffix):
    from itool_core.data.records import MAX_FIELD_CHARS

    rows = [_xlam_row(0, "Add 0 and 2"), _xlam_row(1, "x" * (MAX_FIELD_CHARS + 1)), _xlam_row(2, "Add 2 and 2")]
    src = tmp_path / f"xlam.{suffix}"
    src.write_text(json.dumps(rows) if suffix == "json" else "\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "x.parquet"
    assert main(["data", "import", "--format", "xlam", str(src), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["rows"] == 2
    assert f"{src}: row 1: field 'query'" in captured.err and "field limit" in captured.err


def test_data_stats_skips_a_large_row_by_name_and_stays_fast(tmp_path, capsys):
    import time

    from itool_core.calls import ToolCall
    from itool_core.data.records import MAX_FIELD_CHARS, Example

    tools = [{"name": "f", "description": "d", "parameters": {"type": "dict", "properties": {}}}]

    def ex(i: int, text: str) -> dict:
        return Example(f"e{i}", "t", "simple", tools, [{"role": "user", "content": text}], [ToolCall("f", {})]).to_row()

    big = tmp_path / "big.parquet"
    write_table([ex(0, "hi"), ex(1, "y " * (25 * MAX_FIELD_CHARS)), ex(2, "hello")], big, EXAMPLES)  # a 50 MB field
    t0 = time.perf_counter()
    assert main(["data", "stats", str(big), "--json"]) == 0
    wall = time.perf_counter() - t0
    stats = json.loads(capsys.readouterr().out)
    assert stats["rows"] == 2 and stats["tokens"]["max"] < 1000
    assert [(o["row"], o["id"], o["field"]) for o in stats["oversized_rows"]] == [(1, "e1", "messages")]
    # tokenising the 50 MB field alone takes minutes here; reading and measuring it, seconds
    assert wall < 60, wall
