"""Run a flow locally, without a deployment: ``python -m flows.cli iterate --profile quick --iterations 1``.

The flow runs in this process (Prefect starts a temporary local server when ``PREFECT_API_URL`` is unset,
~8–25 s); every stage is cached under the run folder, so running the same command again resumes / skips.
``--set key=value`` overrides one config key in the YAML shape (``--set sft.max_steps_per_stage=2``); the
value is parsed as YAML.  For a scheduled service see deployments/deploy.py and docs/SERVICE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def _setdefault_env() -> None:
    # DESIGN.md: no analytics; keep Prefect's state under ITOOL_HOME rather than ~/.prefect unless told.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if "PREFECT_HOME" not in os.environ:
        from itool_core.models import itool_home

        os.environ["PREFECT_HOME"] = str(itool_home() / "prefect")


def _overrides(pairs: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in pairs:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="quick", choices=["quick", "paper"])
    p.add_argument("--run-dir", help="default $ITOOL_HOME/runs/<profile>")
    p.add_argument("--tracking-uri", help="MLflow URI (default $MLFLOW_TRACKING_URI, else SQLite under ITOOL_HOME)")
    p.add_argument("--eval-limit", type=int,
                   help="seeded items per category (0 = full categories; default: the profile's evaluation.limit)")
    p.add_argument("--experiment", default="itool")
    p.add_argument("--refresh-cache", action="store_true", help="recompute every stage (e.g. after a core change)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.cli", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="flow", required=True)
    it = sub.add_parser("iterate", help="the whole method (flow itool)")
    _common(it)
    it.add_argument("--iterations", type=int)
    it.add_argument("--final-eval-limit", type=int)
    it.add_argument("--no-warmup", action="store_true")
    it.add_argument("--dask-address", help="mine the shards on this Dask scheduler (tcp://host:8786)")
    it.add_argument("--mine-threads", type=int, help="torch CPU threads per mining task")
    it.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. sft.max_steps_per_stage=2 (repeatable); "
                         "prefix mcts./policy./preference./evaluation. for those stages")
    wu = sub.add_parser("warmup", help="data, split, curriculum SFT (flow itool-warmup)")
    _common(wu)
    wu.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ev = sub.add_parser("evaluate", help="one model on BFCL + API-Bank (flow itool-evaluate)")
    _common(ev)
    ev.add_argument("model", help="embedded name, model folder or hub id")
    a = ap.parse_args(argv)
    _setdefault_env()
    full = {"limit": None} if a.eval_limit == 0 else None  # None as a flow parameter means "the config's"
    common = dict(profile=a.profile, run_dir=a.run_dir, tracking_uri=a.tracking_uri,
                  eval_limit=a.eval_limit or None, experiment=a.experiment, refresh_cache=a.refresh_cache)
    if a.flow == "evaluate":
        from flows.evaluate import evaluate

        res = evaluate(model=a.model, evaluation=full, **common)
        print(json.dumps({"mlflow_run_id": res["mlflow_run_id"]}))
        return 0
    over = _overrides(a.set)
    stage_over = {k: over.pop(k) for k in ("mcts", "policy", "preference", "evaluation") if k in over}
    if full:
        stage_over["evaluation"] = {**stage_over.get("evaluation", {}), **full}
    if a.flow == "warmup":
        from flows.warmup import warmup

        res = warmup(config=over, evaluation=stage_over.get("evaluation"), **common)
    else:
        from flows.iterate import iterate

        res = iterate(config=over, iterations=a.iterations, final_eval_limit=a.final_eval_limit,
                      no_warmup=a.no_warmup, dask_address=a.dask_address, mine_threads=a.mine_threads,
                      **stage_over, **common)
        print(f"ran: {', '.join(res['ran']) or '-'}\ncached: {', '.join(res['cached']) or '-'}")
    from itool_core.loop import results_table

    print(results_table(res["rows"]))
    print(json.dumps({"mlflow_run_id": res["mlflow_run_id"], "run_dir": res["run_dir"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
