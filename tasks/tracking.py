"""The only module that talks to MLflow.

One parent run per flow run, one nested run per stage group (warm-up, iteration i) named after its parent, so
"itool brave-fox / iteration 1" and "itool calm-owl / iteration 1" stay apart in the compare view and chart
legends; explicit run ids everywhere (MLflow's fluent API keeps the active run in a thread-local, which
Prefect's thread task runner would break); metrics logged with ``step=iteration`` so iterations line up.  A run
whose block raises ends FAILED with the error in its ``error`` tag.  The experiment is marked a model-training
experiment (MLflow's UI otherwise opens it in its GenAI view) and carries a note saying what its runs are.
Core code never imports this: stages hand their metrics back as return values / callbacks and the flow logs
them here.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_EXPERIMENT = "itool"
#: Experiment tags: the UI's "Model training" view (not its GenAI one), and the experiment's description.
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    "mlflow.note.content": (
        "iTool pipeline runs. One parent run per Prefect flow run (`itool <flow run name>`: the full config as "
        "params, scores by iteration); nested under it one run per stage group (`<parent> / warm-up`, "
        "`<parent> / iteration i`) with its config sections as params, its scores with 95 % intervals "
        "(`bfcl/<category>`, `.../ci95_lo|hi`, `.../n`), losses, `wall_s/<stage>`, `compute_s/<stage>` (only "
        "stages that ran), and the tag `cached` (true / partial / false). Select nested runs and press Compare "
        "to chart iterations across flow runs."
    ),
}


def default_tracking_uri() -> str:
    home = Path(os.environ.get("ITOOL_HOME", Path.home() / ".cache" / "itool")).expanduser()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"


def _artifact_root(uri: str) -> str | None:
    # With a SQLite store MLflow puts artifacts under ./mlruns of the CURRENT directory; pin them next to the db.
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
    return None


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v, default=str)
    return out


class Tracker:
    """Thin wrapper over ``mlflow.MlflowClient`` with explicit run ids."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT):
        from mlflow import MlflowClient

        self.uri = tracking_uri or default_tracking_uri()
        if self.uri.startswith("sqlite:///"):
            Path(self.uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            exp.experiment_id
            if exp
            else self.client.create_experiment(experiment, artifact_location=_artifact_root(self.uri))
        )
        have = exp.tags if exp else {}
        for k, v in EXPERIMENT_TAGS.items():
            if k not in have:  # a user's own note or view choice stays
                self.client.set_experiment_tag(self.experiment_id, k, v)
        self._names: dict[str, str] = {}

    def start_run(
        self,
        name: str,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        """A run named ``name``; nested under ``parent_run_id`` it is named ``"<parent's name> / <name>"``."""
        t = dict(tags or {})
        if parent_run_id:
            t["mlflow.parentRunId"] = parent_run_id
            parent = self._names.get(parent_run_id) or self.client.get_run(parent_run_id).info.run_name
            name = f"{parent} / {name}"
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=t).info.run_id
        self._names[run_id] = name
        if params:
            self.log_params(run_id, params)
        return run_id

    def end_run(self, run_id: str, status: str = "FINISHED", error: BaseException | str | None = None) -> None:
        if error is not None:
            msg = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            self.set_tags(run_id, {"error": msg[:4000] or type(error).__name__})
        self.client.set_terminated(run_id, status=status)

    @contextmanager
    def run(
        self,
        name: str,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Iterator[str]:
        """A run for the block: FINISHED when it returns, FAILED (KILLED on Ctrl-C) with the ``error`` tag when it
        raises."""
        run_id = self.start_run(name, parent_run_id, tags, params)
        try:
            yield run_id
        except BaseException as e:
            self.end_run(run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED", error=e)
            raise
        self.end_run(run_id)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    def run_url(self, run_id: str) -> str:
        """Where a person opens the run: its page on a tracking server, else the store and the run id."""
        if self.uri.startswith(("http://", "https://")):
            return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"
        return f"{self.uri} (run {run_id}; browse with `mlflow ui --backend-store-uri {self.uri}`)"

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = _flatten(params)
        items = [Param(k[:250], str(v)[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k[:250], float(v), now, step)
            for k, v in _flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i : i + 500])

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            self.client.log_artifacts(run_id, str(p), artifact_path)
        elif p.exists():
            self.client.log_artifact(run_id, str(p), artifact_path)

    def log_dict(self, run_id: str, obj: Any, name: str) -> None:
        self.client.log_dict(run_id, obj, name)

    def log_bar_plot(self, run_id: str, scores: Mapping[str, float], name: str, title: str = "") -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(scores)), 3))
        ax.bar(list(scores), [100 * float(v) for v in scores.values()])
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=60)
        fig.tight_layout()
        self.client.log_figure(run_id, fig, name)
        plt.close(fig)
