"""The pipeline — the ``itool`` Prefect flow — on the tiny model, against a temporary Prefect server
(``prefect_test_harness``).

* the flow runs end to end (1 iteration, tiny budgets), writes the report (table with n and intervals, paired
  comparison, PNG) and tracks a parent + nested MLflow runs in a real SQLite store;
* a second run with the same inputs is served from the cache for every stage, across flow runs;
* changing only the evaluation settings re-runs only the evaluations;
* a failed stage, or a ``kill -9`` of the process in the middle of an iteration, resumes there: the finished
  stages come from the cache, no half-written file is left;
* an iteration without pairs keeps the policy and its scores;
* a transient failure is retried, bad input fails at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tiny_data import _data  # the tiny tool-use data set

from itool_core.artifacts import write_table
from itool_core.schemas import EXAMPLES

prefect = pytest.importorskip("prefect")
pytest.importorskip("mlflow")

from prefect import flow  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from tasks import stages  # noqa: E402

STAGES = [
    "data",
    "split",
    "warmup",
    "eval_sft",
    "iter_1/buffer",
    "iter_1/mine/select",
    "iter_1/mine/pairs",
    "iter_1/mine",
    "iter_1/preference",
    "iter_1/eval",
]
#: Task runs of the itool flow run itself: "iter_1/mine" is the composite of select + merge (tasks of this flow
#: run) and the mine-shard tasks of the itool-mine sub-flow run.
FLOW_TASKS = len(STAGES) - 1


@pytest.fixture(scope="module")
def harness():
    # a throw-away server + database for this module (~10-25 s to start)
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from itool_core.models import save_policy, tiny_model

    model, tok = tiny_model(seed=0)
    return str(save_policy(model, tok, tmp_path_factory.mktemp("tiny") / "base"))


def _params(tiny_dir, data_path, run_dir, uri, **over):
    p = dict(
        profile="quick",
        config={
            "model": tiny_dir,
            # the profiles generate on vLLM where installed; the tiny model (head_dim 16) is one vLLM's CPU
            # attention does not take, and these tests are about the flow, not the engine (test_flow_vllm.py)
            "engine": "hf",
            "data": str(data_path),
            "split": {"pool_fraction": 0.3},
            "sft": {"max_steps_per_stage": 1, "per_device_batch_size": 2, "max_length": 768},
            "buffer": {"alpha": 0.5, "batch_size": 4},
        },
        iterations=1,
        run_dir=str(run_dir),
        tracking_uri=uri,
        eval_limit=1,
        evaluation={"categories": ["simple_python", "apibank_level1"], "max_new_tokens": 4, "base": False},
        mcts={"simulations": 1, "k": 2, "min_q_gap": 0.0, "min_chosen_q": -100.0, "max_overlap": 1.0},
        policy={"max_step_tokens": 6, "max_rollout_tokens": 6, "continue_incomplete": 0},
        preference={"max_steps": 1, "per_device_batch_size": 1, "grad_accum_steps": 1, "max_length": 768},
    )
    p.update(over)
    return p


def _task_runs(flow_run_id, expected: int, timeout: float = 30.0) -> list:
    """A flow run's finished stage task runs as the server recorded them (task states reach the server as
    events, a moment after the flow returns: poll)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.time() + timeout
    done: list = []
    while time.time() < deadline:
        with get_client(sync_client=True) as c:
            runs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        # the itool-mine sub-flow appears in its parent as a task run of its own: not a stage
        done = [r for r in runs if r.state is not None and r.state.is_final() and not r.name.startswith("itool-mine")]
        if len(done) >= expected:
            return done
        time.sleep(0.5)
    return done


def _task_run_states(flow_run_id, expected: int, timeout: float = 30.0) -> list[str]:
    return [r.state.name for r in _task_runs(flow_run_id, expected, timeout)]


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_table([e.to_row() for e in _data()], tmp_path_factory.mktemp("data") / "data.parquet", EXAMPLES).path


@pytest.fixture(scope="module")
def two_runs(harness, tiny_dir, data_path, tmp_path_factory):
    from flows.iterate import iterate

    tmp = tmp_path_factory.mktemp("flow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    params = _params(tiny_dir, data_path, tmp / "run", uri)
    out = {"tmp": tmp, "uri": uri, "params": params}
    for key in ("first", "second"):
        t0 = time.time()
        state = iterate(**params, return_state=True)
        out[key] = {
            "state": state,
            "result": state.result(),
            "seconds": time.time() - t0,
            "flow_run_id": state.state_details.flow_run_id,
        }
    return out


def test_iterate_flow_runs_end_to_end_and_tracks_in_mlflow(two_runs):
    first = two_runs["first"]
    assert first["state"].is_completed()
    res = first["result"]
    assert [r["label"] for r in res["rows"]] == ["SFT (curriculum)", "iTool iteration 1"]
    assert res["ran"] == STAGES and res["cached"] == []
    run_dir = two_runs["tmp"] / "run"
    assert (run_dir / "flow_summary.json").is_file()
    # the report: n and the Wilson interval per category, the paired comparison, a real PNG
    report = (run_dir / "report.md").read_text()
    assert "95 % Wilson interval" in report and "simple_python (n=1)" in report
    assert "iTool iteration 1 vs SFT (curriculum)" in report and "McNemar p" in report
    assert (run_dir / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cat = res["rows"][0]["summary"]["bfcl"]["categories"]["simple_python"]
    assert cat["total"] == 1 and len(cat["ci95"]) == 2

    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=two_runs["uri"])
    parent = c.get_run(res["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.params["iterations"] == "1"  # the YAML key paths
    assert parent.data.params["mcts.simulations"] == "1"
    assert parent.data.tags["prefect.flow_run_id"] == str(first["flow_run_id"])
    for key in (
        "bfcl/overall",
        "bfcl/simple_python",
        "bfcl/simple_python/ci95_lo",
        "bfcl/simple_python/n",
        "apibank/level1",
        "pairs_mined",
        "final/bfcl/overall",
    ):
        assert key in parent.data.metrics, key
    hist = c.get_metric_history(parent.info.run_id, "bfcl/overall")
    assert sorted(m.step for m in hist) == [0, 1]  # after SFT (iteration 0) and after iteration 1
    assert {a.path for a in c.list_artifacts(parent.info.run_id, "report")} == {
        "report/report.md",
        "report/scores.png",
        "report/config.yaml",
    }

    children = c.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    # nested runs carry their flow run's name: two flow runs' "iteration 1" stay apart in the compare view
    by_name = {r.info.run_name.removeprefix(f"{parent.info.run_name} / "): r for r in children}
    assert set(by_name) == {"warm-up", "iteration 1"}, [r.info.run_name for r in children]
    assert parent.info.run_name.startswith("itool ")
    it1 = by_name["iteration 1"]
    for key in ("bfcl/overall", "apibank/level1", "pairs_mined", "wall_s/mine", "compute_s/preference"):
        assert key in it1.data.metrics, key
    # their config sections as params (the compare view's parameter table), the cache state as a tag
    assert it1.data.params["mcts.simulations"] == "1" and it1.data.params["iteration"] == "1"
    assert "sft.max_steps_per_stage" in by_name["warm-up"].data.params
    assert "mcts.simulations" not in by_name["warm-up"].data.params
    assert it1.data.tags["cached"] == "false" and parent.data.tags["cached"] == "false"
    # the experiment opens in MLflow's model-training view, with a note saying what the runs are
    exp_tags = c.get_experiment(parent.info.experiment_id).tags
    assert exp_tags["mlflow.experimentKind"] == "custom_model_development"
    assert "nested" in exp_tags["mlflow.note.content"]
    assert c.get_metric_history(it1.info.run_id, "pairs_mined")[0].step == 1
    assert "sft/loss" in by_name["warm-up"].data.metrics
    arts = {a.path for a in c.list_artifacts(it1.info.run_id)}
    assert {"pairs", "plots", "eval"} <= arts
    # artifacts next to the database, not in ./mlruns of the current directory
    assert (two_runs["tmp"] / "mlartifacts").is_dir()


def test_second_run_with_same_inputs_is_served_from_the_cache(two_runs):
    first, second = two_runs["first"], two_runs["second"]
    assert second["result"]["cached"] == STAGES and second["result"]["ran"] == []
    assert second["result"]["rows"] == first["result"]["rows"]
    assert second["result"]["final_policy"] == first["result"]["final_policy"]
    # the server saw the same: every task run of the first flow run completed, of the second was cached
    first_runs = _task_runs(first["flow_run_id"], FLOW_TASKS)
    assert sorted(r.state.name for r in first_runs) == ["Completed"] * FLOW_TASKS
    assert sorted(_task_run_states(second["flow_run_id"], FLOW_TASKS)) == ["Cached"] * FLOW_TASKS
    assert second["seconds"] < first["seconds"] / 2
    # task runs are named by their stage labels, and training stages carry the device's tag, not a fixed "gpu"
    assert sorted(r.name for r in first_runs) == sorted(s for s in STAGES if s != "iter_1/mine")
    device = stages.device_tag()
    assert {r.name for r in first_runs if device in r.tags} == {"warmup", "iter_1/preference"}
    other = "cpu" if device == "gpu" else "gpu"
    assert not [r.name for r in first_runs if other in r.tags]

    # MLflow: the cached re-run says so, and logs no compute time for stages that did no work
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=two_runs["uri"])
    parent = c.get_run(second["result"]["mlflow_run_id"])
    assert parent.data.tags["cached"] == "true"
    kids = c.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(kids) == 2
    for kid in kids:
        assert kid.data.tags["cached"] == "true", kid.info.run_name
        assert not [k for k in kid.data.metrics if k.startswith("compute_s/")], kid.info.run_name
        assert "wall_s/eval" in kid.data.metrics or "wall_s/eval_sft" in kid.data.metrics
    assert second["result"]["compute_s"] == {}


def test_changing_only_the_evaluation_reruns_only_the_evaluations(two_runs):
    from flows.iterate import iterate

    p = two_runs["params"]
    res = iterate(**{**p, "evaluation": {**p["evaluation"], "max_new_tokens": 5}})
    assert set(res["ran"]) == {"eval_sft", "iter_1/eval"}
    assert set(res["cached"]) == set(STAGES) - {"eval_sft", "iter_1/eval"}


def _half_written(run_dir: Path) -> list[str]:
    """Files under their final name that do not read back whole: Parquet (with its schema tag), JSON, model
    weights.  A killed atomic write leaves only its hidden ``.NAME.*.tmp`` file, which no reader opens."""
    import json

    from safetensors.torch import load_file

    from itool_core.artifacts import read_table

    bad = []
    for p in run_dir.rglob("*"):
        if not p.is_file() or (p.name.startswith(".") and p.name.endswith(".tmp")) or ".prefect-results" in p.parts:
            continue
        try:
            if p.suffix == ".parquet":
                read_table(p)
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".safetensors":
                load_file(str(p))
        except Exception as e:  # noqa: BLE001 - any unreadable file is what this looks for
            bad.append(f"{p}: {e}")
    return bad


def test_a_failed_stage_resumes_there(harness, tiny_dir, data_path, tmp_path, monkeypatch):
    import itool_core.train.preference as pref
    from flows.iterate import iterate

    real = pref.train_preference

    def dies(*a, **k):
        raise RuntimeError("killed during the preference update")

    params = _params(tiny_dir, data_path, tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(pref, "train_preference", dies)
    with pytest.raises(RuntimeError, match="killed"):
        iterate(**params)
    monkeypatch.setattr(pref, "train_preference", real)
    res = iterate(**params)
    assert res["ran"] == ["iter_1/preference", "iter_1/eval"]
    assert res["cached"] == STAGES[:-2]
    again = iterate(**params)
    assert again["ran"] == []


def test_kill_9_in_the_middle_of_an_iteration_resumes_there(harness, tiny_dir, data_path, tmp_path):
    """A real ``kill -9`` of the process running the flow while the preference update trains: the re-run takes
    data … mining from the cache, redoes the preference update, and no stage left a half-written file."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    from flows.iterate import iterate

    run_dir = tmp_path / "run"
    params = _params(
        tiny_dir,
        data_path,
        run_dir,
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        preference={"max_steps": 40, "per_device_batch_size": 1, "grad_accum_steps": 1, "max_length": 768},
    )
    root = Path(__file__).resolve().parents[1]
    code = "import json, sys; from flows.iterate import iterate; iterate(**json.loads(sys.argv[1]))"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(params)],
        cwd=root,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # the trainer's first checkpoint-free step: the preference stage folder exists and training has begun
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if any((run_dir / "iter_1" / "preference").glob("*/*")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not any((run_dir / "iter_1" / "preference").rglob("preference_result.json"))  # really mid-stage
    assert _half_written(run_dir) == []
    res = iterate(**params)
    assert res["cached"] == STAGES[:-2]
    assert res["ran"] == ["iter_1/preference", "iter_1/eval"]
    assert _half_written(run_dir) == []


def test_an_iteration_without_pairs_keeps_the_policy_and_its_scores(harness, tiny_dir, data_path, tmp_path):
    from flows.iterate import iterate

    params = _params(tiny_dir, data_path, tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params["mcts"] = {**params["mcts"], "min_q_gap": 100.0}  # no pair can pass
    res = iterate(**params)
    sft, it1 = res["rows"]
    assert it1["pairs"] == 0 and "iter_1/eval" not in res["states"]  # the same weights are not evaluated twice
    assert it1["summary"] == sft["summary"]
    assert res["final_policy"].startswith(str(tmp_path / "run" / "warmup"))


# ------------------------------------------------------------------------------------------- retries


@pytest.fixture()
def train_ref(tmp_path):
    return write_table([e.to_row() for e in _data()], tmp_path / "train.parquet", EXAMPLES)


def _split_once(run_dir, train, out_dir):
    from itool_core.config import SplitConfig

    @flow(name="split-once")
    def split_once():
        t = stages.StageRunner(run_dir, retry_delay_seconds=0).bind(stages.split_data)
        state = t(split=SplitConfig(pool_fraction=0.3), train=train, out_dir=str(out_dir), return_state=True)
        # plain values out: a flow returning a failed State would itself end failed
        return {
            "completed": state.is_completed(),
            "failed": state.is_failed(),
            "message": state.message or "",
            "result": state.result() if state.is_completed() else None,
        }

    return split_once()


def _flaky(monkeypatch, exc: BaseException, failures: int):
    import itool_core.data.split as split_mod

    real, calls = split_mod.split_and_write, {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise exc
        return real(*a, **k)

    monkeypatch.setattr(split_mod, "split_and_write", flaky)
    return calls


def test_transient_failure_is_retried(harness, tmp_path, train_ref, monkeypatch):
    calls = _flaky(monkeypatch, OSError("NFS hiccup"), failures=1)
    out = _split_once(tmp_path / "run", train_ref, tmp_path / "split")
    assert out["completed"], out
    assert calls["n"] == 2
    assert isinstance(out["result"], stages.Split) and out["result"].pool.rows == 9


def test_bad_input_fails_fast_without_retries(harness, tmp_path, train_ref, monkeypatch):
    import dataclasses

    from itool_core.data.records import BadRow

    calls = _flaky(monkeypatch, BadRow("train.json", 3, "tools", "not a list"), failures=5)
    out = _split_once(tmp_path / "run", train_ref, tmp_path / "split")
    assert out["failed"], out
    assert calls["n"] == 1  # retries=2 configured, none used
    # a stale reference (the file changed after it was referenced) is bad input too
    calls["n"] = 0
    stale = dataclasses.replace(train_ref, sha256="0" * 64)
    out = _split_once(tmp_path / "run2", stale, tmp_path / "split2")
    assert out["failed"] and "content changed" in out["message"], out
    assert calls["n"] == 0


def test_retry_condition_classifies_errors():
    from prefect.states import Failed

    from itool_core.artifacts import SchemaMismatch
    from itool_core.config import ConfigError

    for exc in (SchemaMismatch("x"), ConfigError("x"), ValueError("x"), FileNotFoundError("x"), KeyError("x")):
        assert stages.is_transient(None, None, Failed(data=exc)) is False, exc
    for exc in (OSError("x"), RuntimeError("CUDA error: out of memory"), ConnectionError("x"), TimeoutError("x")):
        assert stages.is_transient(None, None, Failed(data=exc)) is True, exc


def test_cache_key_follows_inputs_config_and_code_version(monkeypatch):
    from itool_core.artifacts import ArtifactRef
    from itool_core.config import SplitConfig

    ref = ArtifactRef("a.parquet", "1" * 64, "examples/1", 3)
    key = stages.stage_key("split", {"split": SplitConfig(), "train": ref})
    assert key == stages.stage_key("split", {"split": SplitConfig(), "train": ref})
    assert key != stages.stage_key("split", {"split": SplitConfig(seed=1), "train": ref})
    assert key != stages.stage_key("split", {"split": SplitConfig(), "train": ArtifactRef("a.parquet", "2" * 64)})
    monkeypatch.setattr(stages, "code_version", lambda: "another version")
    assert key != stages.stage_key("split", {"split": SplitConfig(), "train": ref})


# ------------------------------------------------------------------------------------------- served engine


def _llama_servers() -> set[int]:
    """PIDs of llama-server processes running now (this machine)."""
    import subprocess

    out = subprocess.run(["pgrep", "-f", "bin/llama-server"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def test_the_flow_generates_on_a_served_engine_it_starts_and_stops(harness, tiny_dir, data_path, tmp_path):
    """``engine: openai`` without a URL: each generating stage (mining shard, evaluation) starts a real
    llama-server for its policy, generates on it, and stops it when the stage ends."""
    from flows.iterate import iterate

    before = _llama_servers()
    params = _params(tiny_dir, data_path, tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}", no_warmup=True)
    params["config"] = {
        **params["config"],
        "engine": "openai",
        "serve": {"server": "llama.cpp", "slots": 2, "ctx_per_slot": 1024},
    }
    res = iterate(**params)
    assert res["states"]["iter_1/mine"] in ("Completed", "Cached")
    # each generating stage logged its own server in its output folder: the mining shard and the evaluation
    logs = {p.relative_to(tmp_path / "run").parts[:2]: p for p in (tmp_path / "run").rglob("llama-server.log")}
    assert set(logs) == {("iter_1", "mine"), ("iter_1", "eval")}, logs
    for log in logs.values():
        text = log.read_text()
        assert "listening" in text and "print_timing" in text  # it served requests
    assert _llama_servers() <= before  # every server the stages started is stopped


def test_the_compute_matched_control_is_trained_scored_compared_and_tracked(harness, tiny_dir, data_path, tmp_path):
    from mlflow import MlflowClient

    from flows.iterate import iterate

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = _params(tiny_dir, data_path, tmp_path / "run", uri)
    params["config"] = {**params["config"], "control": True}
    params["preference"] = {**params["preference"], "max_steps": 2}
    res = iterate(**params)
    assert [r["kind"] for r in res["rows"]] == ["sft", "iteration", "control"]
    assert {"control", "eval_control"} <= set(res["ran"])
    # the matching rule, checkable from the outputs: the control took exactly the optimiser steps the preference
    # update took, and fed tokens of the same order (whole examples: not exactly equal)
    ctl, pref = res["control"], res["work"]["iter_1/preference"]
    assert pref["pairs_trained"] == min(pref["pairs"], 2)  # 2 steps of 1 pair
    assert ctl["target"] == {"steps": int(pref["steps"]), "tokens": int(pref["tokens"])}
    assert ctl["spent"]["steps"] == ctl["target"]["steps"] == 2
    assert ctl["target"]["tokens"] > 0 and 0.3 < ctl["spent"]["tokens"] / ctl["target"]["tokens"] < 3
    assert res["rows"][-1]["label"] == "control (SFT +2 steps)"
    # the comparisons: the control against SFT and the final iteration against the control, per category + pooled
    pairs = {(c["b"], c["a"], c["category"]) for c in res["comparisons"]}
    assert ("control (SFT +2 steps)", "SFT (curriculum)", "pooled") in pairs
    assert ("iTool iteration 1", "control (SFT +2 steps)", "simple_python") in pairs
    pooled = next(c for c in res["comparisons"] if c["category"] == "pooled")
    assert pooled["n"] == 2 and {"delta_points", "a_only", "b_only", "p_value"} <= set(pooled)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| control (SFT +2 steps) |" in report and "iTool iteration 1 vs control (SFT +2 steps)" in report
    # its own MLflow run, with the targets beside what was spent
    c = MlflowClient(tracking_uri=uri)
    parent = c.get_run(res["mlflow_run_id"])
    children = c.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    # nested runs are named after their flow run: "itool <flow run> / control"
    (control,) = [r for r in children if r.info.run_name.endswith(" / control")]
    for key in ("control/target_steps", "control/steps", "control/tokens", "bfcl/simple_python"):
        assert key in control.data.metrics, key
    assert "control/bfcl/simple_python" in parent.data.metrics


def test_report_captions_state_the_profiles_budgets_and_no_tuning_claim():
    from flows.iterate import _budget_note
    from itool_core.config import profile

    demo = profile("demo")
    note = _budget_note(demo)
    assert f"3 × {demo.sft.max_steps_per_stage} warm-up steps" in note
    assert f"{demo.evaluation.limit} items per category" in note
    proof = _budget_note(profile("proof"))
    assert "held-out test items" in proof and "not tuned" in proof
    assert _budget_note(profile("quick")) == ""
