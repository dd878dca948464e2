"""Flow ``itool`` (deployment ``itool/iterate``): the whole method — the one definition that ``itool run``, ``make
demo`` and ``prefect deployment run itool/iterate`` all execute.

Reads top to bottom like §4 of the paper:

1. warm-up: data → split → (base evaluation) → curriculum SFT (Eq. 2–3) → evaluation (skipped with
   ``no_warmup``);
2. iterations i = 1..N: refresh the replay buffer with π_{i−1} (Eq. 4) → mine step-level pairs by MCTS on the
   hardest α (Eq. 5–9) → preference update with reference π_{i−1} (Eq. 10–11) → evaluate π_i;
3. the compute-matched control (``control: true``): the policy the iterations started from, trained further with
   plain SFT for the optimiser steps and tokens the iterations' preference updates spent
   (itool_core/train/control.py), evaluated like any stage — does the method beat the same compute spent on SFT?
4. the report: scores per stage with n and 95 % intervals, the paired comparisons on the same items (each stage
   against the previous one, the final iteration against SFT and the control; per category and pooled; exact
   McNemar), a PNG of the scores per stage (``<run_dir>/report.md``, ``scores.png``).

Every stage is a cached task (tasks/stages.py): re-running the flow with the same parameters redoes nothing,
and a run that died in iteration 2 resumes there.  MLflow (through tasks/tracking.py only): one parent run per
flow run with the full config as params and the scores at ``step=iteration``; one nested run per stage group
(warm-up, iteration i) with losses, pairs, wall time per stage, the pairs file, the evaluation files and a bar
plot.  After every stage group the score table is published as a Prefect markdown artifact.  The flow is named
``itool`` so that the command users type is ``prefect deployment run itool/iterate``.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows import mine as mining
from flows.common import (
    Plan,
    as_json,
    base_model_ref,
    data_source_ref,
    log_base_run,
    log_evaluation,
    log_stage_group,
    publish_scores,
    scores_of,
)
from itool_core.artifacts import atomic_write_json, atomic_write_text
from itool_core.config import RunConfig, dump_config
from itool_core.report import StageScores, comparisons, plot_scores, report_markdown
from tasks import stages
from tasks.stages import StageRunner
from tasks.tracking import Tracker


# log_prints stays off: dill (via datasets) captures dis.dis() output by swapping sys.stdout, and Prefect's
# print patch would forward those bytecode listings into the run's logs.
@flow(name="itool", log_prints=False)
def iterate(
    profile: str = "quick",
    config: dict[str, Any] | None = None,
    iterations: int | None = None,
    run_dir: str | None = None,
    tracking_uri: str | None = None,
    eval_limit: int | None = None,
    mcts: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    preference: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    no_warmup: bool = False,
    experiment: str = "itool",
    refresh_cache: bool = False,
    dask_address: str | None = None,
    mine_threads: int | None = None,
) -> dict:
    """iTool end to end.  ``config`` overrides the ``profile`` preset (the YAML shape of itool_core.config);
    ``mcts`` / ``policy`` / ``preference`` / ``evaluation`` override single sections of it; ``eval_limit`` is
    the seeded items per category (None: the config's ``evaluation.limit``).  Mining runs its ``mcts.shards``
    shards on threads, or on the Dask cluster at ``dask_address``; ``mine_threads`` pins torch's CPU threads in
    each mining task (flows/mine.py)."""
    t_start = time.perf_counter()
    plan = Plan.build(profile, config, iterations, run_dir, eval_limit, mcts, policy, preference, evaluation, no_warmup)
    cfg, style = plan.cfg, plan.style
    eval_cfg = cfg.evaluation_config()  # tools rendered as the policy was trained
    serve = cfg.engine_serve()  # the server settings where the engine is a served one, else None
    stage = StageRunner(plan.run_dir, refresh_cache)
    tracker = Tracker(tracking_uri, experiment)
    scores: list[StageScores] = []
    work: dict[str, dict[str, float]] = {}  # per stage: tokens processed and compute seconds (run_*.json)
    run_tags = {"prefect.flow_run_id": str(flow_run.id), "prefect.flow_run_url": str(flow_run.ui_url or "-")}
    with tracker.run(f"itool {flow_run.name}", tags=run_tags) as parent:
        tracker.log_params(parent, plan.params())
        # the exact configuration of this run, loadable with `itool run --config`
        tracker.log_artifact(parent, dump_config(cfg, plan.run_dir / "config.yaml"), "report")

        # ---- 1. warm-up
        data = stage(
            "data",
            stages.load_data,
            data=cfg.data,
            data_format=cfg.loader(),
            build=cfg.build,
            run_profile=cfg.profile,
            seed=cfg.seed,
            source=data_source_ref(cfg.data),
        )
        split = stage("split", stages.split_data, split=cfg.split, train=data)
        pi = base_model_ref(cfg.model)
        ev = None
        if cfg.evaluation.base:
            ev = stage(
                "eval_base",
                stages.evaluate_policy,
                evaluation=eval_cfg,
                policy=pi,
                label="base",
                engine=cfg.engine,
                serve=serve,
            )
            scores.append(scores_of(ev, kind="base"))
            log_evaluation(tracker, parent, ev, step=0, prefix="base/")
            log_base_run(tracker, parent, plan, stage, ev)
        if not plan.no_warmup:
            warm_params = plan.section_params("warm-up")
            with tracker.run("warm-up", parent_run_id=parent, tags={"iteration": "0"}, params=warm_params) as child:
                warm = stage("warmup", stages.warmup_sft, model=pi, sft=cfg.sft, split=split, launch=cfg.launch)
                pi = warm.policy
                work["warmup"] = _trained_work(warm)
                ev = stage(
                    "eval_sft",
                    stages.evaluate_policy,
                    evaluation=eval_cfg,
                    policy=pi,
                    label=f"SFT ({cfg.sft.mode})",
                    engine=cfg.engine,
                    serve=serve,
                )
                scores.append(scores_of(ev, kind="sft"))
                for h in warm.history:
                    tracker.log_metrics(child, {"sft/loss": h["loss"]}, step=int(h["step"]))
                tracker.log_metrics(child, {f"sft/{s['name']}/train_loss": s["train_loss"] for s in warm.stages})
                log_stage_group(tracker, child, stage, ["data", "split", "warmup", "eval_sft"])
                log_evaluation(tracker, child, ev, step=0)
                log_evaluation(tracker, parent, ev, step=0, plot=False)
        mlflow_url = tracker.run_url(parent)
        publish_scores(scores, plan.subset(), "warm-up", runner=stage, mlflow_run=mlflow_url)
        start, ev_start = pi, ev  # where the iterations (and the control) start from
        spent = {"steps": 0, "tokens": 0}  # the iterations' training compute: the control's budget

        # ---- 2. iterations
        for i in range(1, cfg.iterations + 1):
            it = f"iter_{i}"
            group = {**plan.section_params("iteration"), "iteration": i}
            with tracker.run(f"iteration {i}", parent_run_id=parent, tags={"iteration": str(i)}, params=group) as child:
                buf = stage(
                    f"{it}/buffer", stages.refresh_buffer, buffer=cfg.buffer, pool=split.pool, policy=pi, iteration=i
                )
                pairs = mining.mine(
                    stage,
                    f"{it}/mine",
                    buffer=buf,
                    buffer_cfg=cfg.buffer,
                    mcts=cfg.mcts,
                    policy_cfg=cfg.policy,
                    tools_style=style,
                    policy=pi,
                    engine=cfg.engine,
                    serve=serve,
                    dask_address=dask_address,
                    torch_threads=mine_threads,
                )
                upd = stage(
                    f"{it}/preference",
                    stages.preference_update,
                    preference=cfg.preference,
                    pairs=pairs,
                    policy=pi,
                    launch=cfg.launch,
                )
                if upd.policy == pi and ev is not None:
                    # no pairs → the same weights: their scores are known, an evaluation would only repeat them
                    stage.progress(f"[itool] {it}/eval: policy unchanged (no pairs), previous scores carried over")
                    ev = stages.Evaluation(label=f"iTool iteration {i}", summary=ev.summary, dir=ev.dir, seconds=0.0)
                else:
                    ev = stage(
                        f"{it}/eval",
                        stages.evaluate_policy,
                        evaluation=eval_cfg,
                        policy=upd.policy,
                        label=f"iTool iteration {i}",
                        engine=cfg.engine,
                        serve=serve,
                    )
                pi = upd.policy
                spent["steps"] += upd.steps
                spent["tokens"] += upd.tokens
                per_step = cfg.preference.per_device_batch_size * cfg.preference.grad_accum_steps
                # distinct pairs the update trained on (the demo's goal: ≥ 8 per iteration)
                trained_on = float(min(pairs.n_pairs, upd.steps * per_step))
                work[f"{it}/preference"] = {
                    **_trained_work(upd),
                    "pairs": float(pairs.n_pairs),
                    "pairs_trained": trained_on,
                }
                work[f"{it}/mine"] = {"generated_tokens": float(pairs.stats.get("generated_tokens", 0.0))}
                scores.append(scores_of(ev, pairs=pairs.n_pairs, kind="iteration"))

                # ---- tracking: scores at step=i on both runs; the details on the iteration's run
                log_evaluation(tracker, parent, ev, step=i, plot=False)
                log_evaluation(tracker, child, ev, step=i)
                tracker.log_metrics(parent, {"pairs_mined": pairs.n_pairs}, step=i)
                tracker.log_metrics(
                    child,
                    {
                        "pairs_mined": pairs.n_pairs,
                        "trees": pairs.n_trees,
                        "buffer/h_mean": buf.h.get("mean"),
                        "preference/train_loss": upd.train_loss,
                        **{f"preference/{k}": v for k, v in upd.metrics.items()},
                    },
                    step=i,
                )
                names = [f"{it}/{s}" for s in ("buffer", "mine", "preference", "eval")]
                log_stage_group(tracker, child, stage, names, step=i)
                for h in upd.history:
                    tracker.log_metrics(
                        child,
                        {f"preference_step/{k}": v for k, v in h.items() if k != "step"},
                        step=int(h.get("step", 0)),
                    )
                tracker.log_artifact(child, pairs.pairs.path, "pairs")
            publish_scores(scores, plan.subset(), f"after iteration {i}", runner=stage, mlflow_run=mlflow_url)

        # ---- 3. the compute-matched control
        control = None
        if cfg.control and cfg.iterations > 0:
            control_params = plan.section_params("control")
            with tracker.run(
                "control", parent_run_id=parent, tags={"iteration": "control"}, params=control_params
            ) as child:
                control = stage(
                    "control",
                    stages.control_sft,
                    sft=cfg.sft,
                    pool=split.pool,
                    policy=start,
                    steps=spent["steps"],
                    tokens=spent["tokens"],
                )
                work["control"] = _trained_work(control)
                label = f"control (SFT +{control.steps} steps)"
                if control.skipped and ev_start is not None:
                    stage.progress(
                        f"[itool] eval_control: {control.skipped}; the starting policy's scores carried over"
                    )
                    ev_c = stages.Evaluation(label=label, summary=ev_start.summary, dir=ev_start.dir, seconds=0.0)
                else:
                    ev_c = stage(
                        "eval_control",
                        stages.evaluate_policy,
                        evaluation=eval_cfg,
                        policy=control.policy,
                        label=label,
                        engine=cfg.engine,
                        serve=serve,
                    )
                scores.append(scores_of(ev_c, kind="control"))
                for h in control.history:
                    tracker.log_metrics(child, {"control/loss": h["loss"]}, step=int(h["step"]))
                tracker.log_metrics(child, {f"control/{k}": v for k, v in control.metrics.items()})
                log_stage_group(tracker, child, stage, ["control", "eval_control"], step=cfg.iterations)
                log_evaluation(tracker, child, ev_c, step=cfg.iterations)
                log_evaluation(tracker, parent, ev_c, step=cfg.iterations, prefix="control/", plot=False)
            publish_scores(scores, plan.subset(), "control", runner=stage, mlflow_run=mlflow_url)

        # ---- 4. the report
        title = f"iTool — profile {cfg.profile}, {cfg.iterations} iteration(s)"
        md = f"# {title}\n\n" + report_markdown(scores, plan.subset(), note=_budget_note(cfg))
        report, png = plan.run_dir / "report.md", plan.run_dir / "scores.png"
        atomic_write_text(report, md)
        plot_scores(scores, png, title=title)
        for f in (report, png):
            tracker.log_artifact(parent, f, "report")
        if ev is not None:
            log_evaluation(tracker, parent, ev, step=cfg.iterations, prefix="final/", plot=False)
        tracker.log_metrics(parent, {f"wall_s_total/{k.replace('/', '.')}": v for k, v in stage.wall.items()})
        tracker.set_tags(parent, stage.tags(list(stage.states)))

    result = {
        "rows": [as_json(s) for s in scores],
        "comparisons": comparisons(scores),
        "control": None
        if control is None
        else {"target": dict(spent), "spent": {"steps": control.steps, "tokens": control.tokens}, **control.metrics},
        "final_policy": pi.path,
        "mlflow_run_id": parent,
        "tracking_uri": tracker.uri,
        "run_dir": str(plan.run_dir),
        "report": str(report),
        "plot": str(png),
        "wall_s": stage.wall,
        "compute_s": stage.compute,
        "states": stage.states,
        "ran": stage.ran,
        "cached": stage.cached,
        "flow_wall_s": time.perf_counter() - t_start,
        "work": work,
    }
    atomic_write_json(plan.run_dir / "flow_summary.json", result)
    return result


def _trained_work(t: stages.Trained) -> dict[str, float]:
    """A training stage's optimiser steps, training tokens (and the tokens its forwards ran, where fewer) and
    compute seconds (throughput in run_*.json)."""
    work = {"steps": float(t.steps), "tokens": float(t.tokens), "seconds": float(t.seconds)}
    if t.computed_tokens:
        work["computed_tokens"] = float(t.computed_tokens)
    return work


def _budget_note(cfg: RunConfig) -> str:
    if cfg.profile == "demo":
        stages = 3 if cfg.sft.mode == "curriculum" else 1
        steps = f"{stages} × {cfg.sft.max_steps_per_stage}" if stages > 1 else f"{cfg.sft.max_steps_per_stage}"
        return (
            f"**Demo budgets** ({steps} warm-up steps, a few trees, {cfg.evaluation.limit} items per category): this "
            "run shows the method working end to end and the warm-up teaching the call format; with this few items "
            "per category an interval spans about ±25 points, so it can show base → SFT, not what the iterations add."
        )
    if cfg.profile == "proof":
        return (
            "**Proof run**: every stage on the same held-out test items, reported once (the budgets were sized from "
            "measured per-step costs, not tuned on any items). The control is the SFT policy trained further with "
            "plain SFT for the optimiser steps and tokens the iterations' preference updates spent "
            "(itool_core/train/control.py)."
        )
    return ""
