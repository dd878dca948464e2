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
    assert sorted(r.info.run_name for r in kids) == ["iteration 1", "iteration 2"]
    k2 = next(r for r in kids if r.info.run_name == "iteration 2")
    # nested dicts are flattened; strings, NaN and booleans are not metrics
    assert k2.data.metrics == {"bfcl.overall": pytest.approx(0.2), "pairs_mined": 6.0}
    assert {a.path for a in c.list_artifacts(k2.info.run_id)} == {"plots", "pairs"}
    assert (tmp_path / "db" / "mlartifacts").is_dir()
    assert not (tmp_path.parent / "mlruns").exists()


def test_failed_block_marks_run_failed(tracker):
    with pytest.raises(RuntimeError):
        with tracker.run("boom") as rid:
            raise RuntimeError("stage died")
    assert tracker.client.get_run(rid).info.status == "FAILED"


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
