"""Flow ``itool`` (deployment ``itool/iterate``): the whole method, warm-up then N iterations, tracked in MLflow.

Reads top to bottom like §4 of the paper:

1. warm-up (flows/warmup.py): data → split → curriculum SFT (skipped when cached, or with ``no_warmup``);
2. iterations i = 1..N: refresh the replay buffer with π_{i−1} (Eq. 4) → mine step-level pairs by MCTS on
   the hardest α (Eq. 5–9) → preference update with reference π_{i−1} (Eq. 10–11) → evaluate π_i;
3. a final evaluation of π_N (a larger subset with ``final_eval_limit``; otherwise the last iteration's).

Every stage is a cached Prefect task exchanging references, so re-running the flow with the same parameters
redoes nothing, and a run that died in iteration 3 resumes there.  MLflow (through tasks/tracking.py only):
one parent run per flow run with the full config as params and the scores at ``step=iteration``; one nested
run per iteration with losses, pairs mined, wall time per stage, the pairs file, the evaluation files and a
BFCL / API-Bank bar plot.  After every iteration the score table is published as a Prefect markdown
artifact.  The flow is named ``itool`` so that the command users type is ``prefect deployment run
itool/iterate``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from tasks import stages
from tasks.tracking import Tracker

from flows import mine as mining
from flows.evaluate import log_evaluation, publish_scores, row_of
from flows.warmup import Clock, Plan, warm_up


# log_prints stays off: dill (via datasets) captures dis.dis() output by swapping sys.stdout, and Prefect's
# print patch would forward those bytecode listings into the run's logs.
@flow(name="itool", log_prints=False)
def iterate(profile: str = "quick", config: dict[str, Any] | None = None, iterations: int | None = None,
            run_dir: str | None = None, tracking_uri: str | None = None, eval_limit: int | None = None,
            final_eval_limit: int | None = None, mcts: dict[str, Any] | None = None,
            policy: dict[str, Any] | None = None, preference: dict[str, Any] | None = None,
            evaluation: dict[str, Any] | None = None, no_warmup: bool = False, experiment: str = "itool",
            refresh_cache: bool = False, dask_address: str | None = None, mine_threads: int | None = None) -> dict:
    """iTool end to end.  ``config`` overrides the ``profile`` preset (the YAML shape of itool_core.config);
    ``mcts`` / ``policy`` / ``preference`` / ``evaluation`` override single sections of it; ``eval_limit`` is
    the seeded items per category (None: the config's ``evaluation.limit``).  Mining runs its ``mcts.shards``
    shards on threads, or on the Dask cluster at ``dask_address``; ``mine_threads`` pins torch's CPU threads
    in each mining task (flows/mine.py)."""
    plan = Plan.build(profile, config, iterations, run_dir, eval_limit, mcts, policy, preference, evaluation,
                      no_warmup)
    T = stages.bind(plan.run_dir, refresh_cache)
    tracker = Tracker(tracking_uri, experiment)
    rows: list[dict] = []
    clock = Clock()
    spec = plan.d("spec")
    with tracker.run(f"itool {flow_run.name}", tags={"prefect.flow_run_id": str(flow_run.id)}) as parent:
        tracker.log_params(parent, plan.params())

        # ---- 1. warm-up
        start = warm_up(T, plan, tracker, parent, clock, rows)
        pool, pi, prev_eval = start["split"]["pool"], start["policy"], start.get("eval")
        publish_scores(rows, plan.spec, "warm-up")

        # ---- 2. iterations
        last_eval = None
        for i in range(1, plan.cfg.iterations + 1):
            it = f"iter_{i}"
            with tracker.run(f"iteration {i}", parent_run_id=parent, tags={"iteration": str(i)}) as child:
                buf = clock(f"{it}/buffer", T.refresh_buffer, buffer=plan.d("cfg")["buffer"], pool=pool, policy=pi,
                            iteration=i, out_dir=stages.stage_dir(plan.run_dir, f"{it}/buffer",
                                                                  plan.d("cfg")["buffer"], pool["sha256"], pi))
                pairs = clock.composite(f"{it}/mine", mining.mine, T=T, run_dir=plan.run_dir, name=f"{it}/mine",
                                        mcts=plan.d("mcts"), policy_cfg=plan.d("policy"),
                                        buffer_cfg=plan.d("cfg")["buffer"], tools_style=plan.style, buffer=buf,
                                        policy=pi, engine=plan.cfg.engine, dask_address=dask_address,
                                        torch_threads=mine_threads,
                                        refresh_cache=refresh_cache)
                upd = clock(f"{it}/preference", T.preference_update, preference=plan.d("preference"), pairs=pairs,
                            policy=pi, out_dir=stages.stage_dir(plan.run_dir, f"{it}/preference",
                                                                plan.d("preference"), pairs["sha256"], pi))
                unchanged = upd["sha256"] == pi["sha256"] and prev_eval is not None  # no pairs: same weights
                pi = stages.policy_ref(upd["path"], upd["sha256"])
                if unchanged:
                    ev = prev_eval  # its scores are known; an evaluation would only repeat them
                else:
                    ev = clock(f"{it}/eval", T.evaluate_policy, spec=spec, tools_style=plan.style,
                               engine=plan.cfg.engine, policy=pi, label=f"iTool iteration {i}",
                               out_dir=stages.stage_dir(plan.run_dir, f"{it}/eval", spec, plan.style, pi))
                last_eval = prev_eval = ev

                # ---- tracking: scores at step=i on both runs; the details on the iteration's run
                rows.append(row_of(f"iTool iteration {i}", ev, pairs=pairs["n_pairs"]))
                log_evaluation(tracker, parent, ev, step=i, plot=False)
                log_evaluation(tracker, child, ev, step=i)
                summary = {"pairs_mined": pairs["n_pairs"], "trees": pairs["n_trees"], "buffer/h_mean":
                           (buf.get("h") or {}).get("mean"), "preference/train_loss": upd.get("train_loss"),
                           **{f"preference/{k}": v for k, v in (upd.get("metrics") or {}).items()}}
                tracker.log_metrics(parent, {"pairs_mined": pairs["n_pairs"]}, step=i)
                tracker.log_metrics(child, {**summary, **clock.metrics([f"{it}/{s}" for s in
                                                                        ("buffer", "mine", "preference", "eval")])},
                                    step=i)
                for h in upd.get("history", []):
                    tracker.log_metrics(child, {f"preference_step/{k}": v for k, v in h.items() if k != "step"},
                                        step=int(h.get("step", 0)))
                tracker.log_artifact(child, pairs["path"], "pairs")
                publish_scores(rows, plan.spec, f"after iteration {i}")

        # ---- 3. final evaluation
        if last_eval is None or (final_eval_limit is not None and final_eval_limit != plan.spec.limit):
            final_spec = {**spec, "limit": final_eval_limit if final_eval_limit is not None else spec["limit"]}
            last_eval = clock("final/eval", T.evaluate_policy, spec=final_spec, tools_style=plan.style,
                              engine=plan.cfg.engine, policy=pi, label="final",
                              out_dir=stages.stage_dir(plan.run_dir, "final/eval", final_spec, plan.style, pi))
        log_evaluation(tracker, parent, last_eval, step=plan.cfg.iterations, prefix="final/")
        tracker.log_metrics(parent, {f"wall_s_total/{k.replace('/', '.')}": v for k, v in clock.wall.items()})

    from itool_core.artifacts import atomic_write_json

    result = {"rows": rows, "final_policy": pi["path"], "final": {k: last_eval.get(k) for k in ("bfcl", "apibank")},
              "mlflow_run_id": parent, "run_dir": str(plan.run_dir), "wall_s": clock.wall,
              "compute_s": clock.compute, "states": clock.states,
              "ran": [k for k, v in clock.states.items() if v != "Cached"],
              "cached": [k for k, v in clock.states.items() if v == "Cached"]}
    atomic_write_json(plan.run_dir / "flow_summary.json", result)
    return result
