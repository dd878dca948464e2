"""Mining on a real Dask ``LocalCluster`` (2 worker processes) gives the same pairs as the thread runner.

The shards fix every sampling seed (flows/mine.py), so where a shard runs must not matter.  Both runs mine
the same 2 shards of the tiny model's buffer, each into its own run folder (no shared cache), with torch
pinned to 1 thread (a Dask worker starts with 1).
"""

from __future__ import annotations

import pytest

pytest.importorskip("prefect_dask")
distributed = pytest.importorskip("distributed")

from prefect import flow  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402
from tiny_data import _data  # noqa: E402

from itool_core.artifacts import ContentRef, read_table, write_table  # noqa: E402
from itool_core.config import BufferConfig, MCTSConfig, PolicyConfig  # noqa: E402
from itool_core.mcts.pairs import PAIRS  # noqa: E402
from tasks import stages  # noqa: E402

MCTS = MCTSConfig(
    simulations=2, k=2, min_q_gap=0.0, min_chosen_q=-100.0, max_overlap=1.0, shards=2, trees_per_batch=2, seed=3
)
POLICY = PolicyConfig(max_step_tokens=6, max_rollout_tokens=6, continue_incomplete=0)
BUFFER = BufferConfig(alpha=1.0, batch_size=4)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from itool_core.data import replay
    from itool_core.models import save_policy, tiny_model

    tmp = tmp_path_factory.mktemp("dask")
    model, tok = tiny_model(seed=0)
    policy_dir = str(save_policy(model, tok, tmp / "policy"))
    table = replay.refresh_buffer(model, tok, _data()[:4], BUFFER, iteration=1)
    buf = stages.Buffer(table=write_table(table, tmp / "buffer.parquet", replay.REPLAY_BUFFER), h={}, seconds=0.0)
    return {"tmp": tmp, "buffer": buf, "policy": ContentRef.of(policy_dir)}


@flow(name="mine-on-a-runner")
def _mine(run_dir: str, buffer: stages.Buffer, policy: ContentRef, dask_address: str | None) -> stages.Mined:
    from flows import mine as mining

    return mining.mine(
        stages.StageRunner(run_dir),
        "mine",
        buffer=buffer,
        buffer_cfg=BUFFER,
        mcts=MCTS,
        policy_cfg=POLICY,
        tools_style="json",
        policy=policy,
        dask_address=dask_address,
        torch_threads=1,
    )


def test_dask_local_cluster_mines_the_same_pairs_as_threads(inputs):
    tmp = inputs["tmp"]
    with prefect_test_harness(server_startup_timeout=120):
        threads = _mine(str(tmp / "threads"), inputs["buffer"], inputs["policy"], None)
        with (
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            with distributed.get_task_stream(client) as stream:
                dask = _mine(str(tmp / "dask"), inputs["buffer"], inputs["policy"], cluster.scheduler_address)
            # the two shard tasks really ran in the cluster's worker processes
            assert len(stream.data) >= 2
            assert {t["worker"] for t in stream.data} <= set(client.scheduler_info()["workers"])
    assert threads.n_trees == dask.n_trees == 4
    assert threads.n_pairs > 0
    a, b = read_table(threads.pairs.path, PAIRS).to_pylist(), read_table(dask.pairs.path, PAIRS).to_pylist()
    assert a == b
    assert threads.pairs.sha256 == dask.pairs.sha256
