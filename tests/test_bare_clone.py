"""A clone works alone: the repository's working tree copied into a fresh folder with no sibling folders (no
``../shared``), every ``ITOOL_*`` variable cleared, runs the default data stage and a tiny flow — warm-up and the
evaluations on BFCL and API-Bank level 1 — from its own files.

CI always has ``../shared`` beside its clone, so only a test that takes it away can see a default that reads
outside the repository (the API-Bank files did, until they moved into ``itool_core/data/api_bank``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _copy_working_tree(dest: Path) -> Path:
    """Tracked and untracked-but-not-ignored files (what a commit of this tree would hold), nothing else."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for rel in filter(None, (p.decode() for p in listed)):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def bare_clone(tmp_path_factory):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the project's git checkout to copy from")
    home = tmp_path_factory.mktemp("bare")
    repo = _copy_working_tree(home / "itool")
    assert sorted(p.name for p in home.iterdir()) == ["itool"]  # no sibling folder: no ../shared
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITOOL_")}
    env.update(
        PYTHONPATH=str(repo),  # the copy's code, not the checkout the editable install points at
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return repo, env


def _run(repo: Path, env: dict, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_default_data_comes_from_inside_the_clone(bare_clone):
    repo, env = bare_clone
    code = (
        "import json; from itool_core.data.apibank import default_apibank_dir, load_source; "
        "d = default_apibank_dir(); rows = load_source(level='all'); "
        "print(json.dumps({'dir': str(d), 'rows': len(rows)}))"
    )
    out = json.loads(_run(repo, env, "-c", code).stdout.strip().splitlines()[-1])
    assert Path(out["dir"]).resolve() == (repo / "itool_core" / "data" / "api_bank").resolve()
    assert out["rows"] >= 399 + 135 + 900  # level 1, level 2 and the training set


def test_a_tiny_flow_runs_from_the_bare_clone(bare_clone, tmp_path):
    from itool_core.models import save_policy, tiny_model

    repo, env = bare_clone
    model, tok = tiny_model(seed=0)
    tiny = save_policy(model, tok, tmp_path / "tiny")
    cfg = {
        "profile": "quick",
        "model": str(tiny),
        "engine": "hf",  # the profiles generate on vLLM where installed: not the tiny model (head_dim 16)
        "data": "default",
        "sft": {"max_steps_per_stage": 1, "per_device_batch_size": 2},
        "evaluation": {"categories": ["simple_python", "apibank_level1"], "max_new_tokens": 4, "base": False},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "run"
    _run(
        repo,
        env,
        "-m",
        "flows.cli",
        "run",
        "--config",
        str(tmp_path / "tiny.yaml"),
        "--no-rl",
        "--eval-limit",
        "1",
        "--run-dir",
        str(run_dir),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    result = json.loads((run_dir / "flow_summary.json").read_text())
    assert {"data", "warmup", "eval_sft"} <= set(result["ran"]), result["ran"]
    (row,) = result["rows"]  # the warm-up's evaluation: one item of each category, scored
    assert {"simple_python", "apibank_level1"} <= set(json.dumps(row).split('"')), row
    assert "apibank_level1" in (run_dir / "report.md").read_text()
