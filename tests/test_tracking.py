"""tasks/tracking.py alone, on a real SQLite MLflow store in tmp_path: parent + nested runs, params, metrics
by step, artifacts next to the database, failed runs marked FAILED."""

from __future__ import annotations

import pytest

pytest.importorskip("mlflow")

from tasks.tracking import Tracker, default_tracking_uri  # noqa: E402


@pytest.fixture()
def tracker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "..")  # artifacts must not land in ./mlruns of the current directory
    return Tracker(f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}", experiment="test")


def test_parent_and_nested_runs_with_params_metrics_and_artifacts(tracker, tmp_path):
    with tracker.run("itool test", tags={"prefect.flow_run_id": "abc"}) as parent:
        tracker.log_params(parent, {"run": {"sft": {"lora_r": 16, "target_modules": ["q", "v"]}}, "iterations": 2})
        for i in (1, 2):
            with tracker.run(f"iteration {i}", parent_run_id=parent) as child:
                tracker.log_metrics(
                    child,
                    {
                        "bfcl": {"overall": 0.1 * i},
                        "pairs_mined": 3 * i,
                        "skip": "text",
                        "nan": float("nan"),
                        "flag": True,
                    },
                    step=i,
                )
                tracker.log_bar_plot(child, {"simple_python": 0.5, "BFCL overall": 0.25}, f"plots/iter{i}.png")
                f = tmp_path / "pairs.parquet"
                f.write_bytes(b"x")
                tracker.log_artifact(child, f, "pairs")
            tracker.log_metrics(parent, {"bfcl/overall": 0.1 * i}, step=i)

    c = tracker.client
    run = c.get_run(parent)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"run.sft.lora_r": "16", "run.sft.target_modules": '["q", "v"]', "iterations": "2"}
    assert [(m.step, round(m.value, 3)) for m in c.get_metric_history(parent, "bfcl/overall")] == [(1, 0.1), (2, 0.2)]
    kids = c.search_runs([tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    # nested runs are named after their parent: two flow runs' iterations stay apart in legends
    assert sorted(r.info.run_name for r in kids) == ["itool test / iteration 1", "itool test / iteration 2"]
    k2 = next(r for r in kids if r.info.run_name == "itool test / iteration 2")
    # nested dicts are flattened; strings, NaN and booleans are not metrics
    assert k2.data.metrics == {"bfcl.overall": pytest.approx(0.2), "pairs_mined": 6.0}
    assert {a.path for a in c.list_artifacts(k2.info.run_id)} == {"plots", "pairs"}
    assert (tmp_path / "db" / "mlartifacts").is_dir()
    assert not (tmp_path.parent / "mlruns").exists()


def test_failed_block_marks_its_runs_failed_with_the_error(tracker):
    with pytest.raises(RuntimeError):
        with tracker.run("boom") as rid:
            with tracker.run("iteration 1", parent_run_id=rid, params={"mcts": {"k": 2}}) as kid:
                raise RuntimeError("stage died")
    for run_id in (rid, kid):
        run = tracker.client.get_run(run_id)
        assert run.info.status == "FAILED"
        assert run.data.tags["error"] == "RuntimeError: stage died"
    assert tracker.client.get_run(kid).data.params == {"mcts.k": "2"}


def test_experiment_opens_in_the_model_training_view(tracker):
    tags = tracker.client.get_experiment(tracker.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert "Compare" in tags["mlflow.note.content"]
    # a user's own choice is kept when the experiment is opened again
    tracker.client.set_experiment_tag(tracker.experiment_id, "mlflow.experimentKind", "genai_development")
    again = Tracker(tracker.uri, experiment="test")
    assert again.client.get_experiment(again.experiment_id).tags["mlflow.experimentKind"] == "genai_development"
    assert again.run_url("abc").startswith(f"{tracker.uri} (run abc")
    assert (
        Tracker.run_url(type("T", (), {"uri": "http://127.0.0.1:5000/", "experiment_id": "1"})(), "abc")
        == "http://127.0.0.1:5000/#/experiments/1/runs/abc"
    )


def test_stage_tags_and_compute_only_for_stages_that_ran(tmp_path):
    from tasks.stages import StageRunner

    r = StageRunner(tmp_path, progress=lambda _: None)
    r.record("data", "Cached", 0.01, compute=12.0)
    r.record("warmup", "Completed", 30.0, compute=29.0)
    assert r.compute == {"warmup": 29.0}  # a cached record's seconds are an earlier run's work
    assert r.metrics(["data", "warmup"]) == {"wall_s/data": 0.01, "wall_s/warmup": 30.0, "compute_s/warmup": 29.0}
    assert r.tags(["data", "warmup"]) == {"cached": "partial", "cached_stages": "data"}
    assert r.tags(["data"]) == {"cached": "true", "cached_stages": "data"}
    assert r.tags(["warmup"]) == {"cached": "false", "cached_stages": "-"}
    # task runs are named by their stage label, read off the output folder
    assert r._label({"out_dir": r.out_dir("iter_1/mine/shard_0", x=1)}) == "iter_1/mine/shard_0"


def test_existing_experiment_is_reused(tracker):
    again = Tracker(tracker.uri, experiment="test")
    assert again.experiment_id == tracker.experiment_id


def test_default_uri_follows_itool_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("ITOOL_HOME", str(tmp_path))
    assert default_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri() == "http://127.0.0.1:5000"


def test_eval_metrics_carry_the_answer_kinds(tracker):
    """The evaluation summary → MLflow metrics, answer kinds included, logged on the real store."""
    from flows.common import eval_metrics

    summary = {
        "bfcl": {
            "overall": 0.2,
            "irrelevance": 0.6,
            "categories": {"irrelevance": {"accuracy": 0.6}},
            "answer_kinds": {"irrelevance": {"call": 4, "no_call": 1, "broken_call": 5}},
        },
        "apibank": {"level1": {"accuracy": 0.1, "correct": 1, "total": 10}},
    }
    m = eval_metrics(summary, prefix="sft/")
    assert m == {
        "sft/bfcl/overall": 0.2,
        "sft/bfcl/irrelevance": 0.6,
        "sft/bfcl_answers/irrelevance/call": 0.4,
        "sft/bfcl_answers/irrelevance/no_call": 0.1,
        "sft/bfcl_answers/irrelevance/broken_call": 0.5,
        "sft/apibank/level1": 0.1,
        "sft/apibank/level1/n": 10.0,
    }
    with tracker.run("eval") as run:
        tracker.log_metrics(run, m, step=1)
    assert tracker.client.get_run(run).data.metrics["sft/bfcl_answers/irrelevance/no_call"] == pytest.approx(0.1)
