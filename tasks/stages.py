"""Thin Prefect tasks, one per stage of the method: data → split → warm-up SFT → buffer refresh → mine pairs →
preference update → evaluate.

Each task reads *references* (``{"path", "sha256", ...}`` dicts) and frozen configs (plain dicts in the
YAML shape of :mod:`itool_core.config`), calls the same core function ``itool_core.loop.run_pipeline`` calls,
and returns references again — never a model object (DESIGN.md principle 2).  That makes every input
hashable, so:

* **Caching** — ``cache_policy = INPUTS + TASK_SOURCE`` with ``persist_result=True``: the key is a hash of
  the task's inputs (content hashes of its input artifacts, its config, its output folder) and of the task's
  own source lines.  The result (a small JSON dict) is persisted under the flow's result folder
  (``<run_dir>/.prefect-results``, see :func:`bind`), so a re-run of an unchanged stage is skipped *across
  runs*, with or without a Prefect server.  Caveat of ``TASK_SOURCE``: it hashes only the task function's
  lines, not the core code it calls — after changing core code, run the flow with ``refresh_cache=True``.
* **Output folders** are named by a fingerprint of the inputs (:func:`stage_dir`), so a changed config writes
  next to, never over, the files an older cached result points to.
* **Retries** — ``retries=2`` with back-off for transient failures (engine or server errors, IO hiccups,
  out-of-memory on a shared GPU); :func:`is_transient` stops retries for bad input (``ValueError`` and its
  subclasses ``SchemaMismatch`` / ``BadRow`` / ``ConfigError``, ``TypeError``, ``KeyError``, a missing file),
  which would fail the same way again.
* **Mining** is three tasks: ``select_shards`` (hardest α → ``mcts.shards`` Parquet shards), ``mine_shard``
  (mapped over the shards by the flow's task runner: threads, or Dask workers) and ``merge_pairs``.
* **Tags** — ``gpu`` on the SFT / mining / preference tasks, so a work pool or a tag concurrency limit
  (``prefect concurrency-limit create gpu 1``) keeps two trainings off one device.

Core modules are imported inside the task bodies: importing this module stays cheap (no torch), and a test
can monkeypatch a core function.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

__all__ = [
    "CACHE_POLICY", "RETRY_DELAYS", "BAD_INPUT", "is_transient", "stage_dir", "policy_ref", "source_ref", "bind",
    "load_data", "split_data", "warmup_sft", "refresh_buffer", "select_shards", "mine_shard", "merge_pairs",
    "preference_update",
    "evaluate_policy", "ALL_TASKS",
]

#: Inputs + the task's source: a changed artifact, config or task body means a new key.
CACHE_POLICY = INPUTS + TASK_SOURCE
#: Back-off between the attempts (seconds): long enough for a restarted engine / server to come back.
RETRY_DELAYS = [10, 60]
#: Exceptions that say the *input* is wrong: retrying cannot help, so they fail fast.  ``ValueError`` covers
#: ``artifacts.SchemaMismatch``, ``data.records.BadRow`` and ``config.ConfigError`` (all subclass it).
BAD_INPUT: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError, FileNotFoundError,
                                               NotADirectoryError, IsADirectoryError)


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry unless the failure is bad input (:data:`BAD_INPUT`)."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:  # an unreadable result is no evidence of bad input
            return True
    return not isinstance(exc, BAD_INPUT)


def _fp(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def stage_dir(run_dir: str | Path, name: str, *inputs: Any) -> str:
    """``<run_dir>/<name>/<fingerprint of inputs>``: one folder per distinct input, so cached results stay valid."""
    return str(Path(run_dir) / name / _fp(name, *inputs))


def policy_ref(path: str, sha256: str) -> dict[str, str]:
    """Reference to a model folder (merged policy); ``sha256`` is its tree hash or, for a base model named by
    id, a fingerprint of the name (hashing an 8B checkpoint on every run would cost minutes)."""
    return {"path": str(path), "sha256": sha256}


def source_ref(data: str) -> dict[str, str] | None:
    """Content reference of a local data file/folder (so editing it invalidates the data stage); None for the
    embedded default set or a hub id."""
    p = Path(data)
    if data == "default" or not p.exists():
        return None
    from itool_core.loop import content_hash

    return {"path": str(p.resolve()), "sha256": content_hash(p)}


def _check(ref: dict[str, Any]) -> str:
    """Path of a Parquet reference after checking its content hash (a stale reference is bad input)."""
    from itool_core.artifacts import sha256_file

    actual = sha256_file(ref["path"])
    if actual != ref["sha256"]:
        raise ValueError(f"{ref['path']}: content changed since it was referenced "
                         f"(sha256 {actual[:12]}… != {ref['sha256'][:12]}…)")
    return ref["path"]


def _examples(ref: dict[str, Any]) -> list:
    from itool_core.artifacts import read_table
    from itool_core.data.records import Example
    from itool_core.schemas import EXAMPLES

    return [Example.from_row(r) for r in read_table(_check(ref), EXAMPLES).to_pylist()]


def _stage(name: str, gpu: bool = False):
    return task(name=name, tags=["itool", "gpu"] if gpu else ["itool"], cache_policy=CACHE_POLICY,
                persist_result=True, result_serializer="json", retries=2, retry_delay_seconds=RETRY_DELAYS,
                retry_condition_fn=is_transient)


# ------------------------------------------------------------------------------------------------ the stages


@_stage("data")
def load_data(data: str, profile: str, seed: int, source: dict | None, out_dir: str) -> dict:
    """The canonical training table (``examples/1``): the embedded default set, a Parquet file or a
    ToolACE-style file / hub id.  ``source`` is the content reference of a local file (cache key only)."""
    from itool_core.artifacts import read_table, write_table
    from itool_core.data.records import Example
    from itool_core.schemas import EXAMPLES

    t0 = time.time()
    if data == "default":
        from itool_core.data.build import build_training_set

        exs, _card = build_training_set(profile, seed=seed)
    elif data.endswith(".parquet"):
        exs = [Example.from_row(r) for r in read_table(data, EXAMPLES).to_pylist()]
    else:
        from itool_core.data.loaders import load

        exs, _ = load("toolace", data)
    ref = write_table([e.to_row() for e in exs], Path(out_dir) / "train.parquet", EXAMPLES)
    return {**ref.to_dict(), "seconds": time.time() - t0}


@_stage("split")
def split_data(split: dict, train: dict, out_dir: str) -> dict:
    """Warm-up / pool split and the easy / medium / hard thirds: ``{part: reference}``."""
    from itool_core.config import SplitConfig, from_dict
    from itool_core.data import split as split_mod

    refs = split_mod.split_and_write(_examples(train), from_dict(SplitConfig, split), out_dir)
    return {name: ref.to_dict() for name, ref in refs.items()}


@_stage("warmup-sft", gpu=True)
def warmup_sft(model: str, sft: dict, easy: dict, medium: dict, hard: dict, out_dir: str) -> dict:
    """Curriculum (or mixed) LoRA SFT on the three parts; the merged model is the first policy."""
    from itool_core.config import SFTConfig, from_dict
    from itool_core.loop import content_hash
    from itool_core.models import resolve
    from itool_core.train.sft import train_sft

    t0 = time.time()
    history: list[dict] = []

    def collect(event: str, metrics: dict) -> None:
        if event == "log" and "loss" in metrics:
            history.append({"step": int(metrics.get("step", len(history))), "loss": float(metrics["loss"])})

    parts = [("easy", _examples(easy)), ("medium", _examples(medium)), ("hard", _examples(hard))]
    # resume: a retry after a crash reuses finished stages and continues the unfinished one from its last
    # checkpoint (sft.checkpoint_steps; out_dir is fingerprinted per input)
    res = train_sft(resolve(model), parts, from_dict(SFTConfig, sft), out_dir, callback=collect, resume=True)
    merged = res.merged_dir or res.adapter_dir
    return {**policy_ref(merged, content_hash(merged)), "adapter": res.adapter_dir,
            "stages": [{"name": s.name, "n_examples": s.n_examples, "steps": s.steps, "train_loss": s.train_loss,
                        "s_per_step": s.s_per_step} for s in res.stages],
            "history": history, "seconds": time.time() - t0}


@_stage("buffer-refresh")
def refresh_buffer(buffer: dict, pool: dict, policy: dict, iteration: int, out_dir: str) -> dict:
    """Perplexity of every pool example's target under the current policy (Eq. 4): the replay buffer table."""
    import torch

    from itool_core.artifacts import write_table
    from itool_core.config import BufferConfig, from_dict
    from itool_core.data import replay
    from itool_core.models import load_policy

    t0 = time.time()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    model, tok = load_policy(policy["path"])
    table = replay.refresh_buffer(model, tok, _examples(pool), from_dict(BufferConfig, buffer), iteration=iteration)
    ref = write_table(table, Path(out_dir) / "buffer.parquet", replay.REPLAY_BUFFER)
    return {**ref.to_dict(), "h": replay.h_summary(table)["all"], "seconds": time.time() - t0}


@_stage("select-shards")
def select_shards(buffer_cfg: dict, mcts: dict, buffer: dict, out_dir: str) -> list[dict]:
    """The hardest α of the buffer (tool-call / no-call in proportion, below ``skip_hardest``), cut into
    ``mcts.shards`` round-robin shards: one ``examples/1`` Parquet reference per shard, each mined by its own task."""
    from itool_core.artifacts import read_table, write_table
    from itool_core.config import BufferConfig, MCTSConfig, from_dict
    from itool_core.data import replay
    from itool_core.mcts.mine import shard_examples
    from itool_core.schemas import EXAMPLES

    bcfg, mcfg = from_dict(BufferConfig, buffer_cfg), from_dict(MCTSConfig, mcts)
    chosen = replay.select_for_search(read_table(_check(buffer), replay.REPLAY_BUFFER), bcfg)
    shards = shard_examples(replay.buffer_examples(chosen), mcfg.shards)
    return [write_table([e.to_row() for e in shard], Path(out_dir) / f"shard_{i}.parquet", EXAMPLES).to_dict()
            for i, shard in enumerate(shards)]


@_stage("mine-shard", gpu=True)
def mine_shard(mcts: dict, policy_cfg: dict, tools_style: str, shard: dict, policy: dict, out_dir: str,
               torch_threads: int | None = None, engine: str = "hf") -> dict:
    """Step-level MCTS (Eq. 5–9) on one shard: its pairs Parquet + trees.  ``torch_threads`` pins the CPU
    threads (a Dask worker starts with 1; pin the same value on every runner for bit-identical samples)."""
    from itool_core.calls import PromptStyle
    from itool_core.config import MCTSConfig, PolicyConfig, from_dict
    from itool_core.engines import policy_engine
    from itool_core.mcts.mine import mine

    t0 = time.time()
    gen = policy_engine(engine, policy["path"], num_threads=torch_threads)
    res = mine(gen, _examples(shard), out_dir, from_dict(MCTSConfig, mcts), from_dict(PolicyConfig, policy_cfg),
               PromptStyle(tools_style))
    return {**res.pairs.to_dict(), "n_pairs": res.n_pairs, "n_trees": res.n_trees,
            "stats": {k: v for k, v in res.stats.items() if isinstance(v, (int, float))},
            "seconds": time.time() - t0}


@_stage("merge-pairs")
def merge_pairs(shards: list[dict], out_dir: str) -> dict:
    """The shards' pairs in shard order as one PAIRS Parquet: the preference update's input."""
    from itool_core.mcts.mine import merge_mined, sum_stats

    ref = merge_mined([_check(r) for r in shards], Path(out_dir) / "pairs.parquet")
    return {**ref.to_dict(), "n_pairs": ref.rows, "n_trees": sum(r["n_trees"] for r in shards),
            "stats": sum_stats([r.get("stats", {}) for r in shards]),
            "seconds": max([r.get("seconds", 0.0) for r in shards], default=0.0)}


@_stage("preference-update", gpu=True)
def preference_update(preference: dict, pairs: dict, policy: dict, out_dir: str) -> dict:
    """DPO / SimPO / IPO / ORPO on the pairs with the previous policy as reference (Eq. 10–11), merged."""
    from itool_core.config import from_dict
    from itool_core.loop import content_hash
    from itool_core.train.preference import PreferenceConfig, train_preference

    t0 = time.time()
    if pairs["n_pairs"] == 0:
        # nothing to learn from: the policy carries over unchanged (reported, not hidden)
        return {**policy_ref(policy["path"], policy["sha256"]), "skipped": "no pairs", "history": [],
                "seconds": time.time() - t0}
    history: list[dict] = []

    def collect(event: str, metrics: dict) -> None:
        if event == "log" and "loss" in metrics:
            history.append({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})

    res = train_preference(policy["path"], _check(pairs), from_dict(PreferenceConfig, preference), out_dir,
                           reference=policy["path"], callback=collect)
    merged = res.merged_dir or res.adapter_dir
    return {**policy_ref(merged, content_hash(merged)), "adapter": res.adapter_dir, "train_loss": res.train_loss,
            "metrics": res.metrics, "steps": res.steps, "history": history, "seconds": time.time() - t0}


@_stage("evaluate")
def evaluate_policy(spec: dict, tools_style: str, policy: dict, label: str, out_dir: str, engine: str = "hf") -> dict:
    """BFCL (categories + overall) and API-Bank L1/L2 on a seeded subset: the evaluation summary."""
    from itool_core.calls import PromptStyle
    from itool_core.config import EvalConfig, from_dict
    from itool_core.eval.runner import evaluate

    t0 = time.time()
    s = from_dict(EvalConfig, spec)
    summary = evaluate(policy["path"], benchmarks=("bfcl", "apibank"), categories=list(s.categories), limit=s.limit,
                       seed=s.seed, out_dir=out_dir, batch_size=s.batch_size, max_new_tokens=s.max_new_tokens,
                       style=PromptStyle(tools_style), progress=False, print_tables=False, model_label=label,
                       engine_kind=engine)
    return {**json.loads(json.dumps(summary, default=str)), "dir": out_dir, "seconds": time.time() - t0}


ALL_TASKS = {"load_data": load_data, "split_data": split_data, "warmup_sft": warmup_sft,
             "refresh_buffer": refresh_buffer, "select_shards": select_shards, "mine_shard": mine_shard,
             "merge_pairs": merge_pairs, "preference_update": preference_update,
             "evaluate_policy": evaluate_policy}


def bind(run_dir: str | Path, refresh_cache: bool = False, retry_delay_seconds: Any = None) -> SimpleNamespace:
    """The stage tasks with their results persisted under ``<run_dir>/.prefect-results`` (the cache lives with
    the run's artifacts it points to).  ``refresh_cache`` recomputes every stage (e.g. after a core change)."""
    storage = Path(run_dir).resolve() / ".prefect-results"
    opts: dict[str, Any] = {"result_storage": storage}
    if refresh_cache:
        opts["refresh_cache"] = True
    if retry_delay_seconds is not None:
        opts["retry_delay_seconds"] = retry_delay_seconds
    return SimpleNamespace(**{name: t.with_options(**opts) for name, t in ALL_TASKS.items()})
