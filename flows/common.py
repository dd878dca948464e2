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
from tasks.stages import Evaluation
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
        return cls(cfg=cfg, run_dir=Path(run_dir or itool_home() / "runs" / cfg.profile).resolve(), no_warmup=no_warmup)

    @property
    def style(self) -> str:
        return self.cfg.sft.tools_style

    def params(self) -> dict:
        """The full configuration, as MLflow params (keys = the YAML key paths: sft.learning_rate ...)."""
        from itool_core.config import to_dict

        return {**to_dict(self.cfg), "run_dir": str(self.run_dir), "no_warmup": self.no_warmup}

    def subset(self) -> str:
        from itool_core.eval.runner import subset_text

        return f"{subset_text(self.cfg.evaluation)}, the same items for every stage"


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


def publish_scores(stages: Sequence[StageScores], subset: str, title: str) -> str:
    """The score table so far as a Prefect markdown artifact (a new version of key ``itool-scores``)."""
    md = f"# iTool scores — {title}\n\n" + report_markdown(stages, subset)
    create_markdown_artifact(markdown=md, key="itool-scores", description=f"iTool scores: {title}")
    return md


def tracking_hint(uri: str) -> str:
    """Where the MLflow runs are and the one command that browses them."""
    if uri.startswith("sqlite:///") or uri.startswith("file:"):
        return f"MLflow runs: {uri}\n  browse: mlflow ui --backend-store-uri {uri} --port 5000   (then http://127.0.0.1:5000)"
    return f"MLflow runs: {uri} (open it in a browser)"


def as_json(x: Any) -> Any:
    """A flow's return value as plain JSON (records are dataclasses)."""
    import json

    return json.loads(json.dumps(jsonable(x), default=str))
