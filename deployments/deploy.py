"""One command that registers the iTool deployments with a Prefect server:

* ``itool/iterate``          the whole method (flows/iterate.py), nightly cron schedule, at most one run at a time;
* ``itool-evaluate/evaluate`` one model on BFCL + API-Bank (flows/evaluate.py), on demand.

(The warm-up alone is ``itool/iterate`` with ``iterations: 0``: the same flow, the same cached stages.)

All run on a ``process`` work pool (created if missing) from this checkout (``from_source`` of the repository
folder), so a worker on the same machine — ``prefect worker start --pool itool-process`` — needs no image.
Parameters keep their flow defaults plus the ones given here, and stay editable in the UI (the parameter
schema is enforced, so a typo is rejected when the run is created, not hours later).

    python deployments/deploy.py                       # server at $PREFECT_API_URL
    python deployments/deploy.py --cron "30 1 * * *" --timezone Europe/Berlin --iterations 3 --eval-limit 50
    prefect deployment run itool/iterate --watch       # trigger now

The declarative twin of this script is deployments/prefect.yaml (``prefect deploy --all``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

DEFAULT_POOL = "itool-process"
DEFAULT_CRON = "0 2 * * *"  # nightly, 02:00


def ensure_process_pool(name: str) -> None:
    """Create the process work pool ``name`` unless it exists (idempotent)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            except ObjectAlreadyExists:  # created concurrently
                pass


def build_deployments(
    cron: str = DEFAULT_CRON,
    timezone: str = "UTC",
    parameters: dict | None = None,
    paused: bool = False,
    source: str | Path = ROOT,
) -> list:
    """The two RunnerDeployments (not yet sent to the server)."""
    from prefect import Flow
    from prefect.schedules import Cron

    params = {k: v for k, v in (parameters or {}).items() if v is not None}
    shared = {k: params[k] for k in ("profile", "run_dir", "tracking_uri", "eval_limit", "experiment") if k in params}
    iterate = Flow.from_source(str(source), "flows/iterate.py:iterate")
    evaluate = Flow.from_source(str(source), "flows/evaluate.py:evaluate")
    return [
        iterate.to_deployment(
            name="iterate",
            schedules=[Cron(cron, timezone=timezone)],
            paused=paused,
            parameters=params,
            # a nightly run that is still going when the next one is due must not start a second training
            concurrency_limit=1,
            tags=["itool", "gpu"],
            description="iTool: warm-up SFT, then N iterations of buffer refresh → MCTS pairs → preference "
            "update → evaluation (cached per stage; MLflow tracked).",
        ),
        evaluate.to_deployment(
            name="evaluate",
            parameters=shared,
            tags=["itool"],
            description="Evaluate one model on BFCL + API-Bank L1/L2.",
        ),
    ]


def deploy_all(pool: str = DEFAULT_POOL, **kwargs) -> list:
    """Create / update the deployments on the server at ``PREFECT_API_URL``; returns their ids."""
    from prefect import deploy

    ensure_process_pool(pool)
    return deploy(
        *build_deployments(**kwargs),
        work_pool_name=pool,
        build=False,
        push=False,
        print_next_steps_message=False,
        ignore_warnings=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", default=DEFAULT_POOL, help="process work pool (created if missing)")
    p.add_argument("--cron", default=DEFAULT_CRON, help="schedule of itool/iterate (default: nightly 02:00)")
    p.add_argument("--timezone", default="UTC")
    p.add_argument("--paused", action="store_true", help="create the schedule paused")
    p.add_argument("--profile", help="default parameter: quick | demo | paper")
    p.add_argument("--iterations", type=int)
    p.add_argument("--eval-limit", type=int)
    p.add_argument("--run-dir", help="absolute run folder on the worker (default $ITOOL_HOME/runs/<profile>)")
    p.add_argument("--tracking-uri", help="MLflow URI (default: $MLFLOW_TRACKING_URI on the worker, else SQLite)")
    p.add_argument(
        "--parameters",
        default="{}",
        metavar="JSON",
        help='more default parameters of itool/iterate, e.g. \'{"config": {"sft": {"max_steps_per_stage": 2}}}\'',
    )
    a = p.parse_args(argv)
    params = {
        "profile": a.profile,
        "iterations": a.iterations,
        "eval_limit": a.eval_limit,
        "run_dir": a.run_dir,
        "tracking_uri": a.tracking_uri,
        **json.loads(a.parameters),
    }
    ids = deploy_all(a.pool, cron=a.cron, timezone=a.timezone, parameters=params, paused=a.paused)
    print(f"deployed {len(ids)} deployments to work pool {a.pool!r}:")
    for name in ("itool/iterate", "itool-evaluate/evaluate"):
        print(f"  {name}")
    print(
        f"\nstart a worker:  prefect worker start --pool {a.pool}\n"
        "trigger a run:   prefect deployment run itool/iterate --watch"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
