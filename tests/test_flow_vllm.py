"""The pipeline on vLLM: the ``itool`` flow with ``engine: openai, serve.server: vllm`` on this CPU.

The tiny model with head_dim 32 (vLLM's CPU attention takes 32, 64, 80, …, not the tiny model's 16), one
iteration, tiny budgets.  The first generating stage (the mining shard) starts a real vLLM server from the
environment ``make install`` made; the next one (the evaluation of the updated policy) loads its policy into
that server instead of starting another (engines/shared_vllm.py); the server is stopped at the end.  One vLLM
start (~1–2 min here) plus the flow: marked ``slow``.
"""

from __future__ import annotations

import pytest
from test_flows import _params, data_path, harness  # noqa: F401  (fixtures of the flow tests)

pytest.importorskip("prefect")
pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def tiny32_dir(tmp_path_factory):
    from itool_core.models import save_policy, tiny_model

    model, tok = tiny_model(seed=0, head_dim=32)
    return str(save_policy(model, tok, tmp_path_factory.mktemp("tiny32") / "base"))


@pytest.mark.slow
def test_the_flow_runs_on_one_vllm_server_per_run(harness, tiny32_dir, data_path, tmp_path):  # noqa: F811
    from flows.iterate import iterate
    from itool_core.engines import shared_vllm

    params = _params(tiny32_dir, data_path, tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}", no_warmup=True)
    params["config"] = {
        **params["config"],
        "engine": "openai",
        "serve": {"server": "vllm", "slots": 2, "ctx_per_slot": 1024},
    }
    try:
        res = iterate(**params)
        servers = [e.server for es in shared_vllm._pool.values() for e in es]
    finally:
        shared_vllm.stop_shared_servers()
    assert res["states"]["iter_1/mine"] in ("Completed", "Cached")
    run = tmp_path / "run"
    # one server for the run: started by the mining shard, reused by the evaluation
    logs = {p.relative_to(run).parts[:2] for p in run.rglob("vllm.log")}
    shared = {p.relative_to(run).parts[:2] for p in run.rglob("vllm-shared.txt")}
    assert logs == {("iter_1", "mine")} and shared == {("iter_1", "eval")}, (logs, shared)
    (log,) = run.rglob("vllm.log")
    text = log.read_text()
    assert text.count("POST /v1/completions") > 1  # it served both stages' requests
    if res["final_policy"] != tiny32_dir:  # the preference update made a new policy: loaded into the server
        assert "POST /collective_rpc" in text and "POST /reset_prefix_cache" in text
    assert len(servers) == 1 and not servers[0].running  # stopped with the run's shared servers
