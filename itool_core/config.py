"""Typed, frozen configuration: one dataclass per stage, a top-level :class:`RunConfig`, two profiles, YAML I/O.

Every stage of the method is a plain function taking its own config object (``split_pool(examples,
SplitConfig)``, ``train_sft(..., SFTConfig)``, ``refresh_buffer(..., BufferConfig)`` ...), so a test or a notebook
can run one stage without the rest.  The orchestration layer hashes these configs into cache keys: they are
frozen and contain only plain values (str, int, float, bool, None, tuples of those).

Profiles
--------
``quick``  the embedded SmolLM2-135M-Instruct on CPU with budgets that finish in minutes to an hour on a
           2-core machine (DESIGN.md speed facts).
``paper``  the paper's setting (§5.1): Llama-3.1-8B-Instruct on a GPU, ToolACE data, vLLM generation, LoRA
           r = 16 / alpha = 32, learning rate 1e-4, 3 epochs per warm-up stage, α = 20 % hard samples.

A profile is a nested mapping of *overrides* of the dataclass defaults (:data:`PROFILE_OVERRIDES`), applied by the
same code that reads YAML, so a typo in a preset fails as loudly as a typo in a user's file.

Adding a stage's config (MCTS, preference, eval ...)
----------------------------------------------------
1. write ``@dataclass(frozen=True) class MCTSConfig`` with documented defaults;
2. add ``mcts: MCTSConfig = field(default_factory=MCTSConfig)`` to :class:`RunConfig`;
3. optionally add ``"mcts": {...}`` to the ``paper`` entry of :data:`PROFILE_OVERRIDES`.
YAML loading/dumping, unknown-key errors and type checks follow from the field annotations: nothing else to
touch.  Old YAML files without the new section keep loading (the section gets its defaults).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

__all__ = [
    "ConfigError",
    "SplitConfig",
    "SFTConfig",
    "BufferConfig",
    "RunConfig",
    "PROFILES",
    "PROFILE_OVERRIDES",
    "profile",
    "from_dict",
    "to_dict",
    "load_config",
    "dump_config",
]

TOOLS_STYLES = ("json", "compact")


class ConfigError(ValueError):
    """A configuration value or key that does not fit the dataclasses; the message names the key path."""


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(repr, choices))}")


def _check_range(name: str, value: float, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False) -> None:
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(f"{name}: {value!r} must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name}: {value!r} must be <= {hi}")


# ------------------------------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class SplitConfig:
    """Warm-up / reinforcement-pool split (§4.2: 90 % warm-up SFT, 10 % kept for the iterative stage)."""

    #: Share of the data held out as the reinforcement pool (the replay buffer's candidates).
    pool_fraction: float = 0.1
    #: Seed of the pool draw and of the tie-breaking hash in the difficulty ordering.
    seed: int = 0
    #: Column the pool is stratified by ("category", "source") or None for a plain seeded draw.
    stratify_by: str | None = "category"
    #: Strata smaller than this are not guaranteed a proportional share; they are drawn from jointly.
    min_stratum: int = 10

    def __post_init__(self) -> None:
        _check_range("split.pool_fraction", self.pool_fraction, 0.0, 1.0, lo_open=True)
        if self.stratify_by is not None:
            _check_choice("split.stratify_by", self.stratify_by, ("category", "source"))
        _check_range("split.min_stratum", self.min_stratum, 1)


@dataclass(frozen=True)
class SFTConfig:
    """Warm-up LoRA SFT (§4.2, Eq. 2–3): easy → medium → hard, continuing one adapter; or "mixed" (Fig. 4).

    CPU choices (measured, DESIGN.md): ``lora_dropout=0`` (dropout masks cost 16 % of a step), ``bf16=True``
    autocast (20.6 → 11.8 s/step) and ``gradient_checkpointing=False`` (35 % faster; 6.8 GB instead of 4.6 GB
    peak for SmolLM2-135M at 4 × 420 tokens, affordable — on an 8B model on GPU turn it on, as ``paper`` does).
    """

    #: "curriculum": one run per difficulty stage, in order, same adapter; "mixed": one run on the shuffled union.
    mode: Literal["curriculum", "mixed"] = "curriculum"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    #: peft's "all-linear" (every linear layer except the output head) or an explicit tuple of module names.
    target_modules: str | tuple[str, ...] = "all-linear"
    learning_rate: float = 2e-4
    #: transformers scheduler name; it restarts at every curriculum stage (each stage is its own SFT run, Eq. 2–3).
    lr_scheduler: str = "linear"
    #: Share of each stage's steps with a linear learning-rate warm-up, in [0, 1).
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    #: Epochs over each stage's data (mixed mode: the same number of optimiser steps in total).
    epochs_per_stage: float = 1.0
    #: Cap on optimiser steps per stage (None: as many as the epochs give); mixed mode gets n_stages × this.
    max_steps_per_stage: int | None = None
    per_device_batch_size: int = 4
    grad_accum_steps: int = 1
    #: Prompt + answer tokens; longer examples are left out (and counted), never truncated — a cut answer
    #: would teach a call list without its end.
    max_length: int = 1024
    #: bf16 mixed precision (autocast); the weights stay in ``model_dtype``.
    bf16: bool = True
    gradient_checkpointing: bool = False
    #: dtype the base weights are loaded in when a name/path is given ("float32" on CPU, "bfloat16" on GPU).
    model_dtype: str = "float32"
    seed: int = 0
    #: Tool rendering of the prompt (calls.PromptStyle): "json" = BFCL's prompt verbatim, "compact" = fewer tokens.
    tools_style: str = "json"
    #: Log the training loss every this many optimiser steps (the callback's "log" events).
    logging_steps: int = 1
    #: Save ``out_dir/merged`` (base + adapter folded) after the last stage.
    merge: bool = True

    def __post_init__(self) -> None:
        _check_choice("sft.mode", self.mode, ("curriculum", "mixed"))
        _check_choice("sft.tools_style", self.tools_style, TOOLS_STYLES)
        _check_choice("sft.model_dtype", self.model_dtype, ("float32", "bfloat16", "float16"))
        _check_range("sft.lora_r", self.lora_r, 1)
        _check_range("sft.lora_alpha", self.lora_alpha, 1)
        _check_range("sft.lora_dropout", self.lora_dropout, 0.0, 1.0)
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"sft.warmup_ratio: {self.warmup_ratio!r} must be in [0, 1)")
        _check_range("sft.learning_rate", self.learning_rate, 0.0, lo_open=True)
        _check_range("sft.epochs_per_stage", self.epochs_per_stage, 0.0, lo_open=True)
        _check_range("sft.per_device_batch_size", self.per_device_batch_size, 1)
        _check_range("sft.grad_accum_steps", self.grad_accum_steps, 1)
        _check_range("sft.max_length", self.max_length, 16)
        _check_range("sft.logging_steps", self.logging_steps, 1)
        if self.max_steps_per_stage is not None:
            _check_range("sft.max_steps_per_stage", self.max_steps_per_stage, 1)


@dataclass(frozen=True)
class BufferConfig:
    """Perplexity replay buffer (§4.3, Eq. 4): score the pool with the current policy, keep the hardest α."""

    #: Fraction (not percent) of the buffer sampled as hard examples for the search; the paper's best is 0.2.
    alpha: float = 0.2
    #: Examples per forward pass.  Batching gives little on CPU (DESIGN.md) but a lot on GPU.
    batch_size: int = 4
    #: Keep tool-call and no-call examples in the same proportion as in the buffer when selecting.
    keep_call_proportion: bool = True
    #: "bfloat16": bf16 autocast (CPU AMX, ~2× faster than fp32); "float32": exact.
    dtype: str = "bfloat16"
    #: Must equal sft.tools_style: h is measured on the prompt the policy was trained on.
    tools_style: str = "json"

    def __post_init__(self) -> None:
        _check_range("buffer.alpha", self.alpha, 0.0, 1.0, lo_open=True)
        _check_range("buffer.batch_size", self.batch_size, 1)
        _check_choice("buffer.dtype", self.dtype, ("bfloat16", "float32"))
        _check_choice("buffer.tools_style", self.tools_style, TOOLS_STYLES)


# ------------------------------------------------------------------------------------------------- run


@dataclass(frozen=True)
class RunConfig:
    """Everything one pipeline run needs; one field per stage (see the module docstring to add one)."""

    #: Name of the preset the file started from (informational; loading applies it before the file's keys).
    profile: str = "quick"
    #: Base policy: an embedded name, a local folder, or a hub id.
    model: str = "smollm2-135m-instruct"
    #: Training data: "default" (BFCL unused sets + API-Bank train, embedded), a Parquet file, or a hub id.
    data: str = "default"
    #: Generation backend for search / evaluation: "hf" (transformers, CPU-testable) or "vllm".
    engine: str = "hf"
    device: str = "cpu"
    #: Number of iterations of refresh buffer → search → preference optimisation (§4.3; the paper uses ~3).
    iterations: int = 3
    seed: int = 0
    split: SplitConfig = field(default_factory=SplitConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)

    def __post_init__(self) -> None:
        _check_choice("engine", self.engine, ("hf", "vllm"))
        _check_range("iterations", self.iterations, 0)
        # The buffer's perplexity must be measured on the prompt the policy was trained with.
        if self.sft.tools_style != self.buffer.tools_style:
            raise ConfigError(
                f"sft.tools_style ({self.sft.tools_style!r}) and buffer.tools_style ({self.buffer.tools_style!r}) "
                "must be equal: set both"
            )


#: Overrides of the dataclass defaults per profile, in the YAML shape.  ``quick`` is the defaults themselves.
PROFILE_OVERRIDES: dict[str, dict[str, Any]] = {
    # The quick training set is measured and length-fitted with the compact tool rendering (data/build.py):
    # training, the buffer and evaluation must all use it.
    "quick": {"sft": {"tools_style": "compact"}, "buffer": {"tools_style": "compact"}},
    "paper": {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "data": "Team-ACE/ToolACE",
        "engine": "vllm",
        "device": "cuda",
        "iterations": 3,
        "sft": {
            "lora_r": 16,
            "lora_alpha": 32,
            # Not given by the paper; the usual LoRA value.  Dropout is only costly on CPU.
            "lora_dropout": 0.05,
            "learning_rate": 1e-4,
            "epochs_per_stage": 3.0,
            "per_device_batch_size": 4,
            "grad_accum_steps": 8,
            "max_length": 4096,
            "bf16": True,
            "model_dtype": "bfloat16",
            # An 8B model: activations dominate memory, trade 35 % speed for it.
            "gradient_checkpointing": True,
            "warmup_ratio": 0.03,
            "lr_scheduler": "cosine",
            "logging_steps": 10,
        },
        "buffer": {"alpha": 0.2, "batch_size": 16},
    },
}


# ------------------------------------------------------------------------------------------------- dict / YAML


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; convert YAML shapes (list → tuple, int → float)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, _prefix=where + ".")
    if origin in (typing.Union, types.UnionType):
        errors = []
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not fit {_type_name(tp)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    raise ConfigError(f"{where}: unsupported annotation {tp!r}")  # pragma: no cover - a config-author error


def from_dict(cls: type, data: Mapping[str, Any], base: Any = None, *, _prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (nested) mapping; fields absent from ``data`` come from ``base`` or defaults.

    Unknown keys raise :class:`ConfigError` naming the full key path (``sft.lora_rr``) and the known keys.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key {_prefix + str(unknown[0])!r} (known keys of {cls.__name__}: {', '.join(names)})"
        )
    kwargs: dict[str, Any] = {}
    for name in names:
        sub_base = getattr(base, name) if base is not None else None
        if name in data:
            tp = hints[name]
            if dataclasses.is_dataclass(tp):
                if not isinstance(data[name], Mapping):
                    raise ConfigError(f"{_prefix}{name}: expected a mapping, got {type(data[name]).__name__}")
                kwargs[name] = from_dict(tp, data[name], sub_base, _prefix=f"{_prefix}{name}.")
            else:
                kwargs[name] = _coerce(data[name], tp, _prefix + name)
        elif base is not None:
            kwargs[name] = sub_base
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{_prefix.rstrip('.') or cls.__name__}: {e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) of a config dataclass — the YAML shape."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def profile(name: str = "quick") -> RunConfig:
    """The preset ``name`` (see :data:`PROFILE_OVERRIDES`)."""
    try:
        overrides = PROFILE_OVERRIDES[name]
    except KeyError:
        raise ConfigError(f"unknown profile {name!r} (known: {', '.join(PROFILE_OVERRIDES)})") from None
    return from_dict(RunConfig, {**overrides, "profile": name})


#: The presets as objects (built once; they are frozen).
PROFILES: dict[str, RunConfig] = {name: profile(name) for name in PROFILE_OVERRIDES}


def load_config(path: str | os.PathLike, cls: type = RunConfig) -> Any:
    """Read a YAML file into ``cls``.

    For :class:`RunConfig`, a top-level ``profile: paper`` selects the preset the file's other keys override
    (default ``quick``); keys map 1:1 onto the dataclass fields, nested per stage.  An empty file is the profile.
    """
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    if cls is RunConfig:
        name = data.get("profile", "quick")
        if not isinstance(name, str):
            raise ConfigError(f"{path}: profile must be a string, got {name!r}")
        base = profile(name)
        return from_dict(RunConfig, data, base)
    return from_dict(cls, data)


def dump_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write every field of ``cfg`` as YAML (atomically); ``load_config`` of the file gives ``cfg`` back."""
    import yaml

    from .artifacts import atomic_write_text

    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)
    atomic_write_text(path, text)
    return Path(path)
