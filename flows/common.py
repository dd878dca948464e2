"""What the flows share: :class:`Plan` (the validated run config of one flow run, built from the flow's plain
parameters) and the evaluation → MLflow / Prefect-artifact helpers.  No flow lives here, so the flow modules
import this one and never each other."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact

from itool_core.artifacts import ContentRef, jsonable
from itool_core.config import RunConfig
from itool_core.report import StageScores, report_markdown
from tasks.stages import Evaluation, StageRunner
from tasks.tracking import Tracker


@dataclass(frozen=True)
class Plan:
    """Everything a flow run needs, validated before any stage starts (a bad key fails in a second, not after an
    hour of training)."""

    cfg: RunConfig
    run_dir: Path
    no_warmup: bool = False

    @classmethod
    def build(
        cls,
        profile: str = "quick",
        config: dict | None = None,
        iterations: int | None = None,
        run_dir: str | None = None,
        eval_limit: int | None = None,
        mcts: dict | None = None,
        policy: dict | None = None,
        preference: dict | None = None,
        evaluation: dict | None = None,
        no_warmup: bool = False,
    ) -> Plan:
        """``config`` overrides the ``profile`` preset (keys in the YAML shape of itool_core.config, nested or
        dotted: ``{"mcts": {"k": 2}}`` or ``{"mcts.k": 2}``); the section arguments and ``iterations`` /
        ``eval_limit`` override single keys on top (the UI's knobs).  All of it is one ``with_overrides``."""
        from itool_core.config import profile as preset
        from itool_core.config import validate_paths, with_overrides
        from itool_core.models import itool_home, with_concrete_precision

        sections = [
            {name: part}
            for name, part in (
                ("mcts", mcts),
                ("policy", policy),
                ("preference", preference),
                ("evaluation", evaluation),
            )
            if part
        ]
        knobs = {k: v for k, v in (("iterations", iterations), ("evaluation.limit", eval_limit)) if v is not None}
        config = config or {}
        base = preset(config.get("profile", profile))
        # a model or data path that does not exist fails here, naming the key, not minutes into the run
        cfg = with_concrete_precision(validate_paths(with_overrides(base, config, *sections, knobs)))
        # absolute by default: a deployment's worker runs flows in a scratch directory
        folder = Path(run_dir) if run_dir else default_run_dir(itool_home() / "runs", cfg.profile)
        return cls(cfg=cfg, run_dir=folder.resolve(), no_warmup=no_warmup)

    @property
    def style(self) -> str:
        return self.cfg.sft.tools_style

    def params(self) -> dict:
        """The full configuration, as MLflow params (keys = the YAML key paths: sft.learning_rate ...)."""
        from itool_core.config import to_dict

        return {**to_dict(self.cfg), "run_dir": str(self.run_dir), "no_warmup": self.no_warmup}

    def section_params(self, group: str) -> dict:
        """The config sections a nested MLflow run's stages read (:data:`GROUP_SECTIONS`), as its params, so the
        compare view lines nested runs up by their settings."""
        full = self.params()
        keys = ("profile", "model", "engine", "device", "seed", *GROUP_SECTIONS[group])
        return {k: full[k] for k in keys if k in full}

    def subset(self) -> str:
        from itool_core.eval.runner import subset_text

        return f"{subset_text(self.cfg.evaluation)}, the same items for every stage"


#: Which config sections the stages of each nested MLflow run read.
GROUP_SECTIONS: dict[str, tuple[str, ...]] = {
    "base": ("evaluation",),
    "warm-up": ("data", "data_format", "build", "split", "sft", "launch", "evaluation"),
    "iteration": ("iterations", "buffer", "mcts", "policy", "preference", "launch", "serve", "evaluation"),
    "control": ("control", "split", "sft", "evaluation"),
}


def default_run_dir(runs: Path, profile: str) -> Path:
    """The run folder when none is given: ``<runs>/<profile>`` for a run started in this process (``itool run``,
    ``make demo``: re-running the command resumes there); for a deployment's flow run its own folder,
    ``<runs>/flow-runs/<flow run name>``, so a scheduled or UI-triggered run never writes into ``make demo``'s
    folder or into another flow run's (resume one by passing its folder as ``run_dir``)."""
    from prefect.runtime import deployment, flow_run

    if not deployment.id or not flow_run.name:
        return runs / profile
    folder = runs / "flow-runs" / flow_run.name
    return folder if not folder.exists() else folder.with_name(f"{flow_run.name}-{str(flow_run.id)[:8]}")


def base_model_ref(model: str) -> ContentRef:
    """A local model folder by content (a retrained model in the same folder is a new input); an embedded or hub
    model by name (hashing an 8B checkpoint on every run would cost minutes)."""
    from itool_core.models import resolve

    path = resolve(model)
    return ContentRef.of(path) if Path(model).exists() else ContentRef.named(model, path)


def data_source_ref(data: str) -> ContentRef | None:
    """Content reference of a local data file/folder (so editing it invalidates the data stage); None for the
    embedded default set or a hub id."""
    return None if data == "default" or not Path(data).exists() else ContentRef.of(Path(data).resolve())


def scores_of(ev: Evaluation, pairs: int | None = None, kind: str = "") -> StageScores:
    return StageScores(label=ev.label, summary=ev.summary, dir=ev.dir, pairs=pairs, kind=kind)


def eval_metrics(summary: dict, prefix: str = "") -> dict[str, float]:
    """``bfcl/overall``, ``bfcl/<group>``, ``bfcl/<category>``, ``apibank/level1|2`` (accuracies in [0, 1]), their
    interval bounds ``…/ci95_lo|hi``, n per category, and ``bfcl_answers/<category>/<call|no_call|broken_call>``
    (shares of the answers)."""
    b, a = summary.get("bfcl") or {}, summary.get("apibank") or {}
    out: dict[str, float] = {}
    for k in ("overall", "non_live", "live", "multi_turn", "relevance", "irrelevance"):
        if isinstance(b.get(k), (int, float)):
            out[f"{prefix}bfcl/{k}"] = float(b[k])

    def per_category(key: str, v: dict) -> None:
        out[key] = float(v["accuracy"])
        if v.get("ci95"):
            out[f"{key}/ci95_lo"], out[f"{key}/ci95_hi"] = map(float, v["ci95"])
        if "total" in v:
            out[f"{key}/n"] = float(v["total"])

    for c, v in (b.get("categories") or {}).items():
        per_category(f"{prefix}bfcl/{c}", v)
    # share of each answer kind per category: an irrelevance score made of broken call lists is not abstention
    for c, kinds in (b.get("answer_kinds") or {}).items():
        n = sum(kinds.values())
        if not n:
            continue
        for kind, k in kinds.items():
            out[f"{prefix}bfcl_answers/{c}/{kind}"] = k / n
    for level, v in a.items():
        if isinstance(v, dict) and "accuracy" in v:
            per_category(f"{prefix}apibank/{level}", v)
    return out


def bar_scores(summary: dict) -> dict[str, float]:
    b, a = summary.get("bfcl") or {}, summary.get("apibank") or {}
    scores = {c: v["accuracy"] for c, v in (b.get("categories") or {}).items()}
    if "overall" in b:
        scores["BFCL overall"] = b["overall"]
    scores.update({f"API-Bank {k}": v["accuracy"] for k, v in a.items() if isinstance(v, dict) and "accuracy" in v})
    return scores


def log_evaluation(
    tracker: Tracker, run_id: str, ev: Evaluation, step: int, prefix: str = "", plot: bool = True
) -> None:
    """Metrics at ``step`` (the iteration), and on ``plot`` the BFCL / API-Bank bar plot + the summary/samples."""
    tracker.log_metrics(run_id, eval_metrics(ev.summary, prefix), step=step)
    if plot:
        name = f"{prefix.strip('/') or 'eval'}_step{step}"
        tracker.log_bar_plot(
            run_id, bar_scores(ev.summary), f"plots/{name}.png", title=f"{name} ({ev.summary.get('subset', '')})"
        )
        d = Path(ev.dir)
        for f in ("summary.json", "samples.parquet"):
            if ev.dir and (d / f).is_file():
                tracker.log_artifact(run_id, d / f, f"eval/{name}")


def stage_table(runner: StageRunner) -> str:
    """Markdown: every stage run so far with its state (Completed / Cached), wall time and compute time."""
    rows = ["| stage | state | wall (s) | compute (s) |", "|---|---|---:|---:|"]
    for name, state in runner.states.items():
        compute = runner.compute.get(name)
        rows.append(
            f"| {name} | {'Cached' if state == 'Cached' else 'ran'} | {runner.wall.get(name, 0.0):.1f} | "
            f"{'-' if compute is None else f'{compute:.1f}'} |"
        )
    return "\n".join(rows)


def publish_scores(
    stages: Sequence[StageScores],
    subset: str,
    title: str,
    runner: StageRunner | None = None,
    mlflow_run: str | None = None,
) -> str:
    """The score table so far as a Prefect markdown artifact (a new version of key ``itool-scores``), followed by
    the stages' wall time and cache state (``runner``) and where the MLflow run is (``mlflow_run``)."""
    md = f"# iTool scores — {title}\n\n" + report_markdown(stages, subset)
    if runner is not None and runner.states:
        md += "\n\n## Stages\n\n" + stage_table(runner)
    if mlflow_run:
        md += f"\n\nMLflow run: {mlflow_run}\n"
    create_markdown_artifact(markdown=md, key="itool-scores", description=f"iTool scores: {title}")
    return md


def log_stage_group(tracker: Tracker, run_id: str, runner: StageRunner, names: list[str], step: int = 0) -> None:
    """A nested run's ``wall_s/<stage>``, ``compute_s/<stage>`` (only stages that really ran: a cached stage did
    no work in this run) and its ``cached`` / ``cached_stages`` tags."""
    tracker.log_metrics(run_id, runner.metrics(names), step=step)
    tracker.set_tags(run_id, runner.tags(names))


def log_base_run(tracker: Tracker, parent: str, plan: Plan, runner: StageRunner, ev: Evaluation) -> None:
    """The base model's evaluation as a nested run of its own (``<parent> / base``, iteration 0), so the compare
    view charts it next to the warm-up and the iterations."""
    with tracker.run("base", parent_run_id=parent, tags={"iteration": "base"}, params=plan.section_params("base")) as r:
        log_evaluation(tracker, r, ev, step=0, plot=False)
        log_stage_group(tracker, r, runner, ["eval_base"])


def tracking_hint(uri: str) -> str:
    """Where the MLflow runs are, the one command that browses them, and the view to pick (MLflow 3 opens in its
    GenAI view, which lists no runs)."""
    view = "pick 'Model training' at the top left, experiment itool; expand a run (+) for its nested runs"
    if uri.startswith("sqlite:///") or uri.startswith("file:"):
        return (
            f"MLflow runs: {uri}\n  browse: mlflow ui --backend-store-uri {uri} --port 5000   "
            f"(then http://127.0.0.1:5000: {view})"
        )
    return f"MLflow runs: {uri} (open it in a browser: {view})"


def as_json(x: Any) -> Any:
    """A flow's return value as plain JSON (records are dataclasses)."""
    import json

    return json.loads(json.dumps(jsonable(x), default=str))
