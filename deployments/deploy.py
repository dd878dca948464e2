"""One command that registers the iTool deployments with a Prefect server:

* ``itool/iterate``          the whole method (flows/iterate.py), nightly cron schedule, at most one run at a time;
* ``itool-evaluate/evaluate`` one model on BFCL + API-Bank (flows/evaluate.py), on demand.

(The warm-up alone is ``itool/iterate`` with ``iterations: 0``: the same flow, the same cached stages.)

All run on a ``process`` work pool (created if missing) from this checkout (``from_source`` of the repository
folder), so a worker on the same machine — ``prefect worker start --pool itool-process`` — needs no image.
Every deployment says what it runs: its parameters always name the ``profile`` (default ``quick``: hours on 2
CPU cores; ``demo``: minutes) and the ``run_dir`` (default null: each flow run writes into a folder of its own,
``$ITOOL_HOME/runs/flow-runs/<flow run name>``; give a folder to resume a run there).  They stay editable in
the UI and per run (the parameter schema is enforced, so a typo is rejected when the run is created, not hours
later).  Tags follow the profile's device: ``gpu`` only for a CUDA profile.

    python deployments/deploy.py                       # server at $PREFECT_API_URL; profile quick
    python deployments/deploy.py --profile demo        # the demo budgets: a triggered run takes minutes
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
DEFAULT_PROFILE = "quick"


def profile_tags(profile: str) -> list[str]:
    """Deployment tags true to the profile's device: ``gpu`` only where the profile trains on CUDA."""
    from itool_core.config import profile as preset

    device = str(preset(profile).device)
    return ["itool", f"profile:{profile}", "gpu" if device.startswith("cuda") else "cpu"]


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
    """The two RunnerDeployments (not yet sent to the server).  ``profile`` and ``run_dir`` are always among
    their parameters (null ``run_dir``: a folder per flow run)."""
    from prefect import Flow
    from prefect.schedules import Cron

    given = dict(parameters or {})
    params = {k: v for k, v in given.items() if v is not None}
    params["profile"] = params.get("profile") or DEFAULT_PROFILE
    params["run_dir"] = given.get("run_dir")  # explicit, also when null
    shared = {k: params[k] for k in ("profile", "run_dir", "tracking_uri", "eval_limit", "experiment") if k in params}
    tags = profile_tags(params["profile"])
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
            tags=tags,
            description=f"iTool, profile {params['profile']}: warm-up SFT, then N iterations of buffer refresh → "
            "MCTS pairs → preference update → evaluation (cached per stage; MLflow tracked). run_dir null: each "
            "flow run in its own folder under $ITOOL_HOME/runs/flow-runs/.",
        ),
        evaluate.to_deployment(
            name="evaluate",
            parameters=shared,
            tags=[t for t in tags if t not in ("gpu", "cpu")],
            description="Evaluate one model on BFCL + API-Bank L1/L2.",
        ),
    ]


def deploy_all(pool: str = DEFAULT_POOL, deployments: list | None = None, **kwargs) -> list:
    """Create / update the deployments (``deployments``, else :func:`build_deployments` of ``kwargs``) on the
    server at ``PREFECT_API_URL``; returns their ids."""
    from prefect import deploy

    ensure_process_pool(pool)
    return deploy(
        *(deployments or build_deployments(**kwargs)),
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
    p.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        help="parameter profile: quick (hours on 2 CPU cores) | demo (minutes) | paper (GPU); default quick",
    )
    p.add_argument("--iterations", type=int, help="parameter iterations (default: the profile's)")
    p.add_argument("--eval-limit", type=int, help="parameter eval_limit: seeded items per category")
    p.add_argument(
        "--run-dir",
        help="absolute run folder on the worker, shared by every flow run (resumes there); default: a folder per "
        "flow run, $ITOOL_HOME/runs/flow-runs/<flow run name>",
    )
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
    deps = build_deployments(cron=a.cron, timezone=a.timezone, parameters=params, paused=a.paused)
    ids = deploy_all(a.pool, deployments=deps)
    print(f"deployed {len(ids)} deployments to work pool {a.pool!r}:")
    for name, d in zip(("itool/iterate", "itool-evaluate/evaluate"), deps):
        when = f"cron {a.cron!r} ({a.timezone}){', paused' if a.paused else ''}" if d.schedules else "on demand"
        print(f"  {name:<25} {when}; parameters {json.dumps(d.parameters)}")
    print(
        f"\nstart a worker:  prefect worker start --pool {a.pool}\n"
        "trigger a run:   prefect deployment run itool/iterate --watch "
        "(add -p iterations=1 -p eval_limit=5 to override per run)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
