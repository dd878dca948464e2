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
    src.write_text(
        json.dumps(
            [
                {
                    "id": 1,
                    "query": "Add 1 and 2",
                    "tools": json.dumps(
                        [
                            {
                                "name": "add",
                                "description": "add",
                                "parameters": {"a": {"type": "int"}, "b": {"type": "int"}},
                            }
                        ]
                    ),
                    "answers": json.dumps([{"name": "add", "arguments": {"a": 1, "b": 2}}]),
                },
                {"id": 2, "query": "broken", "tools": "[not json", "answers": "[]"},
            ]
        )
    )
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


def test_no_core_module_outside_the_cli_package_imports_argparse():
    """Command-line code lives in itool_core/cli/; the library modules are plain functions."""
    import ast
    from pathlib import Path

    core = Path(__file__).resolve().parents[1] / "itool_core"
    offenders = []
    for path in core.rglob("*.py"):
        if path.relative_to(core).parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n.split(".")[0] == "argparse" for n in names):
                offenders.append(f"{path.relative_to(core)}:{node.lineno}")
    assert offenders == []
    assert not (core / "mcts" / "cli.py").exists()


def test_set_overrides_any_key_of_itool_config(capsys):
    import yaml

    from itool_core.config import profile

    assert (
        main(
            [
                "config",
                "--profile",
                "demo",
                "--set",
                "mcts.simulations=5",
                "--set",
                "sft.mode=mixed",
                "--set",
                "evaluation.categories=[irrelevance]",
            ]
        )
        == 0
    )
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert (cfg["profile"], cfg["mcts"]["simulations"], cfg["sft"]["mode"], cfg["evaluation"]["categories"]) == (
        "demo",
        5,
        "mixed",
        ["irrelevance"],
    )
    assert cfg["mcts"]["k"] == profile("demo").mcts.k
    assert main(["config", "--set", "mcts.simulatons=5"]) == 2
    err = capsys.readouterr().err
    assert "'mcts.simulatons'" in err and "mcts.simulations" in err and "Traceback" not in err
    assert main(["config", "--set", "buffer.alpha=20"]) == 2  # a fraction, not a percent
    assert "buffer.alpha" in capsys.readouterr().err


def test_set_without_a_value_is_a_usage_error(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        main(["config", "--set", "mcts.simulations"])
    assert e.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err


def test_mine_alpha_is_a_fraction_with_the_configs_default(tmp_path, capsys):
    import pytest

    from itool_core.cli import build_parser
    from itool_core.cli.common import resolve_config
    from itool_core.cli.mine import mine_overrides
    from itool_core.config import profile

    p = build_parser()

    def resolved(*argv):
        a = p.parse_args(["mine", "--model", "m", "--buffer", "b.parquet", "-o", "pairs.parquet", *argv])
        return resolve_config(a, mine_overrides(a))

    quick = profile("quick")
    assert resolved() == quick  # every search setting defaults to the config's
    cfg = resolved("--alpha", "0.3", "--skip-hardest", "0.25", "--simulations", "2", "--tools", "json")
    assert (cfg.buffer.alpha, cfg.buffer.skip_hardest, cfg.mcts.simulations) == (0.3, 0.25, 2)
    assert cfg.sft.tools_style == cfg.buffer.tools_style == "json"
    f = tmp_path / "exp.yaml"
    f.write_text("profile: paper\nbuffer:\n  alpha: 0.1\n")
    cfg = resolved("--config", str(f))  # itool mine honours --config
    assert (cfg.buffer.alpha, cfg.mcts.simulations, cfg.engine) == (0.1, profile("paper").mcts.simulations, "openai")
    assert resolved("--profile", "demo", "--set", "mcts.simulations=3").mcts.simulations == 3
    with pytest.raises(SystemExit):
        p.parse_args(["mine", "--model", "m", "--buffer", "b", "-o", "o", "--alpha", "20"])  # a percent
    assert "20 % is 0.2" in capsys.readouterr().err


def test_choices_come_from_the_registries():
    from itool_core.cli import build_parser
    from itool_core.config import TOOLS_STYLES
    from itool_core.registry import ENGINES, LOADERS

    def choices(*path):
        p = build_parser()
        for name in path:
            sub = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction")
            p = sub.choices[name]
        return {a.dest: a.choices for a in p._actions}

    assert set(choices("data", "import")["format"]) == set(LOADERS.names()) - {"examples"}
    assert choices("eval")["engine"] == ENGINES.names() and choices("mine")["engine"] == ENGINES.names()
    assert tuple(choices("mine")["tools"]) == TOOLS_STYLES


def test_buffer_refresh_then_mine_on_a_tiny_model(tmp_path, capsys):
    """`itool mine` end to end: the config's search settings (here --set and shorthands) reach the search."""
    from itool_core.artifacts import write_table
    from itool_core.calls import ToolCall
    from itool_core.data.records import Example
    from itool_core.models import save_policy, tiny_model
    from itool_core.schemas import EXAMPLES

    tools = [
        {
            "name": "convert",
            "description": "Convert an amount between currencies",
            "parameters": {
                "type": "dict",
                "properties": {"amount": {"type": "number"}, "to": {"type": "string"}},
                "required": ["amount", "to"],
            },
        }
    ]
    exs = [
        Example(
            f"p{i}",
            "synthetic",
            "simple",
            tools,
            [{"role": "user", "content": f"Convert {i} to euros."}],
            [ToolCall("convert", {"amount": i, "to": "EUR"})],
        )
        for i in range(4)
    ]
    write_table([e.to_row() for e in exs], tmp_path / "pool.parquet", EXAMPLES)
    model, tok = tiny_model(seed=3)
    folder = save_policy(model, tok, tmp_path / "policy")
    assert (
        main(
            [
                "buffer",
                "refresh",
                "--model",
                str(folder),
                "--pool",
                str(tmp_path / "pool.parquet"),
                "-o",
                str(tmp_path / "buf.parquet"),
                "--set",
                "buffer.dtype=float32",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert "float32" in capsys.readouterr().out
    rc = main(
        [
            "mine",
            "--model",
            str(folder),
            "--buffer",
            str(tmp_path / "buf.parquet"),
            "-o",
            str(tmp_path / "pairs.parquet"),
            "--alpha",
            "0.5",
            "--skip-hardest",
            "0",
            "--simulations",
            "1",
            "--k",
            "2",
            "--set",
            "policy.max_step_tokens=8",
            "--set",
            "policy.max_rollout_tokens=8",
            "--threads",
            "1",
            "--engine",
            "hf",  # the profile's vLLM does not take the tiny model (head_dim 16)
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n_trees"] == 2 and (tmp_path / "pairs.parquet").exists()  # α = 0.5 of 4 rows


def test_eval_on_a_tiny_model_uses_the_resolved_evaluation_settings(tmp_path, capsys):
    from itool_core.models import save_policy, tiny_model

    model, tok = tiny_model(seed=2)
    folder = save_policy(model, tok, tmp_path / "policy")
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--model",
                str(folder),
                "--benchmarks",
                "bfcl",
                "--categories",
                "simple_python",
                "--limit",
                "2",
                "--set",
                "evaluation.max_new_tokens=4",
                "--tools",
                "compact",
                "--out",
                str(out),
                "--threads",
                "1",
                "--engine",
                "hf",  # the profile's vLLM does not take the tiny model (head_dim 16)
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_items"] == 2
