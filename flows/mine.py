"""Flow ``itool-mine``: step-level MCTS over the shards of the hardest α % of the buffer, on a chosen task runner.

Mining is the method's cost centre (§4.3), and its trees are independent, so the selected examples are cut into
``mcts.shards`` shards (``tasks.stages.select_shards``) and this sub-flow maps ``mine_shard`` over them:

* with no address, on Prefect's ``ThreadPoolTaskRunner`` (the default; on one machine the engine already uses
  every core, so threads mostly overlap I/O — the engine serialises seeded sampling between threads);
* with ``dask_address`` (``tcp://host:8786`` of a running ``dask scheduler`` / ``LocalCluster``), on a
  ``prefect_dask.DaskTaskRunner``: each shard runs in a Dask worker process, e.g. one worker per GPU.

The shards (not the runner) fix every sampling seed, so both runners give the same pairs — a test checks it on
a real ``LocalCluster`` with two workers.  ``merge_pairs`` then concatenates the shards in shard order.
Each shard is a cached task: a re-run after a crash re-mines only the shards that had not finished.
"""

from __future__ import annotations

import time

from prefect import flow, unmapped

from itool_core.artifacts import ArtifactRef, ContentRef
from itool_core.config import BufferConfig, MCTSConfig, PolicyConfig, ServeConfig
from tasks import stages
from tasks.stages import Buffer, Mined, StageRunner


def task_runner(dask_address: str | None = None, threads: int | None = None):
    """The runner for the mining tasks: Dask on ``dask_address``, else a thread pool of ``threads`` workers."""
    if dask_address:
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as e:  # pragma: no cover - the [dask] extra is part of `make install`
            raise ImportError("a Dask address needs prefect-dask: pip install '.[dask]'") from e
        return DaskTaskRunner(address=dask_address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=threads)


@flow(name="itool-mine", flow_run_name="{name}", log_prints=False)
def mine_shards(
    run_dir: str,
    name: str,
    shards: list[ArtifactRef],
    mcts: MCTSConfig,
    policy_cfg: PolicyConfig,
    tools_style: str,
    policy: ContentRef,
    engine: str = "hf",
    serve: ServeConfig | None = None,
    torch_threads: int | None = None,
    refresh_cache: bool = False,
) -> list[tuple[Mined, str]]:
    """``mine_shard`` mapped over ``shards`` (one output folder per shard, named by its inputs); each shard's
    record with its final state name."""
    runner = StageRunner(run_dir, refresh_cache)
    inputs = [
        dict(
            mcts=mcts,
            policy_cfg=policy_cfg,
            tools_style=tools_style,
            shard=s,
            policy=policy,
            torch_threads=torch_threads,
            engine=engine,
            serve=serve,
        )
        for s in shards
    ]
    futures = runner.bind(stages.mine_shard).map(
        mcts=unmapped(mcts),
        policy_cfg=unmapped(policy_cfg),
        tools_style=unmapped(tools_style),
        shard=shards,
        policy=unmapped(policy),
        torch_threads=unmapped(torch_threads),
        engine=unmapped(engine),
        serve=unmapped(serve),
        out_dir=[runner.out_dir(f"{name}/shard_{i}", **kw) for i, kw in enumerate(inputs)],
    )
    futures.wait()
    return [(f.result(), f.state.name) for f in futures]


def mine(
    stage: StageRunner,
    name: str,
    *,
    buffer: Buffer,
    buffer_cfg: BufferConfig,
    mcts: MCTSConfig,
    policy_cfg: PolicyConfig,
    tools_style: str,
    policy: ContentRef,
    engine: str = "hf",
    serve: ServeConfig | None = None,
    dask_address: str | None = None,
    torch_threads: int | None = None,
) -> Mined:
    """select shards → mine them (sub-flow on the chosen runner) → merge: the iteration's pairs.  Recorded as
    one stage ``name`` ("Cached" when every part was a cache hit)."""
    t0 = time.perf_counter()
    shards = stage(f"{name}/select", stages.select_shards, buffer_cfg=buffer_cfg, mcts=mcts, buffer=buffer)
    states = [stage.states[f"{name}/select"]]
    sub = mine_shards.with_options(task_runner=task_runner(dask_address, threads=len(shards) or 1))
    mined = sub(
        run_dir=str(stage.run_dir),
        name=name,
        shards=shards,
        mcts=mcts,
        policy_cfg=policy_cfg,
        tools_style=tools_style,
        policy=policy,
        engine=engine,
        serve=serve,
        torch_threads=torch_threads,
        refresh_cache=stage.refresh_cache,
    )
    states += [s for _, s in mined]
    merged = stage(f"{name}/pairs", stages.merge_pairs, shards=[m for m, _ in mined])
    states.append(stage.states[f"{name}/pairs"])
    stage.record(
        name, "Cached" if all(s == "Cached" for s in states) else "Completed", time.perf_counter() - t0, merged.seconds
    )
    return merged
