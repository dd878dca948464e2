"""Flow ``itool-evaluate``: BFCL (categories + overall) and API-Bank L1/L2 of one model, tracked in MLflow.

Also the evaluation plumbing the other flows share: :func:`eval_metrics` (a summary → flat MLflow metrics),
:func:`log_evaluation` (metrics + bar plot + summary file on a run) and :func:`publish_scores` (the score
table as a Prefect markdown artifact).  Every number is on a seeded subset unless ``eval_limit`` is None:
the tables say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from tasks import stages
from tasks.tracking import Tracker


def row_of(stage: str, summary: dict, **extra: Any) -> dict:
    """A row of ``itool_core.loop.results_table``."""
    return {"stage": stage, **extra, "bfcl": summary.get("bfcl") or {}, "apibank": summary.get("apibank") or {}}


def eval_metrics(summary: dict, prefix: str = "") -> dict[str, float]:
    """``bfcl/overall``, ``bfcl/<group>``, ``bfcl/<category>``, ``apibank/level1|2`` (accuracies in [0, 1]) and
    ``bfcl_answers/<category>/<call|no_call|broken_call>`` (shares of the answers)."""
    b, a = summary.get("bfcl") or {}, summary.get("apibank") or {}
    out: dict[str, float] = {}
    for k in ("overall", "non_live", "live", "multi_turn", "relevance", "irrelevance"):
        if isinstance(b.get(k), (int, float)):
            out[f"{prefix}bfcl/{k}"] = float(b[k])
    for c, v in (b.get("categories") or {}).items():
        out[f"{prefix}bfcl/{c}"] = float(v["accuracy"])
    # share of each answer kind per category: an irrelevance score made of broken call lists is not abstention
    for c, kinds in (b.get("answer_kinds") or {}).items():
        n = sum(kinds.values())
        if not n:
            continue
        for kind, k in kinds.items():
            out[f"{prefix}bfcl_answers/{c}/{kind}"] = k / n
    for level, v in a.items():
        if isinstance(v, dict) and "accuracy" in v:
            out[f"{prefix}apibank/{level}"] = float(v["accuracy"])
    return out


def bar_scores(summary: dict) -> dict[str, float]:
    b, a = summary.get("bfcl") or {}, summary.get("apibank") or {}
    scores = {c: v["accuracy"] for c, v in (b.get("categories") or {}).items()}
    if "overall" in b:
        scores["BFCL overall"] = b["overall"]
    scores.update({f"API-Bank {k}": v["accuracy"] for k, v in a.items() if isinstance(v, dict) and "accuracy" in v})
    return scores


def log_evaluation(tracker: Tracker, run_id: str, summary: dict, step: int, prefix: str = "",
                   plot: bool = True) -> None:
    """Metrics at ``step`` (the iteration), and on ``plot`` the BFCL / API-Bank bar plot + the summary/samples."""
    tracker.log_metrics(run_id, eval_metrics(summary, prefix), step=step)
    if plot:
        name = f"{prefix.strip('/') or 'eval'}_step{step}"
        tracker.log_bar_plot(run_id, bar_scores(summary), f"plots/{name}.png",
                             title=f"{name} ({summary.get('subset', '')})")
        d = Path(summary.get("dir", ""))
        for f in ("summary.json", "samples.parquet"):
            if summary.get("dir") and (d / f).is_file():
                tracker.log_artifact(run_id, d / f, f"eval/{name}")


def scores_markdown(rows: Sequence[dict], spec: Any, title: str) -> str:
    from itool_core.loop import results_table

    subset = "full categories" if spec.limit is None else \
        f"seeded subset: at most {spec.limit} items per category (seed {spec.seed})"
    return f"## iTool scores — {title}\n\n{results_table(rows)}\n\n_accuracy in %, {subset}_\n"


def publish_scores(rows: Sequence[dict], spec: Any, title: str) -> str:
    """The score table so far as a Prefect markdown artifact (a new version of key ``itool-scores``)."""
    md = scores_markdown(rows, spec, title)
    create_markdown_artifact(markdown=md, key="itool-scores", description=f"iTool scores: {title}")
    return md


# log_prints stays off: dill (via datasets) captures dis.dis() output by swapping sys.stdout, and Prefect's
# print patch would forward those bytecode listings into the run's logs.
@flow(name="itool-evaluate", log_prints=False)
def evaluate(model: str = "smollm2-135m-instruct", label: str | None = None, profile: str = "quick",
             run_dir: str | None = None, tracking_uri: str | None = None, eval_limit: int | None = None,
             evaluation: dict | None = None, experiment: str = "itool", refresh_cache: bool = False) -> dict:
    """Evaluate ``model`` (an embedded name, a model folder — e.g. a run's ``final_policy`` — or a hub id)."""
    from itool_core.loop import content_hash, fingerprint
    from itool_core.models import resolve

    from flows.warmup import Plan

    plan = Plan.build(profile, run_dir=run_dir, eval_limit=eval_limit, evaluation=evaluation)
    T = stages.bind(plan.run_dir, refresh_cache)
    path = resolve(model)
    # A local folder is keyed by content (a retrained model in the same folder is re-evaluated); a hub id by name.
    sha = content_hash(path) if Path(path).exists() else fingerprint("base", model)
    policy = stages.policy_ref(path, sha)
    spec = plan.d("spec")
    tracker = Tracker(tracking_uri, experiment)
    with tracker.run(f"itool-evaluate {flow_run.name}", tags={"prefect.flow_run_id": str(flow_run.id)}) as run_id:
        tracker.log_params(run_id, {"model": model, "evaluation": spec, "tools_style": plan.style})
        summary = T.evaluate_policy(spec=spec, tools_style=plan.style, engine=plan.cfg.engine, policy=policy,
                                    label=label or model,
                                    out_dir=stages.stage_dir(plan.run_dir, "evaluate", spec, plan.style, policy))
        log_evaluation(tracker, run_id, summary, step=0)
        md = publish_scores([row_of(label or model, summary)], plan.spec, label or model)
    get_run_logger().info(md)
    return {"summary": summary, "mlflow_run_id": run_id}
