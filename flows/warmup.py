"""Flow ``itool-warmup``: data → split → (base evaluation) → curriculum SFT → SFT evaluation.

Also the shared plumbing of the flows: :class:`Plan` (the validated configs of one flow run, built from the
flow's plain parameters) and :func:`warm_up`, the first half of the method, which the ``itool`` (iterate) flow
runs before its iterations.  Every stage is a cached task (tasks/stages.py): a second run with the same
inputs skips it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from tasks import stages
from tasks.tracking import Tracker

from flows.evaluate import log_evaluation, publish_scores, row_of


@dataclass(frozen=True)
class Plan:
    """Everything a flow run needs, validated before any stage starts (a bad key fails in a second, not after
    an hour of training).  Configs are dataclasses here and plain dicts (``to_dict``) at task boundaries."""

    cfg: Any  # itool_core.config.RunConfig: every stage's section
    run_dir: Path
    no_warmup: bool = False

    @classmethod
    def build(cls, profile: str = "quick", config: dict | None = None, iterations: int | None = None,
              run_dir: str | None = None, eval_limit: int | None = None, mcts: dict | None = None,
              policy: dict | None = None, preference: dict | None = None, evaluation: dict | None = None,
              no_warmup: bool = False) -> "Plan":
        """``config`` (the YAML shape of itool_core.config) overrides the ``profile`` preset; the section
        arguments and ``iterations`` / ``eval_limit`` override single sections on top (the UI's knobs)."""
        from itool_core.config import RunConfig, from_dict
        from itool_core.config import profile as preset
        from itool_core.models import itool_home, with_concrete_precision

        data = dict(config or {})
        for name, part in (("mcts", mcts), ("policy", policy), ("preference", preference),
                           ("evaluation", evaluation)):
            if part:
                data[name] = {**data.get(name, {}), **part}
        if iterations is not None:
            data["iterations"] = iterations
        if eval_limit is not None:
            data["evaluation"] = {**data.get("evaluation", {}), "limit": eval_limit}
        cfg = with_concrete_precision(from_dict(RunConfig, data, preset(data.get("profile", profile))))
        # absolute by default: a deployment's worker runs flows in a scratch directory
        return cls(cfg=cfg, run_dir=Path(run_dir or itool_home() / "runs" / cfg.profile).resolve(),
                   no_warmup=no_warmup)

    @property
    def mcts(self) -> Any:
        return self.cfg.mcts

    @property
    def policy(self) -> Any:
        return self.cfg.policy

    @property
    def preference(self) -> Any:
        return self.cfg.preference

    @property
    def spec(self) -> Any:
        return self.cfg.evaluation

    def d(self, part: str) -> dict:
        from itool_core.config import to_dict

        return to_dict(getattr(self, part))

    @property
    def style(self) -> str:
        return self.cfg.sft.tools_style

    def params(self) -> dict:
        """The full configuration, as MLflow params."""
        # keys = the YAML key paths (sft.learning_rate, mcts.simulations ...)
        return {**self.d("cfg"), "run_dir": str(self.run_dir), "no_warmup": self.no_warmup}


@dataclass
class Clock:
    """Wall time per stage in this run (≈ 0 for a cached stage) next to the compute time the stage reported
    when it really ran (``seconds`` in its cached result)."""

    wall: dict[str, float] = field(default_factory=dict)
    compute: dict[str, float] = field(default_factory=dict)
    #: Final Prefect state name per stage: "Completed" (ran) or "Cached" (skipped: same inputs as before).
    states: dict[str, str] = field(default_factory=dict)

    def __call__(self, name: str, task: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        state = task(**kwargs, return_state=True)
        self.wall[name] = time.perf_counter() - t0
        self.states[name] = state.name
        out = state.result()  # raises the task's exception when it failed (after its retries)
        if isinstance(out, dict) and isinstance(out.get("seconds"), (int, float)):
            self.compute[name] = float(out["seconds"])
        return out

    def composite(self, stage: str, fn: Any, **kwargs: Any) -> Any:
        """Time a stage made of several tasks; ``fn`` returns ``(output, state name)``."""
        t0 = time.perf_counter()
        out, state = fn(**kwargs)
        self.wall[stage] = time.perf_counter() - t0
        self.states[stage] = state
        if isinstance(out, dict) and isinstance(out.get("seconds"), (int, float)):
            self.compute[stage] = float(out["seconds"])
        return out

    def metrics(self, names: list[str] | None = None) -> dict[str, float]:
        keys = names if names is not None else list(self.wall)
        return {**{f"wall_s/{k.split('/')[-1]}": self.wall[k] for k in keys if k in self.wall},
                **{f"compute_s/{k.split('/')[-1]}": self.compute[k] for k in keys if k in self.compute}}


def warm_up(T: Any, plan: Plan, tracker: Tracker, parent: str, clock: Clock, rows: list[dict]) -> dict:
    """Data → split → base evaluation (optional) → SFT → SFT evaluation; returns the split references and the
    policy the iterations start from.  Logs a nested MLflow run "warm-up" (step 0)."""
    from itool_core.loop import fingerprint
    from itool_core.models import resolve

    cfg, run_dir, spec = plan.cfg, plan.run_dir, plan.d("spec")
    source = stages.source_ref(cfg.data)
    data = clock("data", T.load_data, data=cfg.data, profile=cfg.profile, seed=cfg.seed, source=source,
                 out_dir=stages.stage_dir(run_dir, "data", cfg.data, cfg.profile, cfg.seed, source))
    split = clock("split", T.split_data, split=plan.d("cfg")["split"], train=data,
                  out_dir=stages.stage_dir(run_dir, "split", plan.d("cfg")["split"], data["sha256"]))

    base = stages.policy_ref(resolve(cfg.model), fingerprint("base", cfg.model))
    if plan.spec.base:
        ev = clock("eval_base", T.evaluate_policy, spec=spec, tools_style=plan.style,
                   engine=plan.cfg.engine, policy=base, label="base",
                   out_dir=stages.stage_dir(run_dir, "eval_base", spec, plan.style, base))
        rows.append(row_of("base", ev))
        log_evaluation(tracker, parent, ev, step=0, prefix="base/")
    if plan.no_warmup:
        return {"split": split, "policy": base, "eval": ev if plan.spec.base else None}

    with tracker.run("warm-up", parent_run_id=parent, tags={"iteration": "0"}) as child:
        sft_cfg = plan.d("cfg")["sft"]
        warm = clock("warmup", T.warmup_sft, model=cfg.model, sft=sft_cfg, easy=split["easy"],
                     medium=split["medium"], hard=split["hard"],
                     out_dir=stages.stage_dir(run_dir, "warmup", cfg.model, sft_cfg, split["easy"]["sha256"],
                                              split["medium"]["sha256"], split["hard"]["sha256"]))
        policy = stages.policy_ref(warm["path"], warm["sha256"])
        ev = clock("eval_sft", T.evaluate_policy, spec=spec, tools_style=plan.style,
                   engine=plan.cfg.engine, policy=policy,
                   label=f"SFT ({cfg.sft.mode})",
                   out_dir=stages.stage_dir(run_dir, "eval_sft", spec, plan.style, policy))
        rows.append(row_of(f"SFT ({cfg.sft.mode})", ev))
        for h in warm["history"]:
            tracker.log_metrics(child, {"sft/loss": h["loss"]}, step=h["step"])
        tracker.log_metrics(child, {f"sft/{s['name']}/train_loss": s["train_loss"] for s in warm["stages"]}, step=0)
        tracker.log_metrics(child, clock.metrics(["data", "split", "eval_base", "warmup", "eval_sft"]), step=0)
        for target in (child, parent):
            log_evaluation(tracker, target, ev, step=0, plot=target == child)
    return {"split": split, "policy": policy, "eval": ev}


# log_prints stays off: dill (via datasets) captures dis.dis() output by swapping sys.stdout, and Prefect's
# print patch would forward those bytecode listings into the run's logs.
@flow(name="itool-warmup", log_prints=False)
def warmup(profile: str = "quick", config: dict | None = None, run_dir: str | None = None,
           tracking_uri: str | None = None, eval_limit: int | None = None, evaluation: dict | None = None,
           experiment: str = "itool", refresh_cache: bool = False) -> dict:
    """The warm-up half of iTool on its own: data, split, curriculum SFT and its evaluation."""
    plan = Plan.build(profile, config, run_dir=run_dir, eval_limit=eval_limit, evaluation=evaluation)
    T = stages.bind(plan.run_dir, refresh_cache)
    tracker = Tracker(tracking_uri, experiment)
    rows: list[dict] = []
    clock = Clock()
    with tracker.run(f"itool-warmup {flow_run.name}", tags={"prefect.flow_run_id": str(flow_run.id)}) as parent:
        tracker.log_params(parent, plan.params())
        out = warm_up(T, plan, tracker, parent, clock, rows)
        publish_scores(rows, plan.spec, "warm-up")
    return {**out, "rows": rows, "mlflow_run_id": parent, "run_dir": str(plan.run_dir), "wall_s": clock.wall,
            "states": clock.states}
