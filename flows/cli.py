"""The ``itool`` command: the core's commands (``itool_core.cli``: data, eval, warmup, mine, config …) plus
``itool run``, which runs the ``itool`` Prefect flow — the same flow ``prefect deployment run itool/iterate``
runs on a worker — in this process.

Without ``PREFECT_API_URL`` Prefect starts a temporary local server for the run (~8–25 s); every stage is cached
under the run folder, so running the same command again resumes where a killed run stopped, or redoes nothing.
``--set key=value`` overrides one config key in the YAML shape (``--set sft.max_steps_per_stage=2``; the value
is parsed as YAML); the ablation flags are shorthands for such keys.  ``python -m flows.cli`` is the same command.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from itool_core.registry import LOSSES


def _setdefault_env() -> None:
    # No analytics; Prefect's state under ITOOL_HOME rather than ~/.prefect unless told; its SQLite database
    # cannot be created in a folder that does not exist.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the run's own "[itool] stage …" lines are the progress report; Prefect's per-task INFO lines would bury them
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # A fresh PREFECT_HOME makes the temporary server create and migrate its database first: 20-40 s on a
    # 2-core machine, past Prefect's default 20 s wait, and the run then dies before its first stage.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if "PREFECT_HOME" not in os.environ:
        from itool_core.models import itool_home

        os.environ["PREFECT_HOME"] = str(itool_home() / "prefect")
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)


def run_overrides(a: argparse.Namespace) -> dict[str, Any]:
    """The overrides ``itool run`` hands the flow, as dotted keys in the YAML shape (the flow applies them with
    ``itool_core.config.with_overrides``): the ``--config`` file's keys, the shorthand flags, then ``--set``."""
    from itool_core.cli.common import leaves, overrides_of
    from itool_core.config import load_config, to_dict

    out = leaves(to_dict(load_config(a.config))) if a.config else {}
    if a.full_eval:
        out["evaluation.limit"] = None
    flags = {
        "iterations": 0 if a.no_rl else a.iterations,
        "sft.mode": "mixed" if a.mixed_sft else None,
        "preference.loss": a.loss,
        "mcts.simulations": a.simulations,
        "mcts.k": a.k,
        "evaluation.limit": None if a.full_eval else a.eval_limit,
    }
    out.update(overrides_of(a, flags))
    return out


def _cmd_run(a: argparse.Namespace) -> int:
    from itool_core.cli import checks
    from itool_core.config import profile, validate_paths, with_overrides

    over = run_overrides(a)
    name = over.get("profile", a.profile)
    # a bad key, a missing model / data path or an unreachable hub model fails here, before Prefect starts (exit 2)
    cfg = validate_paths(with_overrides(profile(name), over))
    checks.model("model", cfg.model)
    _setdefault_env()
    from flows.iterate import iterate

    res = iterate(
        profile=name,
        config=over,
        run_dir=a.run_dir,
        tracking_uri=a.tracking_uri,
        no_warmup=a.no_warmup,
        experiment=a.experiment,
        refresh_cache=a.refresh_cache,
        dask_address=a.dask_address,
        mine_threads=a.mine_threads,
    )
    print()
    print(Path(res["report"]).read_text(encoding="utf-8"))
    print(
        "wall time per stage (s): " + ", ".join(f"{k}={v:.0f}" for k, v in res["wall_s"].items() if k.count("/") <= 1)
    )
    print(f"ran: {', '.join(res['ran']) or '-'}\ncached: {', '.join(res['cached']) or '-'}")
    print(f"\nplot: {res['plot']}\nreport: {res['report']}\nrun folder: {res['run_dir']}")
    from flows.common import tracking_hint

    print(tracking_hint(res["tracking_uri"]))
    return 0


def register_run(sub: Any) -> None:
    """``itool run`` (any profile) and ``itool demo`` (``run --profile demo``: the whole method in minutes)."""
    _run_args(
        sub.add_parser(
            "run",
            aliases=["iterate"],
            description=__doc__.split("\n\n")[0],
            help="the whole method as the Prefect flow itool: data → split → warm-up → N "
            "iterations (buffer, MCTS, preference) → evaluation → report",
        ),
        "quick",
    )
    _run_args(
        sub.add_parser(
            "demo",
            help="the whole method on the embedded model with demo budgets (minutes on a "
            "laptop CPU): itool run --profile demo",
        ),
        "demo",
    )


def _run_args(p: argparse.ArgumentParser, default_profile: str) -> None:
    from itool_core.cli.common import add_config_options

    add_config_options(p, default_profile)
    p.add_argument(
        "--run-dir",
        help="where every stage's artifacts go (default $ITOOL_HOME/runs/<profile>); re-run the same command to resume",
    )
    p.add_argument("--iterations", type=int)
    p.add_argument("--no-warmup", action="store_true", help="ablation: skip the curriculum SFT")
    p.add_argument("--no-rl", action="store_true", help="ablation: stop after the warm-up (iterations 0)")
    p.add_argument("--mixed-sft", action="store_true", help="ablation: shuffled SFT instead of the curriculum")
    p.add_argument("--loss", choices=LOSSES.names(), help="preference.loss")
    p.add_argument("--simulations", type=int, help="MCTS rounds per tree (mcts.simulations)")
    p.add_argument("--k", type=int, help="candidate steps per expansion (mcts.k)")
    p.add_argument("--eval-limit", type=int, help="seeded items per evaluation category (evaluation.limit)")
    p.add_argument("--full-eval", action="store_true", help="evaluate on the full categories")
    p.add_argument("--tracking-uri", help="MLflow URI (default $MLFLOW_TRACKING_URI, else SQLite under ITOOL_HOME)")
    p.add_argument("--experiment", default="itool", help="MLflow experiment")
    p.add_argument("--refresh-cache", action="store_true", help="recompute every stage")
    p.add_argument("--dask-address", help="mine the shards on this Dask scheduler (tcp://host:8786)")
    p.add_argument("--mine-threads", type=int, help="torch CPU threads per mining task")
    p.set_defaults(func=_cmd_run)


def main(argv: list[str] | None = None) -> int:
    from itool_core import cli as core_cli

    return core_cli.run(core_cli.build_parser(extra=[register_run]), argv)


if __name__ == "__main__":
    sys.exit(main())
