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

from typing import Any

from prefect import flow, unmapped

from tasks import stages


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


@flow(name="itool-mine", log_prints=False)
def mine_shards(run_dir: str, name: str, shards: list[dict], mcts: dict, policy_cfg: dict, tools_style: str,
                policy: dict, engine: str = "hf", torch_threads: int | None = None,
                refresh_cache: bool = False) -> list[dict]:
    """``mine_shard`` mapped over ``shards`` (one output folder per shard, named by its inputs)."""
    T = stages.bind(run_dir, refresh_cache)
    out_dirs = [stages.stage_dir(run_dir, f"{name}/shard_{i}", mcts, policy_cfg, tools_style, s["sha256"], policy)
                for i, s in enumerate(shards)]
    futures = T.mine_shard.map(mcts=unmapped(mcts), policy_cfg=unmapped(policy_cfg),
                               tools_style=unmapped(tools_style), shard=shards, policy=unmapped(policy),
                               out_dir=out_dirs, torch_threads=unmapped(torch_threads), engine=unmapped(engine))
    futures.wait()
    return [{**f.result(), "state": f.state.name} for f in futures]


def mine(T: Any, run_dir: Any, name: str, *, mcts: dict, policy_cfg: dict, buffer_cfg: dict, tools_style: str,
         buffer: dict, policy: dict, engine: str = "hf", dask_address: str | None = None,
         torch_threads: int | None = None,
         refresh_cache: bool = False) -> tuple[dict, str]:
    """select shards → mine them (sub-flow on the chosen runner) → merge.  Returns the iteration's pairs
    reference and "Cached" when every part was a cache hit (else "Completed")."""
    sel = T.select_shards(buffer_cfg=buffer_cfg, mcts=mcts, buffer=buffer, return_state=True,
                          out_dir=stages.stage_dir(run_dir, f"{name}/select", buffer_cfg, mcts, buffer["sha256"]))
    shards = sel.result()
    sub = mine_shards.with_options(task_runner=task_runner(dask_address, threads=len(shards) or 1))
    mined = sub(run_dir=str(run_dir), name=name, shards=shards, mcts=mcts, policy_cfg=policy_cfg,
                tools_style=tools_style, policy=policy, engine=engine, torch_threads=torch_threads,
                refresh_cache=refresh_cache)
    states = [sel.name] + [m.pop("state") for m in mined]
    merged = T.merge_pairs(shards=mined, return_state=True,
                           out_dir=stages.stage_dir(run_dir, f"{name}/pairs", [m["sha256"] for m in mined]))
    states.append(merged.name)
    return merged.result(), "Cached" if all(s == "Cached" for s in states) else "Completed"
