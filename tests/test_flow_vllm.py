"""The pipeline on vLLM: the ``itool`` flow with ``engine: openai, serve.server: vllm`` on this CPU.

The tiny model with head_dim 32 (vLLM's CPU attention takes 32, 64, 80, …, not the tiny model's 16), one
iteration, tiny budgets: each generating stage (the mining shard, the evaluation) starts a real vLLM server
from the environment ``make install`` made, generates on it and stops it when the stage ends.  Two vLLM starts
(~1–2 min each here), so the test is marked ``slow``.
"""

from __future__ import annotations

import subprocess

import pytest
from test_flows import _params, data_path, harness  # noqa: F401  (fixtures of the flow tests)

pytest.importorskip("prefect")
pytest.importorskip("mlflow")


def _vllm_servers() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "vllm.entrypoints.openai.api_server"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


@pytest.fixture(scope="module")
def tiny32_dir(tmp_path_factory):
    from itool_core.models import save_policy, tiny_model

    model, tok = tiny_model(seed=0, head_dim=32)
    return str(save_policy(model, tok, tmp_path_factory.mktemp("tiny32") / "base"))


@pytest.mark.slow
def test_the_flow_runs_on_a_vllm_server_it_starts_and_stops(harness, tiny32_dir, data_path, tmp_path):  # noqa: F811
    from flows.iterate import iterate

    before = _vllm_servers()
    params = _params(tiny32_dir, data_path, tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}", no_warmup=True)
    params["config"] = {
        **params["config"],
        "engine": "openai",
        "serve": {"server": "vllm", "slots": 2, "ctx_per_slot": 1024},
    }
    res = iterate(**params)
    assert res["states"]["iter_1/mine"] in ("Completed", "Cached")
    logs = {p.relative_to(tmp_path / "run").parts[:2]: p for p in (tmp_path / "run").rglob("vllm.log")}
    assert set(logs) == {("iter_1", "mine"), ("iter_1", "eval")}, logs
    for log in logs.values():
        text = log.read_text()
        assert "POST /v1/completions" in text  # it served the stage's requests
    assert _vllm_servers() <= before  # every server the stages started is stopped
