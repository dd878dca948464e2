"""deployments/deploy.py and the run folder of a deployment's flow run, without a server (seconds).  The real
server, worker, schedule and UIs: tests/test_service.py (``make test-integration``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _deploy_module():
    spec = importlib.util.spec_from_file_location("itool_deploy", ROOT / "deployments" / "deploy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_deployments_name_profile_and_run_folder_and_tags_follow_the_device():
    deploy = _deploy_module()
    iterate, evaluate = deploy.build_deployments(parameters={"iterations": 1, "eval_limit": None})
    # profile and run_dir are always there, so the UI and `prefect deployment inspect` say what a run runs
    assert iterate.parameters == {"iterations": 1, "profile": "quick", "run_dir": None}
    assert evaluate.parameters == {"profile": "quick", "run_dir": None}
    assert set(iterate.tags) == {"itool", "profile:quick", "cpu"}  # quick trains on the CPU: no "gpu" tag
    assert "profile quick" in iterate.description and iterate.schedules
    paper, _ = deploy.build_deployments(parameters={"profile": "paper", "run_dir": "/data/runs/paper"})
    assert set(paper.tags) == {"itool", "profile:paper", "gpu"}
    assert paper.parameters["run_dir"] == "/data/runs/paper"


def test_a_deployment_flow_run_gets_a_folder_of_its_own(tmp_path, monkeypatch):
    from flows.common import default_run_dir

    runs = tmp_path / "runs"
    # itool run / make demo (no deployment): the profile's folder, so re-running resumes there
    monkeypatch.delenv("PREFECT__RUNTIME__DEPLOYMENT__ID", raising=False)
    assert default_run_dir(runs, "demo") == runs / "demo"
    # a deployment's flow run: its own folder, named like the flow run (prefect.runtime reads these variables)
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", "7c1e9a52-0000-4000-8000-000000000000")
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__NAME", "brave-fox")
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__ID", "0d8d6755-bb3c-4000-8000-000000000000")
    assert default_run_dir(runs, "demo") == runs / "flow-runs" / "brave-fox"
    (runs / "flow-runs" / "brave-fox").mkdir(parents=True)  # a name Prefect gave before: never shared
    assert default_run_dir(runs, "demo") == runs / "flow-runs" / "brave-fox-0d8d6755"
