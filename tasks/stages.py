"""The stages of the method, each defined once: a thin Prefect task with typed inputs and outputs around one
core function, plus :class:`StageRunner`, the one way a flow runs a stage.

data → split → warm-up SFT → (per iteration) buffer refresh → select / mine / merge pairs → preference update →
evaluate.  ``itool run`` and ``prefect deployment run itool/iterate`` both run these tasks through the same flow
(flows/iterate.py); there is no second implementation.

Contract of a stage
-------------------
* **Inputs** are frozen config dataclasses of :mod:`itool_core.config` (the stage's section of the run config)
  and references — :class:`~itool_core.artifacts.ArtifactRef` (a Parquet table: path + sha256 + schema + rows)
  or :class:`~itool_core.artifacts.ContentRef` (a model folder or source file by content hash).  Never a model
  object (DESIGN principle 2).
* **Outputs** are the typed records below (:class:`Split`, :class:`Trained`, :class:`Buffer`, :class:`Mined`,
  :class:`Evaluation`); the stage's real output — Parquet tables, model folders — is written atomically into
  ``out_dir`` and referenced from the record.  Prefect persists the record as JSON (its serializer round-trips
  dataclasses) under ``<run_dir>/.prefect-results``.
* **Cache key** = :func:`itool_core.artifacts.fingerprint` of (stage, its inputs, :func:`code_version`): the
  inputs' content hashes, the config section and the source of ``itool_core`` + ``tasks``.  The same
  fingerprint names the stage's output folder (``<run_dir>/<stage>/<key>``), so a changed input or code
  version writes next to, never over, the files an older cached record points to.  One fingerprint scheme
  for both.
* **Resume**: a record is persisted only when its task finished, and every file is renamed into place only
  when complete, so after a crash or ``kill -9`` the re-run takes every finished stage from the cache and
  redoes the interrupted one (the warm-up continues from its last checkpoint, see ``sft.checkpoint_steps``).
* **Retries**: ``retries=2`` with back-off for transient failures (engine or server errors, IO hiccups, OOM on a
  shared GPU); :func:`is_transient` stops retries for bad input, which would fail the same way again.
* **Names and tags**: a task run is named by its stage label (``eval_base``, ``warmup``, ``iter_1/mine/shard_0``
  …: the folder under the run directory).  SFT / mining / preference runs carry the tag of the device they
  train on, ``gpu`` where CUDA is there (a tag concurrency limit, ``prefect concurrency-limit create gpu 1``,
  keeps two trainings off one device), else ``cpu``.

Core modules are imported inside the task bodies: importing this module stays cheap (no torch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from prefect import task

from itool_core.artifacts import ArtifactRef, ContentRef, fingerprint
from itool_core.config import (
    BufferConfig,
    BuildConfig,
    EvalConfig,
    LaunchConfig,
    MCTSConfig,
    PolicyConfig,
    PreferenceConfig,
    ServeConfig,
    SFTConfig,
    SplitConfig,
)

__all__ = [
    "RETRY_DELAYS",
    "BAD_INPUT",
    "is_transient",
    "code_version",
    "stage_key",
    "StageRunner",
    "Split",
    "Trained",
    "Buffer",
    "Mined",
    "Evaluation",
    "load_data",
    "split_data",
    "warmup_sft",
    "refresh_buffer",
    "select_shards",
    "mine_shard",
    "merge_pairs",
    "preference_update",
    "control_sft",
    "evaluate_policy",
]

#: Back-off between the attempts (seconds): long enough for a restarted engine / server to come back.
RETRY_DELAYS = [10, 60]
#: Exceptions that say the *input* is wrong: retrying cannot help, so they fail fast.  ``ValueError`` covers
#: ``artifacts.SchemaMismatch``, ``data.records.BadRow`` and ``config.ConfigError`` (all subclass it).
BAD_INPUT: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
)

ROOT = Path(__file__).resolve().parents[1]


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry unless the failure is bad input (:data:`BAD_INPUT`)."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:  # an unreadable result is no evidence of bad input
            return True
    return not isinstance(exc, BAD_INPUT)


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of every Python source of ``itool_core`` and ``tasks``: part of every cache key, so a stage whose
    code changed is recomputed (hashing only the task's own lines would miss a change in the core it calls)."""
    h = hashlib.sha256()
    for pkg in ("itool_core", "tasks"):
        for p in sorted((ROOT / pkg).rglob("*.py")):
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def stage_key(name: str, inputs: dict[str, Any]) -> str:
    """The fingerprint of a stage run: its name, its inputs (configs and references) and the code version."""
    return fingerprint(name, _keyed(inputs), code_version())


def _keyed(inputs: dict[str, Any]) -> dict[str, Any]:
    """The inputs as keys see them.  A training stage's ``launch`` settings (processes, machines, strategy)
    do not change what it learns, only where: they are left out, and the training config's per-device batch
    becomes the batch of one micro-step over all processes — 4 per device on 1 process and 2 per device on
    2 processes give one key (their results agree within the tolerance tests/test_launch.py measures).
    Likewise the vLLM replica a mining shard is served by (``serve.replicas`` / ``replica``)."""
    serve = inputs.get("serve")
    if isinstance(serve, ServeConfig) and (serve.replicas, serve.replica) != (1, 0):
        # which of several identical servers generates a shard does not change its samples
        inputs = {**inputs, "serve": dataclasses.replace(serve, replicas=1, replica=0)}
    launch = inputs.get("launch")
    if not isinstance(launch, LaunchConfig):
        return inputs
    n = launch.world_size()
    out = {k: v for k, v in inputs.items() if k != "launch"}
    for k, v in out.items():
        if isinstance(v, (SFTConfig, PreferenceConfig)):
            out[k] = dataclasses.replace(v, per_device_batch_size=v.per_device_batch_size * n)
    return out


def _task_log() -> Callable[[str], None]:
    """The running task's logger (a launched training's output goes to the task's log), else this module's."""
    try:
        from prefect import get_run_logger

        return get_run_logger().info
    except Exception:  # outside a Prefect run (a direct call in a test)
        return logging.getLogger(__name__).info


def _cache_key(context: Any, parameters: dict[str, Any]) -> str:
    # out_dir is itself named by stage_key of the other inputs: hashing it too changes nothing, and keeps a
    # direct task call (tests) from sharing a record with a different output folder.
    return stage_key(context.task.name, parameters)


def _check(ref: ArtifactRef) -> str:
    """Path of a Parquet reference after checking its content hash (a stale reference is bad input)."""
    ref.verify()
    return ref.path


def _examples(ref: ArtifactRef) -> list:
    from itool_core.artifacts import read_table
    from itool_core.data.records import Example
    from itool_core.schemas import EXAMPLES

    return [Example.from_row(r) for r in read_table(_check(ref), EXAMPLES).to_pylist()]


def _floats(d: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of ``d`` as floats: a record's fields must have the types its annotation gives, or the
    copy Prefect reads back from the cache (validated against the annotation: 5 → 5.0) would hash differently
    from the record the first run handed on, and the next stage would miss its cache."""
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


#: Stages that train or generate on the accelerator: their task runs carry the device's tag (:func:`device_tag`).
DEVICE_STAGES: set[str] = set()


@lru_cache(maxsize=1)
def device_tag() -> str:
    """``gpu`` where the trainers will use CUDA (they train on it whenever it is there), else ``cpu``."""
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def _stage(name: str, gpu: bool = False):
    if gpu:
        DEVICE_STAGES.add(name)
    return task(
        name=name,
        tags=["itool"],
        cache_key_fn=_cache_key,
        persist_result=True,
        result_serializer="json",
        retries=2,
        retry_delay_seconds=RETRY_DELAYS,
        retry_condition_fn=is_transient,
    )


# ------------------------------------------------------------------------------------------- stage records


@dataclass(frozen=True)
class Split:
    """Warm-up / pool split and the warm-up's easy / medium / hard thirds."""

    warmup: ArtifactRef
    pool: ArtifactRef
    easy: ArtifactRef
    medium: ArtifactRef
    hard: ArtifactRef


@dataclass(frozen=True)
class Trained:
    """A training stage's policy (merged model folder) and what the trainer reported."""

    policy: ContentRef
    adapter: str | None = None
    seconds: float = 0.0
    train_loss: float | None = None
    steps: int = 0
    #: SFT: one entry per curriculum stage (name, n_examples, steps, train_loss, s_per_step).
    stages: list[dict[str, Any]] = field(default_factory=list)
    #: Logged training steps (loss and, for preference losses, rewards/margins ...).
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    #: Why nothing was trained (e.g. "no pairs"): the policy is then the input policy, unchanged.
    skipped: str | None = None
    #: Non-padding tokens fed forward through the policy in training (SFT: prompt + answer; preference: prompt +
    #: chosen and prompt + rejected): the compute the control is matched on (itool_core/train/control.py).
    tokens: int = 0
    #: Tokens the training forwards actually ran, where fewer than ``tokens`` (a preference update with
    #: ``shared_prefix`` encodes each pair's shared state once); 0 = as many as ``tokens``.
    computed_tokens: int = 0


@dataclass(frozen=True)
class Buffer:
    """The replay buffer: every pool example with the policy's perplexity of its target (Eq. 4)."""

    table: ArtifactRef
    h: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class Mined:
    """Step-level preference pairs mined by MCTS (one shard, or all shards merged)."""

    pairs: ArtifactRef
    n_pairs: int
    n_trees: int
    stats: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class Evaluation:
    """An evaluation's summary (per category: n, correct, accuracy, 95 % Wilson interval) and its folder, which
    holds ``summary.json`` and ``samples.parquet`` (the per-item verdicts paired comparisons use)."""

    label: str
    summary: dict[str, Any]
    dir: str
    seconds: float


# ------------------------------------------------------------------------------------------------ the stages


@_stage("data")
def load_data(
    data: str,
    data_format: str,
    build: BuildConfig,
    run_profile: str,
    seed: int,
    source: ContentRef | None,
    out_dir: str,
) -> ArtifactRef:
    """The canonical training table (``examples/1``): the embedded default set built as ``build`` says
    (``data_format`` "default"), or ``data`` read by the loader ``data_format`` names.  ``source`` is the
    content of a local file (cache key only)."""

    if data_format == "default":
        from itool_core.data.build import build_training_set, from_config, write_training_set

        exs, card = build_training_set(seed=seed, **from_config(build, run_profile))
        # the card (counts per source / augmentation, what each step dropped) goes beside the table
        return write_training_set(exs, card, Path(out_dir) / "train.parquet")
    import logging

    from itool_core.data.loaders import load, write_examples

    exs, reports = load(data_format, data)
    for r in reports:  # skipped rows are reported (file, row, field), never dropped silently
        if r.skipped:
            logging.getLogger(__name__).warning("%s", r.summary())
    return write_examples(exs, Path(out_dir) / "train.parquet", reports)  # zero good rows: an error


@_stage("split")
def split_data(split: SplitConfig, train: ArtifactRef, out_dir: str) -> Split:
    """Warm-up / pool split (§4.2) and the easy / medium / hard thirds by difficulty (Eq. 1)."""
    from itool_core.data import split as split_mod

    return Split(**split_mod.split_and_write(_examples(train), split, out_dir))


@_stage("warmup-sft", gpu=True)
def warmup_sft(
    model: ContentRef, sft: SFTConfig, split: Split, out_dir: str, launch: LaunchConfig | None = None
) -> Trained:
    """Curriculum (or mixed) LoRA SFT on the three parts (Eq. 2–3); the merged model is the first policy.
    ``launch``: in this process (default) or under ``accelerate launch`` (itool_core/train/launch.py)."""
    from itool_core.train.launch import train_sft

    t0 = time.time()
    history: list[dict[str, float]] = []

    def collect(event: str, metrics: dict) -> None:
        if event == "log" and "loss" in metrics:
            history.append({"step": float(metrics.get("step", len(history))), "loss": float(metrics["loss"])})

    parts = [("easy", _check(split.easy)), ("medium", _check(split.medium)), ("hard", _check(split.hard))]
    # resume=True: a retry, or a re-run after a kill, reuses the finished curriculum stages and continues the
    # unfinished one from its newest checkpoint (out_dir is this input's own folder)
    res = train_sft(
        model.path, parts, sft, out_dir, launch or LaunchConfig(), callback=collect, log=_task_log(), resume=True
    )
    merged = res.merged_dir or res.adapter_dir
    return Trained(
        policy=ContentRef.of(merged),
        adapter=res.adapter_dir,
        seconds=time.time() - t0,
        steps=sum(s.steps for s in res.stages),
        tokens=sum(s.tokens for s in res.stages),
        stages=[
            {
                "name": s.name,
                "n_examples": s.n_examples,
                "steps": s.steps,
                "train_loss": s.train_loss,
                "s_per_step": s.s_per_step,
            }
            for s in res.stages
        ],
        history=history,
    )


@_stage("buffer-refresh")
def refresh_buffer(buffer: BufferConfig, pool: ArtifactRef, policy: ContentRef, iteration: int, out_dir: str) -> Buffer:
    """Perplexity of every pool example's target under the current policy (Eq. 4): the replay buffer table."""
    import torch

    from itool_core.artifacts import write_table
    from itool_core.data import replay
    from itool_core.models import load_policy

    t0 = time.time()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    model, tok = load_policy(policy.path)
    table = replay.refresh_buffer(model, tok, _examples(pool), buffer, iteration=iteration)
    ref = write_table(table, Path(out_dir) / "buffer.parquet", replay.REPLAY_BUFFER)
    return Buffer(table=ref, h=_floats(replay.h_summary(table)["all"]), seconds=time.time() - t0)


@_stage("select-shards")
def select_shards(buffer_cfg: BufferConfig, mcts: MCTSConfig, buffer: Buffer, out_dir: str) -> list[ArtifactRef]:
    """The hardest α of the buffer (tool-call / no-call in proportion, below ``skip_hardest``), cut into
    ``mcts.shards`` round-robin shards: one ``examples/1`` table per shard, each mined by its own task."""
    from itool_core.artifacts import read_table, write_table
    from itool_core.data import replay
    from itool_core.mcts.mine import shard_examples
    from itool_core.schemas import EXAMPLES

    chosen = replay.select_for_search(read_table(_check(buffer.table), replay.REPLAY_BUFFER), buffer_cfg)
    shards = shard_examples(replay.buffer_examples(chosen), mcts.shards)
    return [
        write_table([e.to_row() for e in shard], Path(out_dir) / f"shard_{i}.parquet", EXAMPLES)
        for i, shard in enumerate(shards)
    ]


@_stage("mine-shard", gpu=True)
def mine_shard(
    mcts: MCTSConfig,
    policy_cfg: PolicyConfig,
    tools_style: str,
    shard: ArtifactRef,
    policy: ContentRef,
    out_dir: str,
    torch_threads: int | None = None,
    engine: str = "hf",
    serve: ServeConfig | None = None,
) -> Mined:
    """Step-level MCTS (Eq. 5–9) on one shard: its pairs table + trees.  ``torch_threads`` pins the CPU threads
    (a Dask worker starts with 1; pin the same value on every runner for bit-identical samples).  With the served
    engine the shard's server (``serve``) starts here and stops when the shard is mined, also on failure."""
    from itool_core.calls import PromptStyle
    from itool_core.engines import closing, policy_engine
    from itool_core.mcts.mine import mine

    t0 = time.time()
    with closing(policy_engine(engine, policy.path, num_threads=torch_threads, serve=serve, log_dir=out_dir)) as gen:
        res = mine(gen, _examples(shard), out_dir, mcts, policy_cfg, PromptStyle(tools_style))
    return Mined(
        pairs=res.pairs, n_pairs=res.n_pairs, n_trees=res.n_trees, stats=_floats(res.stats), seconds=time.time() - t0
    )


@_stage("merge-pairs")
def merge_pairs(shards: list[Mined], out_dir: str) -> Mined:
    """The shards' pairs in shard order as one PAIRS table: the preference update's input."""
    from itool_core.mcts.mine import merge_mined, sum_stats

    ref = merge_mined([_check(m.pairs) for m in shards], Path(out_dir) / "pairs.parquet")
    return Mined(
        pairs=ref,
        n_pairs=ref.rows,
        n_trees=sum(m.n_trees for m in shards),
        stats=_floats(sum_stats([m.stats for m in shards])),
        seconds=max([m.seconds for m in shards], default=0.0),
    )


@_stage("preference-update", gpu=True)
def preference_update(
    preference: PreferenceConfig, pairs: Mined, policy: ContentRef, out_dir: str, launch: LaunchConfig | None = None
) -> Trained:
    """DPO / SimPO / IPO / ORPO on the pairs with the previous policy as reference (Eq. 10–11), merged.
    ``launch``: in this process (default) or under ``accelerate launch`` (itool_core/train/launch.py)."""
    from itool_core.train.launch import train_preference

    t0 = time.time()
    if pairs.n_pairs == 0:
        # nothing to learn from: the policy carries over unchanged (reported, not hidden)
        return Trained(policy=policy, skipped="no pairs", seconds=time.time() - t0)
    history: list[dict[str, float]] = []

    def collect(event: str, metrics: dict) -> None:
        if event == "log" and "loss" in metrics:
            history.append({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})

    res = train_preference(
        policy.path,
        _check(pairs.pairs),
        preference,
        out_dir,
        launch or LaunchConfig(),
        reference=policy.path,
        callback=collect,
        log=_task_log(),
    )
    merged = res.merged_dir or res.adapter_dir
    return Trained(
        policy=ContentRef.of(merged),
        adapter=res.adapter_dir,
        seconds=time.time() - t0,
        train_loss=res.train_loss,
        steps=res.steps,
        tokens=res.tokens,
        computed_tokens=res.computed_tokens,
        metrics=_floats(res.metrics),
        history=history,
    )


@_stage("control-sft", gpu=True)
def control_sft(
    sft: SFTConfig, pool: ArtifactRef, policy: ContentRef, steps: int, tokens: int, out_dir: str
) -> Trained:
    """The compute-matched control: ``policy`` (the SFT policy) trained further with plain SFT on the pool for
    ``steps`` optimiser steps and ≈ ``tokens`` training tokens — what the iterations' preference updates spent
    (matching rule: itool_core/train/control.py).  ``metrics`` records the targets beside what was spent."""
    from itool_core.train.control import train_control

    t0 = time.time()
    if steps < 1:
        return Trained(policy=policy, skipped="the iterations trained nothing", seconds=time.time() - t0)
    history: list[dict[str, float]] = []

    def collect(event: str, metrics: dict) -> None:
        if event == "log" and "loss" in metrics:
            history.append({"step": float(metrics.get("step", len(history))), "loss": float(metrics["loss"])})

    plan, res = train_control(policy.path, _examples(pool), sft, steps, tokens, out_dir, callback=collect)
    st = res.stages[-1]
    return Trained(
        policy=ContentRef.of(res.merged_dir or res.adapter_dir),
        adapter=res.adapter_dir,
        seconds=time.time() - t0,
        train_loss=st.train_loss,
        steps=st.steps,
        tokens=st.tokens,
        history=history,
        metrics={
            "target_steps": float(plan.target_steps),
            "target_tokens": float(plan.target_tokens),
            "batch_size": float(plan.batch_size),
            "mean_example_tokens": float(plan.mean_example_tokens),
            "steps": float(st.steps),
            "tokens": float(st.tokens),
            "tokens_ratio": st.tokens / plan.target_tokens if plan.target_tokens else 0.0,
            "s_per_step": float(st.s_per_step),
            "tokens_per_s": float(st.tokens_per_s),
        },
    )


@_stage("evaluate")
def evaluate_policy(
    evaluation: EvalConfig,
    policy: ContentRef,
    label: str,
    out_dir: str,
    engine: str = "hf",
    serve: ServeConfig | None = None,
) -> Evaluation:
    """The evaluation config's benchmarks (BFCL categories + groups, API-Bank L1/L2) on its seeded subset."""
    from itool_core.eval.runner import evaluate

    t0 = time.time()
    summary = evaluate(
        policy.path,
        evaluation,
        out_dir=out_dir,
        engine=engine,
        serve=serve,
        progress=False,
        print_tables=False,
        label=label,
    )
    return Evaluation(
        label=label, summary=json.loads(json.dumps(summary, default=str)), dir=out_dir, seconds=time.time() - t0
    )


# ------------------------------------------------------------------------------------------------ the runner

R = TypeVar("R")


class StageRunner:
    """Runs the stage tasks of one run folder: names each stage's output folder by :func:`stage_key`, stores
    its cached record under ``<run_dir>/.prefect-results``, prints one status line per stage, and records the
    wall time and final Prefect state ("Completed" or "Cached") of every stage for the run's summary."""

    def __init__(
        self,
        run_dir: str | Path,
        refresh_cache: bool = False,
        retry_delay_seconds: Any = None,
        progress: Callable[[str], None] = print,
    ):
        self.run_dir = Path(run_dir).resolve()
        self.refresh_cache = refresh_cache
        self.retry_delay_seconds = retry_delay_seconds
        self.progress = progress
        self.wall: dict[str, float] = {}
        self.compute: dict[str, float] = {}
        self.states: dict[str, str] = {}

    def out_dir(self, name: str, **inputs: Any) -> str:
        return str(self.run_dir / name / stage_key(name, inputs))

    def bind(self, t: Any) -> Any:
        """``t`` with this run's result storage, named by its stage label, tagged with the device where it trains
        (and ``refresh_cache`` / retry delays when set)."""
        opts: dict[str, Any] = {"result_storage": self.run_dir / ".prefect-results", "task_run_name": self._label}
        if t.name in DEVICE_STAGES:
            opts["tags"] = {"itool", device_tag()}
        if self.refresh_cache:
            opts["refresh_cache"] = True
        if self.retry_delay_seconds is not None:
            opts["retry_delay_seconds"] = self.retry_delay_seconds
        return t.with_options(**opts)

    def _label(self, parameters: dict[str, Any]) -> str:
        """The task run's name: its stage label, read off its output folder ``<run_dir>/<label>/<key>``."""
        out = Path(str(parameters.get("out_dir", "")))
        try:
            return out.parent.relative_to(self.run_dir).as_posix()
        except ValueError:  # not a folder of this run
            return out.parent.name or "stage"

    def __call__(self, name: str, t: Callable[..., R], **inputs: Any) -> R:
        """Run stage ``name`` = task ``t`` on ``inputs`` (``out_dir`` is added); return its record."""
        self.progress(f"[itool] {name} …")
        t0 = time.perf_counter()
        state = self.bind(t)(**inputs, out_dir=self.out_dir(name, **inputs), return_state=True)
        out = state.result()  # raises the task's exception when it failed (after its retries)
        self.record(name, state.name, time.perf_counter() - t0, getattr(out, "seconds", None))
        return out

    def record(self, name: str, state: str, wall: float, compute: float | None = None) -> None:
        self.wall[name] = wall
        self.states[name] = state
        # compute time is the stage's own work: a record taken from the cache did none in this run
        if compute is not None and state != "Cached":
            self.compute[name] = float(compute)
        what = "cached" if state == "Cached" else f"done in {wall:.0f} s"
        self.progress(f"[itool] {name}: {what}")

    @property
    def ran(self) -> list[str]:
        return [k for k, v in self.states.items() if v != "Cached"]

    @property
    def cached(self) -> list[str]:
        return [k for k, v in self.states.items() if v == "Cached"]

    def tags(self, names: list[str]) -> dict[str, str]:
        """MLflow tags of a group of stages: ``cached`` (``true``: all taken from the cache, ``false``: all ran,
        ``partial``) and ``cached_stages`` (which ones)."""
        hit = [k for k in names if self.states.get(k) == "Cached"]
        seen = [k for k in names if k in self.states]
        state = "true" if seen and len(hit) == len(seen) else ("partial" if hit else "false")
        return {"cached": state, "cached_stages": ", ".join(hit) or "-"}

    def metrics(self, names: list[str]) -> dict[str, float]:
        """``wall_s/<stage>`` and ``compute_s/<stage>`` (only stages that really ran) of the named stages."""
        return {
            **{f"wall_s/{k.split('/')[-1]}": self.wall[k] for k in names if k in self.wall},
            **{f"compute_s/{k.split('/')[-1]}": self.compute[k] for k in names if k in self.compute},
        }
