"""The data CLI as a user runs it: import → Parquet → stats."""

import json
import subprocess
import sys

from itool_core.cli import main


def test_data_import_and_stats_on_bfcl_simple_python(tmp_path, capsys):
    out = tmp_path / "simple.parquet"
    assert main(["data", "import", "--format", "bfcl", "--categories", "simple_python", "-o", str(out)]) == 0
    ref = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ref["rows"] == 400 and ref["schema"] == "examples/1"
    assert main(["data", "stats", str(out), "--max-length", "2048"]) == 0
    text = capsys.readouterr().out
    assert "rows: 400" in text and "simple_python" in text and "400" in text
    assert "token length" in text and "n_tools" in text
    assert main(["data", "stats", str(out), "--json", "--no-tokens"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["rows"] == 400 and stats["by_category"] == {"simple_python": 400}


def test_bad_rows_are_reported_and_strict_fails(tmp_path):
    src = tmp_path / "xlam.json"
    src.write_text(json.dumps([
        {"id": 1, "query": "Add 1 and 2", "tools": json.dumps([{"name": "add", "description": "add",
                                                               "parameters": {"a": {"type": "int"}, "b": {"type": "int"}}}]),
         "answers": json.dumps([{"name": "add", "arguments": {"a": 1, "b": 2}}])},
        {"id": 2, "query": "broken", "tools": "[not json", "answers": "[]"},
    ]))
    out = tmp_path / "x.parquet"
    cmd = [sys.executable, "-m", "itool_core.cli", "data", "import", "--format", "xlam", str(src), "-o", str(out)]
    ok = subprocess.run(cmd, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.strip().splitlines()[-1])["rows"] == 1
    assert "row 1" in ok.stderr and "'tools'" in ok.stderr and str(src) in ok.stderr
    strict = subprocess.run(cmd[:-2] + ["--strict", "-o", str(tmp_path / "y.parquet")], capture_output=True, text=True)
    assert strict.returncode == 2 and "row 1" in strict.stderr and "Traceback" not in strict.stderr
    assert not (tmp_path / "y.parquet").exists()


def test_inspect_runs(tmp_path, capsys):
    """`itool inspect`: model, data statistics, one BFCL answer (tiny model here for speed)."""
    from itool_core.models import save_policy, tiny_model

    model, tok = tiny_model()
    folder = save_policy(model, tok, tmp_path / "tiny")
    assert main(["inspect", "--model", str(folder), "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "default training set" in out and "API-Bank level-1: 399 items" in out and "level-2: 135 items" in out
    assert "[inspect] BFCL simple_python_0" in out.replace("bfcl/", "") and "[inspect] parsed calls:" in out


def test_itool_run_rejects_a_bad_key_before_any_stage(capsys, monkeypatch):
    """`itool run` = the flow; a misspelt key fails in the command line, before Prefect or a stage starts."""
    import flows.iterate
    from flows.cli import main as itool

    def never(**kw):  # pragma: no cover - reaching the flow is the failure
        raise AssertionError("the flow must not start")

    monkeypatch.setattr(flows.iterate, "iterate", never)
    assert itool(["run", "--profile", "demo", "--set", "mcts.simulatons=3"]) == 2
    assert "mcts.simulatons" in capsys.readouterr().err
    assert itool(["demo", "--set", "evaluation.limit=0"]) == 2
    assert "evaluation.limit" in capsys.readouterr().err
