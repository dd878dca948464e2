"""Flow ``itool-evaluate`` (deployment ``itool-evaluate/evaluate``): one model on BFCL + API-Bank, through the same
cached ``evaluate_policy`` stage the ``itool`` flow evaluates its stages with, tracked in MLflow.

Every number is on a seeded subset unless the evaluation's ``limit`` is None; the table says so, with n and a
95 % interval per category.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.common import Plan, base_model_ref, log_evaluation, publish_scores, scores_of
from tasks import stages
from tasks.stages import StageRunner
from tasks.tracking import Tracker


# log_prints stays off: dill (via datasets) captures dis.dis() output by swapping sys.stdout, and Prefect's
# print patch would forward those bytecode listings into the run's logs.
@flow(name="itool-evaluate", log_prints=False)
def evaluate(
    model: str = "smollm2-135m-instruct",
    label: str | None = None,
    profile: str = "quick",
    run_dir: str | None = None,
    tracking_uri: str | None = None,
    eval_limit: int | None = None,
    evaluation: dict | None = None,
    experiment: str = "itool",
    refresh_cache: bool = False,
) -> dict:
    """Evaluate ``model`` (an embedded name, a model folder — e.g. a run's ``final_policy`` — or a hub id)."""
    plan = Plan.build(profile, run_dir=run_dir, eval_limit=eval_limit, evaluation=evaluation)
    stage = StageRunner(plan.run_dir, refresh_cache)
    policy = base_model_ref(model)
    tracker = Tracker(tracking_uri, experiment)
    with tracker.run(f"itool-evaluate {flow_run.name}", tags={"prefect.flow_run_id": str(flow_run.id)}) as run_id:
        tracker.log_params(
            run_id,
            {
                "model": model,
                "evaluation": plan.params()["evaluation"],
                "tools_style": plan.style,
                "engine": plan.cfg.engine,
            },
        )
        ev = stage(
            "evaluate",
            stages.evaluate_policy,
            evaluation=plan.cfg.evaluation_config(),
            policy=policy,
            label=label or model,
            engine=plan.cfg.engine,
            serve=plan.cfg.engine_serve(),
        )
        log_evaluation(tracker, run_id, ev, step=0)
        md = publish_scores([scores_of(ev)], plan.subset(), label or model)
    get_run_logger().info(md)
    return {"summary": ev.summary, "dir": ev.dir, "mlflow_run_id": run_id}
