"""Typed, frozen configuration: one dataclass per stage, a top-level :class:`RunConfig`, two profiles, YAML I/O.

Every stage of the method is a plain function taking its own config object (``split_pool(examples,
SplitConfig)``, ``train_sft(..., SFTConfig)``, ``refresh_buffer(..., BufferConfig)`` ...), so a test or a notebook
can run one stage without the rest.  The orchestration layer hashes these configs into cache keys: they are
frozen and contain only plain values (str, int, float, bool, None, tuples of those).

Profiles
--------
``quick``  the embedded SmolLM2-135M-Instruct on CPU with budgets that finish in minutes to an hour on a
           2-core machine (docs/design.md#speed-facts).
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
import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .dataclass_io import ConfigError, from_dict, to_dict, with_overrides
from .registry import BENCHMARKS, ENGINES, LOADERS, LOSSES, Registry, UnknownName

__all__ = [
    "ConfigError",
    "SplitConfig",
    "SFTConfig",
    "BufferConfig",
    "MCTSConfig",
    "PolicyConfig",
    "PreferenceConfig",
    "DEFAULT_EVAL_CATEGORIES",
    "EvalConfig",
    "BuildConfig",
    "RunConfig",
    "ServeConfig",
    "LaunchConfig",
    "LAUNCH_STRATEGIES",
    "PROFILES",
    "PROFILE_OVERRIDES",
    "profile",
    "from_dict",
    "with_overrides",
    "to_dict",
    "load_config",
    "validate_paths",
    "dump_config",
    "CONFIG_DIR",
]

TOOLS_STYLES = ("json", "compact")
#: The training-set augmentations (data/augment/), in the order they run.
AUGMENTATIONS = ("no_call", "parallel", "renamed", "distractors")


#: Servers the served engine can start, and the GGUF precisions llama.cpp serves (engines/serve.py).
SERVERS = ("auto", "llama.cpp", "vllm")
GGUF_DTYPES = ("f32", "f16", "q8_0")
VLLM_DTYPES = ("auto", "fast", "float32", "bfloat16", "float16")

#: Values of the ``bf16`` switches (SFT, preference): on, off, or on where the device does bf16 natively.
BF16_CHOICES = (True, False, "auto")


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(repr, choices))}")


def _check_name(name: str, value: Any, registry: Registry) -> None:
    try:
        registry.entry(value)
    except UnknownName as e:
        raise ConfigError(f"{name}: {e}") from None


def _check_range(
    name: str,
    value: float,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(f"{name}: {value!r} must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise ConfigError(f"{name}: {value!r} must be {'<' if hi_open else '<='} {hi}")


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
    #: Cut the easy/medium/hard thirds per answer kind so each stage keeps the set's no-call share (a plain
    #: cut puts 140 of the default set's 205 warm-up no-call examples into "easy" and 27 into "hard").
    no_call_every_stage: bool = True

    def __post_init__(self) -> None:
        _check_range("split.pool_fraction", self.pool_fraction, 0.0, 1.0, lo_open=True)
        if self.stratify_by is not None:
            _check_choice("split.stratify_by", self.stratify_by, ("category", "source"))
        _check_range("split.min_stratum", self.min_stratum, 1)


@dataclass(frozen=True)
class SFTConfig:
    """Warm-up LoRA SFT (§4.2, Eq. 2–3): easy → medium → hard, continuing one adapter; or "mixed" (Fig. 4).

    CPU choices (measured, docs/design.md#training-on-cpu): ``lora_dropout=0`` (dropout masks cost 16 % of a
    step), ``bf16="auto"``
    (autocast where bf16 is native — AMX: 20.6 → 11.8 s/step; fp32 on an AVX2-only CPU, where emulated bf16
    is 10× slower) and ``gradient_checkpointing=False`` (35 % faster; 6.8 GB instead of 4.6 GB
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
    #: bf16 mixed precision (autocast); the weights stay in ``model_dtype``.  "auto": on where the device does
    #: bf16 natively (GPU, CPU with AMX / AVX-512-BF16), off elsewhere (models.bf16_is_fast).
    bf16: bool | str = "auto"
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
    #: How the answer tokens' losses are averaged: "token" (trl's default: every answer token of the batch
    #: weighs the same, so a 15-token "no call" answer weighs a quarter of a 60-token call list) or "example"
    #: (each example's tokens averaged first, then the examples: every answer weighs the same).
    loss_normalisation: Literal["token", "example"] = "token"
    #: Weight of each answer's first token — the call / no-call decision, "[" vs "None" — relative to the other
    #: answer tokens (1 = unweighted).  Keeps the two answers' shares at their data frequencies (unlike
    #: "example"), only gives the decision more of the gradient.
    decision_weight: float = 1.0
    #: Save a resumable trainer checkpoint (adapter, optimiser, scheduler, RNG states) every this many optimiser
    #: steps of a stage, so that a run resumed with ``resume`` continues an unfinished stage where it stopped
    #: instead of retraining it (0 = off).  Does not change the weights.
    checkpoint_steps: int = 20

    def __post_init__(self) -> None:
        _check_choice("sft.mode", self.mode, ("curriculum", "mixed"))
        _check_choice("sft.loss_normalisation", self.loss_normalisation, ("token", "example"))
        _check_range("sft.decision_weight", self.decision_weight, 0.0, lo_open=True)
        _check_choice("sft.bf16", self.bf16, BF16_CHOICES)
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
        _check_range("sft.checkpoint_steps", self.checkpoint_steps, 0)
        if self.max_steps_per_stage is not None:
            _check_range("sft.max_steps_per_stage", self.max_steps_per_stage, 1)


@dataclass(frozen=True)
class BufferConfig:
    """Perplexity replay buffer (§4.3, Eq. 4): score the pool with the current policy, keep the hardest α."""

    #: Fraction (not percent) of the buffer sampled as hard examples for the search; the paper's best is 0.2.
    alpha: float = 0.2
    #: Examples per forward pass.  Batching gives little on CPU (docs/design.md#training-on-cpu) but a lot on GPU.
    batch_size: int = 4
    #: Keep tool-call and no-call examples in the same proportion as in the buffer when selecting.
    keep_call_proportion: bool = True
    #: Fraction of the hardest rows (per call/no-call group) passed over before the α are taken: 0 is the paper
    #: (the very top); 0.5 searches the band just below the median h.  For a policy that never solves its
    #: hardest examples (a 135M model): there every sibling is wrong and no pair survives (docs/notebook/RESULTS.md).
    skip_hardest: float = 0.0
    #: "bfloat16": bf16 autocast (CPU AMX, ~2× faster than fp32); "float32": exact; "auto": bfloat16 where the
    #: device does bf16 natively, else float32.
    dtype: str = "auto"
    #: Must equal sft.tools_style: h is measured on the prompt the policy was trained on.
    tools_style: str = "json"

    def __post_init__(self) -> None:
        _check_range("buffer.alpha", self.alpha, 0.0, 1.0, lo_open=True)
        _check_range("buffer.skip_hardest", self.skip_hardest, 0.0, 1.0, hi_open=True)
        _check_range("buffer.batch_size", self.batch_size, 1)
        _check_choice("buffer.dtype", self.dtype, ("auto", "bfloat16", "float32"))
        _check_choice("buffer.tools_style", self.tools_style, TOOLS_STYLES)


@dataclass(frozen=True)
class MCTSConfig:
    """Step-level MCTS (§4.3, Eq. 5–9) and the pair filters of the authors' release
    (docs/design.md#the-authors-release-differs-from-the-paper)."""

    #: Rounds per tree; each selects a leaf by PUCT, expands it into ≤ k children, scores and rolls them out.
    simulations: int = 8
    #: Candidate steps sampled per expansion (deduplicated).
    k: int = 3
    #: Exploration weight c of PUCT (Eq. 5; the MCTS-DPO default).
    c_puct: float = 1.0
    #: Discount γ of the backup Q = r + γV (Eq. 8).
    gamma: float = 0.9
    #: Steps per answer; a deeper node is treated as a leaf of the search.
    max_depth: int = 6
    #: Scale of the self-evaluation confidence C(s) in R = O + C (Eq. 6–7).
    confidence_weight: float = 1.0
    #: Credit of a correct call prefix in the outcome O(s) (±1 only at a terminal state).
    partial_weight: float = 0.5
    seed: int = 0
    #: A pair needs Q(chosen) − Q(rejected) ≥ this ...
    min_q_gap: float = 0.1
    #: ... chosen and rejected texts overlapping (difflib ratio) at most this much ...
    max_overlap: float = 0.95
    #: ... and Q(chosen) ≥ this.
    min_chosen_q: float = -0.3
    max_pairs_per_tree: int = 8
    #: Trees searched lock-step in one engine batch (bounds memory and the engine's batch size).
    trees_per_batch: int = 8
    #: The selected examples are mined in this many independent shards (round-robin), one task each in the
    #: flows (threads, or Dask workers with a cluster address).  Shards and chunks fix the sampling seeds,
    #: so the same shards give the same pairs on any runner; a different count gives different samples.
    shards: int = 1

    def __post_init__(self) -> None:
        for name in ("simulations", "k", "max_depth", "max_pairs_per_tree", "trees_per_batch", "shards"):
            _check_range(f"mcts.{name}", getattr(self, name), 1)
        _check_range("mcts.c_puct", self.c_puct, 0.0)
        _check_range("mcts.gamma", self.gamma, 0.0, 1.0)
        _check_range("mcts.max_overlap", self.max_overlap, 0.0, 1.0)


@dataclass(frozen=True)
class PolicyConfig:
    """How the search samples from the policy (expansion and rollout generation parameters)."""

    #: Expansion sampling temperature (the authors' release uses 1.5 with 50-token steps).
    temperature: float = 1.0
    top_p: float = 1.0
    max_step_tokens: int = 96
    rollout_temperature: float = 0.7
    max_rollout_tokens: int = 192
    #: Follow-up calls for a stop string that fired inside a string literal.
    continue_incomplete: int = 2

    def __post_init__(self) -> None:
        _check_range("policy.temperature", self.temperature, 0.0)
        _check_range("policy.rollout_temperature", self.rollout_temperature, 0.0)
        _check_range("policy.top_p", self.top_p, 0.0, 1.0, lo_open=True)
        _check_range("policy.max_step_tokens", self.max_step_tokens, 1)
        _check_range("policy.max_rollout_tokens", self.max_rollout_tokens, 1)
        _check_range("policy.continue_incomplete", self.continue_incomplete, 0)


@dataclass(frozen=True)
class PreferenceConfig:
    """Preference update of one iteration (Eq. 10–11).  Defaults = the CPU profile (:meth:`cpu`).

    CPU choices (docs/design.md#training-on-cpu): ``lora_dropout=0`` (dropout masks cost 16 % of a step),
    ``bf16=True`` autocast
    (≈ 2× faster with AMX), ``gradient_checkpointing=False`` (35 % faster; a 135M model's activations fit).
    DPO on CPU is ≈ 30 s per 4 pairs × 512 tokens and 11–15 GB RSS: never run two trainings at once.
    """

    #: A name of :data:`itool_core.registry.LOSSES`: "dpo" (the paper's), "ipo", "simpo", "orpo" (train/losses/).
    loss: str = "dpo"
    #: β of the loss (IPO: τ; ORPO: λ); None → the loss's registered ``default_beta`` (see :meth:`resolved_beta`).
    beta: float | None = None
    #: SimPO target margin as a share of β: γ = ratio · β (SimPO paper: γ/β ≈ 0.5).  trl's ``simpo_gamma`` is γ.
    simpo_gamma_beta_ratio: float = 0.5
    #: LoRA learning rate.  Full fine-tuning DPO would use ~5e-7–5e-6; a LoRA adapter needs more: ~5e-5 on an
    #: 8B model, 1e-4 on the 135M CPU model.
    learning_rate: float = 1e-4
    lr_scheduler: str = "linear"
    #: Share of the steps with a linear learning-rate warm-up, in [0, 1).
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    #: Epochs over the pairs of this iteration (fresh pairs every iteration: one pass is the usual choice).
    epochs: float = 1.0
    #: Cap on optimiser steps (None: as many as the epochs give).
    max_steps: int | None = None
    #: Pairs per micro-batch (each pair = 2 sequences: chosen and rejected).
    per_device_batch_size: int = 2
    grad_accum_steps: int = 2
    #: Prompt + longest completion, in tokens; longer pairs are dropped and counted, never truncated.
    max_length: int = 1024
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    #: peft's "all-linear" (every linear layer but the output head — trl forbids a LoRA on lm_head since it
    #: computes log-probs from ``lm_head.weight``) or an explicit tuple of module names.
    target_modules: str | tuple[str, ...] = "all-linear"
    #: bf16 mixed precision (autocast); the weights stay in ``model_dtype``.  "auto" as in SFTConfig.
    bf16: bool | str = "auto"
    gradient_checkpointing: bool = False
    #: dtype the policy (and an explicit reference) are loaded in: "float32" on CPU, "bfloat16" on GPU.
    model_dtype: str = "float32"
    seed: int = 0
    #: Move the leading tokens both steps share from the completions into the prompt (pitfall 3).
    trim_common_prefix: bool = True
    #: DPO / IPO: run each pair's two steps in one row with the shared state encoded once (same log-probs and
    #: gradients, ≈ half the tokens: train/losses/shared_prefix.py).  SimPO / ORPO run unshared.
    shared_prefix: bool = True
    logging_steps: int = 1
    #: Save ``out_dir/merged`` (policy + adapter folded): the next iteration's policy and reference.
    merge: bool = True

    def __post_init__(self) -> None:
        _check_name("preference.loss", self.loss, LOSSES)
        if self.beta is not None and not self.beta > 0:
            raise ConfigError(f"preference.beta: {self.beta!r} must be > 0")
        if not self.learning_rate > 0:
            raise ConfigError(f"preference.learning_rate: {self.learning_rate!r} must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"preference.warmup_ratio: {self.warmup_ratio!r} must be in [0, 1)")
        if not self.epochs > 0:
            raise ConfigError(f"preference.epochs: {self.epochs!r} must be > 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"preference.max_steps: {self.max_steps!r} must be >= 1 or None")
        for name in ("per_device_batch_size", "grad_accum_steps", "lora_r", "lora_alpha", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"preference.{name}: {getattr(self, name)!r} must be >= 1")
        if self.max_length < 2:
            raise ConfigError(f"preference.max_length: {self.max_length!r} must be >= 2")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"preference.lora_dropout: {self.lora_dropout!r} must be in [0, 1)")
        if self.simpo_gamma_beta_ratio < 0:
            raise ConfigError(f"preference.simpo_gamma_beta_ratio: {self.simpo_gamma_beta_ratio!r} must be >= 0")
        _check_choice("preference.bf16", self.bf16, BF16_CHOICES)
        if self.model_dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"preference.model_dtype: {self.model_dtype!r} is not float32/bfloat16/float16")

    def resolved_beta(self) -> float:
        return float(self.beta) if self.beta is not None else float(LOSSES.meta(self.loss, "default_beta"))

    @property
    def uses_reference(self) -> bool:
        return not LOSSES.meta(self.loss, "reference_free", False)


def benchmark_categories(name: str) -> tuple[str, ...]:
    """The categories benchmark ``name`` scores: its registration's ``categories`` ("module:attribute" of a
    light data module, so a typo in a config fails before any model code is imported)."""
    return tuple(BENCHMARKS.load_meta(name, "categories"))


#: The API-Bank prompts (eval/apibank.py uses these names): "ours" (the training prompt) or "native" (the benchmark's).
APIBANK_PROMPTS = ("ours", "native")
#: ``evaluation.split`` values (None: no held-out split).
EVAL_SPLITS = ("dev", "test")

#: BFCL's non-live AST categories + API-Bank: the subset the base model's row in docs/notebook/RESULTS.md was measured
#: on.  Live categories cost 4x more per item on CPU (prompts up to 2.4k tokens); the paper profile adds them.
DEFAULT_EVAL_CATEGORIES = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "irrelevance",
    "apibank_level1",
    "apibank_level2",
)


@dataclass(frozen=True)
class EvalConfig:
    """Which evaluation runs after each stage: a seeded subset per category (``eval.bfcl.stable_subset`` —
    growing ``limit`` only adds items), greedy decoding.  Always say the subset next to a number."""

    categories: tuple[str, ...] = DEFAULT_EVAL_CATEGORIES
    #: Items per category (None: full categories).
    limit: int | None = 20
    seed: int = 0
    max_new_tokens: int = 96
    batch_size: int = 16
    #: Also evaluate the untrained base model (the table's first row).
    base: bool = True
    #: Tool rendering of the prompts (calls.PromptStyle); None = the rendering the policy was trained with
    #: (``sft.tools_style``; :meth:`RunConfig.evaluation_config` fills it in).
    tools_style: str | None = None
    #: API-Bank prompt ("ours": the tool-call prompt the policy is trained on; see eval/apibank.py).
    apibank_prompt: str = "ours"
    #: BFCL multi-turn: executing steps allowed per turn (bfcl-eval's MAXIMUM_STEP_LIMIT).
    max_steps: int = 20
    #: Held-out item split of each category's seeded order (sha256(seed:id), as ``stable_subset``): None = its
    #: first ``limit`` items (no split); "test" = the first ``test_items`` items, the block results are reported
    #: on (at most ``limit`` of them); "dev" = the items after that block (at most ``limit``), for tuning budgets
    #: and settings — disjoint from the test items whatever ``limit`` is (``--set evaluation.split=dev``).
    split: str | None = None
    #: Size of each category's test block when ``split`` is set.
    test_items: int = 100

    @classmethod
    def covering(cls, examples: Any, **kw: Any) -> EvalConfig:
        """Every item of ``examples`` (their categories, no subset): for evaluating a given set of items."""
        kw.setdefault("limit", None)
        return cls(categories=tuple(dict.fromkeys(e.category for e in examples)), **kw)

    def benchmarks(self) -> tuple[str, ...]:
        """The registered benchmarks these categories belong to, in registry order."""
        return tuple(b for b in BENCHMARKS.names() if set(self.categories) & set(benchmark_categories(b)))

    def __post_init__(self) -> None:
        if not self.categories:
            raise ConfigError("evaluation.categories: give at least one category")
        known = tuple(c for b in BENCHMARKS.names() for c in benchmark_categories(b))
        for i, c in enumerate(self.categories):
            if c not in known:
                near = difflib.get_close_matches(str(c), known, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise ConfigError(
                    f"evaluation.categories[{i}]: unknown category {c!r} ({hint}known: {', '.join(known)})"
                )
        if self.limit is not None:
            _check_range("evaluation.limit", self.limit, 1)
        _check_range("evaluation.max_new_tokens", self.max_new_tokens, 1)
        _check_range("evaluation.batch_size", self.batch_size, 1)
        _check_range("evaluation.max_steps", self.max_steps, 1)
        if self.tools_style is not None:
            _check_choice("evaluation.tools_style", self.tools_style, TOOLS_STYLES)
        _check_choice("evaluation.apibank_prompt", self.apibank_prompt, APIBANK_PROMPTS)
        if self.split is not None:
            _check_choice("evaluation.split", self.split, EVAL_SPLITS)
        _check_range("evaluation.test_items", self.test_items, 1)
        if self.split == "test" and self.limit is not None and self.limit > self.test_items:
            raise ConfigError(
                f"evaluation.limit: {self.limit} is more than evaluation.test_items ({self.test_items}), the size "
                "of the test block: raise test_items (it moves the dev/test boundary) or lower limit"
            )


@dataclass(frozen=True)
class BuildConfig:
    """How the embedded sources become the warm-up set (data/build.py): which augmentations run, the source
    caps, the no-call share, the length fit.  Only used with ``data: default``."""

    #: data/build.py profile (tool rendering and token limit of the length fit); None = the run's profile.
    profile: str | None = None
    #: Augmentations that run (data/augment/): remove one for an ablation row.
    augmentations: tuple[str, ...] = AUGMENTATIONS
    #: Apply the source caps (no function above ``max_share`` of the target calls), before and after augmenting.
    caps: bool = True
    max_share: float = 0.05
    #: Share of the examples with a call that get a no-call copy of their question.
    no_call_rate: float = 0.2
    #: Share of the no-call copies offered near-miss tools (same topic, different function) instead of unrelated ones.
    no_call_near_miss: float = 0.0
    #: Token limit of the length fit; None = the build profile's, 0 = no length fit.
    max_length: int | None = None

    def __post_init__(self) -> None:
        for i, a in enumerate(self.augmentations):
            if a not in AUGMENTATIONS:
                raise ConfigError(
                    f"build.augmentations[{i}]: unknown augmentation {a!r} (known: {', '.join(AUGMENTATIONS)})"
                )
        _check_range("build.max_share", self.max_share, 0.0, 1.0, lo_open=True)
        _check_range("build.no_call_rate", self.no_call_rate, 0.0, 1.0)
        _check_range("build.no_call_near_miss", self.no_call_near_miss, 0.0, 1.0)
        if self.max_length is not None:
            _check_range("build.max_length", self.max_length, 0)


@dataclass(frozen=True)
class ServeConfig:
    """The served engine (``engine: openai``, engines/serve.py): which server, where, and its knobs.

    The pipeline starts a server for each generating stage's policy and stops it after the stage, or uses the
    one at ``url``.  On CPU that is llama.cpp's ``llama-server`` (the policy folder written as GGUF), on GPU
    ``vllm serve`` (the docker-compose ``vllm`` service is one given by URL)."""

    #: A running OpenAI-compatible server (``http://127.0.0.1:8000``); None = ``$ITOOL_ENGINE_URL``, else start one.
    url: str | None = None
    #: What to start: "auto" (vLLM where installed: `make install` does on CPU too; else llama.cpp), "llama.cpp"
    #: or "vllm".
    server: str = "auto"
    #: Sequences the server decodes together (llama.cpp ``-np``) = requests the engine keeps in flight.
    slots: int = 8
    #: Context tokens per slot (the K/V pool is ``slots × ctx_per_slot``).
    ctx_per_slot: int = 2048
    #: Precision of the GGUF llama.cpp serves: "f32" (the transformers engine's arithmetic; the contract suite
    #: compares greedy ids), "f16" or "q8_0" (smaller and faster to decode, outputs drift slightly).
    gguf_dtype: str = "f32"
    #: Precision vLLM serves the policy in: "auto" = the folder's own dtype (float32 here: the transformers
    #: engine's arithmetic, greedy ids equal), "fast" = bfloat16 where the hardware does it natively (a CUDA GPU;
    #: a CPU with AMX or AVX512-BF16) else the folder's, or "float32" / "bfloat16" / "float16".  bf16 halves the
    #: bytes read per decode step and runs at the bf16 matmul rate (bench/serve_speed.py: 1.5× f32 vLLM's
    #: mining on a 2-core EPYC with AVX512-BF16), but greedy outputs are no longer the f32 model's token for token.
    vllm_dtype: str = "auto"
    #: Seconds per request, and for a started server to answer ``/health``.
    request_timeout: float = 300.0
    startup_timeout: float = 300.0
    #: Retries of a transient failure (connection refused while starting, 5xx, timeouts), exponential back-off.
    retries: int = 8
    #: vLLM only: GPUs one server spreads the model over (``--tensor-parallel-size``), for a model that does
    #: not fit one GPU.  1 = one GPU per server.
    tensor_parallel: int = 1
    #: vLLM only: servers started side by side for the mining stage, each on its own ``tensor_parallel`` GPUs
    #: (``CUDA_VISIBLE_DEVICES``); the mining shards are spread over them round-robin (shard i → replica
    #: i mod replicas), so set ``mcts.shards`` to a multiple of it.  A node of 8 GPUs with an 8B model:
    #: ``replicas: 8``; a 70B model: ``tensor_parallel: 4, replicas: 2``.
    replicas: int = 1
    #: Which replica a started server is (its GPUs: ``replica × tensor_parallel`` onwards): set by the pipeline
    #: per mining shard, not by hand.
    replica: int = 0

    def __post_init__(self) -> None:
        if self.url is not None and not str(self.url).startswith(("http://", "https://")):
            raise ConfigError(f"serve.url: {self.url!r} must start with http:// or https://")
        _check_range("serve.tensor_parallel", self.tensor_parallel, 1)
        _check_range("serve.replicas", self.replicas, 1)
        _check_range("serve.replica", self.replica, 0, self.replicas - 1)
        if (self.tensor_parallel > 1 or self.replicas > 1) and self.server == "llama.cpp":
            raise ConfigError(
                f"serve.tensor_parallel / serve.replicas ({self.tensor_parallel} / {self.replicas}) apply to vLLM "
                "only: set serve.server to 'vllm' (or 'auto' on a GPU machine), or leave both at 1"
            )
        if self.replicas > 1 and self.url is not None:
            raise ConfigError(
                f"serve.replicas: {self.replicas} replicas are started by the pipeline; with serve.url "
                f"({self.url!r}) nothing is started: leave replicas at 1"
            )
        _check_choice("serve.server", self.server, SERVERS)
        _check_choice("serve.gguf_dtype", self.gguf_dtype, GGUF_DTYPES)
        _check_choice("serve.vllm_dtype", self.vllm_dtype, VLLM_DTYPES)
        _check_range("serve.slots", self.slots, 1)
        _check_range("serve.ctx_per_slot", self.ctx_per_slot, 64)
        _check_range("serve.request_timeout", self.request_timeout, 0.0, lo_open=True)
        _check_range("serve.startup_timeout", self.startup_timeout, 0.0, lo_open=True)
        _check_range("serve.retries", self.retries, 0)


#: How the training stages run: in this process, or under ``accelerate launch`` with one of these strategies.
LAUNCH_STRATEGIES = ("none", "ddp", "fsdp", "deepspeed")
LAUNCH_PRECISIONS = ("auto", "no", "bf16")
DEEPSPEED_OFFLOAD = ("none", "optimizer", "optimizer+params")
FSDP_SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD")


@dataclass(frozen=True)
class LaunchConfig:
    """How the two training stages (warm-up SFT, preference update) run: in the calling process (``strategy:
    none``, the default), or as ``accelerate launch`` of ``itool_core.train.launch`` over several processes /
    GPUs / machines (itool_core/train/launch.py).  Data parallel: every process trains the same LoRA on its
    share of each batch, so the global batch is ``per_device_batch_size × grad_accum_steps × processes``.

    Results do not depend on how the batch is split (within floating-point reduction order), so the stages'
    cache keys see only the global batch, never the process count or the strategy (tasks/stages.py)."""

    #: "none": in this process; "ddp": data parallel (one full copy of the weights per GPU — right for LoRA,
    #: whose optimiser state is tiny); "fsdp": FSDP (shards the weights: a model that does not fit one GPU);
    #: "deepspeed": DeepSpeed ZeRO (``zero_stage``).  On a machine without CUDA "ddp" runs its processes on
    #: the CPU (gloo) — how the tests run it.
    strategy: str = "none"
    #: Training processes on each machine: one per GPU.
    processes_per_machine: int = 1
    #: Machines taking part; the one running the pipeline is machine 0, ``hosts`` are the others.
    machines: int = 1
    #: DeepSpeed ZeRO stage: 1 shards optimiser states, 2 also gradients, 3 also weights.
    zero_stage: int = 2
    #: DeepSpeed: move optimiser states (and parameters) to CPU memory.
    offload: str = "none"
    #: FSDP sharding strategy (accelerate's ``fsdp_sharding_strategy``).
    fsdp_sharding: str = "FULL_SHARD"
    #: Mixed precision accelerate sets up: "auto" = what the stage's ``bf16`` says; "no" / "bf16" must agree
    #: with it (checked in RunConfig).
    mixed_precision: str = "auto"
    #: Your own ``accelerate config`` file instead of the settings above (they are then ignored, but for
    #: ``hosts`` / ``remote_command``).
    config_file: str | None = None
    #: Address of machine 0 that the other machines reach (multi-machine runs).
    main_process_ip: str | None = None
    main_process_port: int = 29500
    #: The other machines (machine ranks 1, 2, ...), as ``remote_command`` names them; same checkout path,
    #: environment and a shared filesystem for the run folder on each (docs/SERVICE.md, section C).
    hosts: tuple[str, ...] = ()
    #: How a rank group is started on another machine: ``{host}`` and ``{command}`` (the shell-quoted launch
    #: command, run in the same working directory) are filled in.
    remote_command: str = "ssh -o BatchMode=yes {host} {command}"

    def __post_init__(self) -> None:
        _check_choice("launch.strategy", self.strategy, LAUNCH_STRATEGIES)
        _check_choice("launch.mixed_precision", self.mixed_precision, LAUNCH_PRECISIONS)
        _check_choice("launch.offload", self.offload, DEEPSPEED_OFFLOAD)
        _check_choice("launch.fsdp_sharding", self.fsdp_sharding, FSDP_SHARDING)
        _check_range("launch.processes_per_machine", self.processes_per_machine, 1)
        _check_range("launch.machines", self.machines, 1)
        _check_range("launch.zero_stage", self.zero_stage, 0, 3)
        _check_range("launch.main_process_port", self.main_process_port, 1, 65535)
        if (
            self.strategy == "none"
            and self.config_file is None
            and (self.processes_per_machine, self.machines) != (1, 1)
        ):
            raise ConfigError(
                f"launch.strategy: 'none' trains in one process, but processes_per_machine={self.processes_per_machine}"
                f" and machines={self.machines}: choose 'ddp', 'fsdp' or 'deepspeed'"
            )
        if self.offload != "none" and self.strategy != "deepspeed":
            raise ConfigError(f"launch.offload: {self.offload!r} needs strategy 'deepspeed' (got {self.strategy!r})")
        if len(self.hosts) != self.machines - 1:
            raise ConfigError(
                f"launch.hosts: {self.machines} machines need {self.machines - 1} other host(s), got "
                f"{len(self.hosts)} ({', '.join(self.hosts) or 'none'})"
            )
        if self.machines > 1 and not self.main_process_ip:
            raise ConfigError("launch.main_process_ip: a multi-machine run needs machine 0's address")
        for key in ("{host}", "{command}"):
            if key not in self.remote_command:
                raise ConfigError(f"launch.remote_command: {self.remote_command!r} lacks {key}")
        if self.config_file is not None and not Path(os.path.expanduser(self.config_file)).is_file():
            raise ConfigError(f"launch.config_file: {self.config_file!r}: no such file")

    @property
    def in_process(self) -> bool:
        """True when the stages train in the calling process (no ``accelerate launch``)."""
        return self.strategy == "none" and self.config_file is None

    def world_size(self) -> int:
        """Training processes over all machines (an accelerate config file says its own ``num_processes``)."""
        if self.config_file is not None:
            import yaml

            data = yaml.safe_load(Path(os.path.expanduser(self.config_file)).read_text()) or {}
            return int(data.get("num_processes", 1))
        return self.processes_per_machine * self.machines


# ------------------------------------------------------------------------------------------------- run


@dataclass(frozen=True)
class RunConfig:
    """Everything one pipeline run needs; one field per stage (see the module docstring to add one)."""

    #: Name of the preset the file started from (informational; loading applies it before the file's keys).
    profile: str = "quick"
    #: Base policy: an embedded name, a local folder, or a hub id.
    model: str = "smollm2-135m-instruct"
    #: Training data: "default" (BFCL unused sets + API-Bank train, embedded, built as ``build`` says), a file
    #: or a hub id read by the loader ``data_format`` names.
    data: str = "default"
    #: A name of :data:`itool_core.registry.LOADERS` ("toolace", "xlam", "bfcl", "apibank", "examples" = this
    #: project's Parquet table), or "auto": the embedded set for ``data: default``, "examples" for a .parquet
    #: file; any other source needs its format named (a wrong guess would load nothing, or the wrong fields).
    data_format: str = "auto"
    #: How ``data: default`` becomes the warm-up set (augmentations, caps, length fit): ``itool data build``.
    build: BuildConfig = field(default_factory=BuildConfig)
    #: Generation backend for search / evaluation, a name of :data:`itool_core.registry.ENGINES`: "hf"
    #: (transformers, in-process), "vllm" (in-process, GPU) or "openai" (a served model, ``serve`` section).
    #: Training-side scoring (buffer perplexity, preference training) always runs in transformers.
    engine: str = "hf"
    serve: ServeConfig = field(default_factory=ServeConfig)
    device: str = "cpu"
    #: Number of iterations of refresh buffer → search → preference optimisation (§4.3; the paper uses ~3).
    iterations: int = 3
    seed: int = 0
    split: SplitConfig = field(default_factory=SplitConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    mcts: MCTSConfig = field(default_factory=MCTSConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    #: How the training stages run: one process (default) or ``accelerate launch`` over GPUs / machines.
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    #: After the iterations, also train and score the compute-matched control: the policy the iterations start
    #: from, trained further with plain SFT for the optimiser steps and tokens their preference updates spent
    #: (matching rule: itool_core/train/control.py).
    control: bool = False

    def __post_init__(self) -> None:
        _check_name("engine", self.engine, ENGINES)
        if self.launch.mixed_precision != "auto":
            want = self.launch.mixed_precision == "bf16"
            for name, value in (("sft.bf16", self.sft.bf16), ("preference.bf16", self.preference.bf16)):
                if value != "auto" and bool(value) != want:
                    raise ConfigError(
                        f"launch.mixed_precision: {self.launch.mixed_precision!r} contradicts {name}: {value!r} "
                        "(set both, or leave launch.mixed_precision at 'auto')"
                    )
        if (self.build.profile or self.profile) not in PROFILE_OVERRIDES:
            raise ConfigError(
                f"build.profile: {self.build.profile or self.profile!r} is not one of "
                f"{', '.join(PROFILE_OVERRIDES)} (set build.profile)"
            )
        _check_range("iterations", self.iterations, 0)
        # The buffer's perplexity must be measured on the prompt the policy was trained with.
        if self.sft.tools_style != self.buffer.tools_style:
            raise ConfigError(
                f"sft.tools_style ({self.sft.tools_style!r}) and buffer.tools_style ({self.buffer.tools_style!r}) "
                "must be equal: set both"
            )

    def loader(self) -> str:
        """The loader ``data`` is read with: "default" (the embedded set, built), or a LOADERS name."""
        if self.data_format != "auto":
            _check_name("data_format", self.data_format, LOADERS)
            if self.data == "default":
                raise ConfigError(f"data_format: {self.data_format!r} needs a data file or hub id, not data: default")
            return self.data_format
        if self.data == "default":
            return "default"
        if self.data.lower().endswith(".parquet"):
            return "examples"
        raise ConfigError(
            f"data: {self.data!r}: say which format it is: set data_format to one of {', '.join(LOADERS.names())}"
        )

    def engine_serve(self) -> ServeConfig | None:
        """The ``serve`` section where the engine is a served one, else None (in-process engines ignore it, and
        a stage's cache key then does not change with server knobs that do not apply)."""
        return self.serve if ENGINES.meta(self.engine, "served", False) else None

    def evaluation_config(self) -> EvalConfig:
        """``evaluation`` with its tool rendering resolved: the rendering the policy is trained with unless set."""
        if self.evaluation.tools_style is not None:
            return self.evaluation
        return dataclasses.replace(self.evaluation, tools_style=self.sft.tools_style)


#: The generation engine of the CPU profiles: the fastest measured on a 2-core AMD EPYC with AVX512-BF16
#: (bench/serve_speed.py, docs/RESULTS.md): one vLLM server per run (``serve.server: auto`` — vLLM where
#: ``make install`` put it, else llama-server), bf16 weights where native.  Against the transformers engine, caches
#: emptied before each row: mining 3.9× the trees/min (1.8× the generated tokens/s), evaluation 2.5× the
#: items/min; f32 vLLM 2.4× / 1.6× with greedy outputs equal to transformers'.
FASTEST_ENGINE: dict[str, Any] = {"engine": "openai", "serve": {"server": "auto", "vllm_dtype": "fast"}}

#: Overrides of the dataclass defaults per profile, in the YAML shape.
PROFILE_OVERRIDES: dict[str, dict[str, Any]] = {
    # The quick training set is measured and length-fitted with the compact tool rendering (data/build.py):
    # training, the buffer and evaluation must all use it.
    # Budgets: 3 × 16 optimiser steps of 4 examples (≈ 15–30 s/step here → ≈ 20 min), lr 5e-4 because 48 LoRA
    # steps at the paper's 1e-4 barely move the model.
    # Buffer: the paper's α = 20 %, but taken below the hardest half (skip_hardest 0.5).  Measured on the
    # warmed-up SmolLM2-135M (docs/notebook/RESULTS.md): its hardest 10 % gave 0 pairs in 15 trees (every sibling
    # wrong); the band below the median gave the only pairs.
    "quick": {
        **FASTEST_ENGINE,
        "sft": {"tools_style": "compact", "max_steps_per_stage": 16, "learning_rate": 5e-4},
        "buffer": {"tools_style": "compact", "alpha": 0.2, "skip_hardest": 0.5},
        # 30 trees × 4 rounds × k 3 ≈ 10 min per iteration on 2 cores (MCTS-DPO's range: 5–64 rounds).
        # min_chosen_q −1: a 135M policy's rollouts from a correct first call still fail, so that call's
        # Q is ≈ −0.86 against −1.01 for a wrong one; the release's −0.3 drops exactly those pairs.
        "mcts": {"simulations": 4, "k": 3, "min_chosen_q": -1.0},
        # ≈ 10 pairs per iteration at this budget: one pass would be 2–3 optimiser steps of 4 pairs.
        "preference": {"epochs": 3.0},
    },
    # The whole method in minutes on 2 CPU cores (``make demo``), meant to learn visibly in ≤ 10 min: a real
    # warm-up (bf16 autocast where native) that takes SFT above base on simple_python + multiple, and iterations
    # that each train on ≥ 8 mined pairs.  Sized from DESIGN.md's per-step costs (bf16 SFT step ≈ 5.5–6.5 s),
    # tuned on the dev items only; wall time per stage and scores of a fresh-clone run: docs/RESULTS.md.
    # Only two categories at 10 items: an interval still spans ≈ ±25 points, so the demo can show base → SFT,
    # not what the iterations add (the proof profile measures that).
    "demo": {
        **FASTEST_ENGINE,
        "iterations": 2,
        # ≈ 20 pool examples: the perplexity refresh costs 2–3 s per example on a 2-core CPU
        "split": {"pool_fraction": 0.015},
        # 3 × 8 steps of 4 examples at lr 1e-3: the 48-step run at 5e-4 reached ≈ 20 % on simple / multiple
        # (docs/notebook/RESULTS.md); twice the rate buys back the steps the demo cannot afford.  Examples over
        # 640 tokens are left out: a step's cost grows with its length (6.1 / 8.8 / 11.9 s per step at 470 / 620
        # / 790 tokens an example), and the evaluated single calls are short; 15 % of the hard stage remains.
        "sft": {
            "tools_style": "compact",
            "max_steps_per_stage": 8,
            "max_length": 640,
            "learning_rate": 1e-3,
            "per_device_batch_size": 4,
        },
        # ≈ 12 trees per iteration (60 % of the pool, below its hardest 30 %): the second iteration's policy
        # branches less; on the dev items 8 trees gave 8 and 5 pairs, 10 trees 11 and 7 (3 rounds instead of 2:
        # 11 and 6) — the goal is ≥ 8 trained per iteration
        "buffer": {"tools_style": "compact", "alpha": 0.6, "skip_hardest": 0.3},
        "mcts": {"simulations": 2, "k": 3, "min_chosen_q": -1.0, "min_q_gap": 0.0},
        "policy": {"max_step_tokens": 64, "max_rollout_tokens": 96, "continue_incomplete": 1},
        # 4 steps of 2 pairs: each iteration trains on up to 8 of its pairs
        "preference": {"max_steps": 4, "per_device_batch_size": 2, "grad_accum_steps": 1},
        # generation is the cost of an evaluation: 2 categories × 10 items, 48 tokens (a single call in the
        # compact rendering is 15–40 tokens)
        "evaluation": {
            "limit": 10,
            "max_new_tokens": 48,
            "categories": ["simple_python", "multiple"],
        },
    },
    # The method shown working at 135 M on 2 CPU cores (``python bench/pipeline_run.py --profile proof``): base →
    # curriculum SFT → 2 iTool iterations, plus the compute-matched control — the SFT policy trained further with
    # plain SFT for exactly the optimiser steps S the iterations' preference updates took, with
    # b = round(T / (S · mean tokens of a pool example)) pool examples per step so that it feeds ≈ the T training
    # tokens of the rows those updates trained on (prompt + chosen, prompt + rejected; itool_core/train/control.py;
    # the run records both).  Every stage is scored on the same held-out TEST items: the first 100 of each
    # category's seeded order (500 pooled).  Tune on the DEV items after them (``--set evaluation.split=dev``),
    # never on test.  Budgets sized before any run from DESIGN.md's per-step costs (bf16 SFT step ≈ 5.5 s at
    # 4 × 512 tokens) for the ≤ 2 h goal on 2 cores; wall time per stage and the result: docs/RESULTS.md (the
    # claim not reproduced at 135 M; the SFT's call / no-call bias decides the pooled score).
    "proof": {
        **FASTEST_ENGINE,
        "iterations": 2,
        "control": True,
        "build": {"profile": "quick"},
        "sft": {"tools_style": "compact", "max_steps_per_stage": 32, "learning_rate": 1e-3},
        "buffer": {"tools_style": "compact", "alpha": 0.2, "skip_hardest": 0.5},
        "mcts": {"simulations": 4, "k": 3, "min_chosen_q": -1.0},
        "preference": {"epochs": 3.0},
        "evaluation": {
            "categories": ["simple_python", "multiple", "parallel", "irrelevance", "apibank_level1"],
            "limit": 100,
            "split": "test",
            "test_items": 100,
            "max_new_tokens": 96,
        },
    },
    "paper": {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "data": "Team-ACE/ToolACE",
        "data_format": "toolace",
        # the served engine on `vllm serve`, which the pipeline starts per generating stage on the stage's
        # merged policy (engines/serve.py); the docker-compose vllm service is one given by serve.url
        "engine": "openai",
        "serve": {"server": "vllm", "slots": 64, "ctx_per_slot": 8192},
        "device": "cuda",
        "iterations": 3,
        "sft": {
            "lora_r": 16,
            "lora_alpha": 32,
            # Not given by the paper; the usual LoRA value.  Dropout is only costly on CPU.
            "lora_dropout": 0.05,
            "learning_rate": 1e-4,
            "epochs_per_stage": 3.0,
            # global batch 32 = 4 per GPU × 2 accumulation × 4 GPUs (launch below; 4 × 8 on one GPU)
            "per_device_batch_size": 4,
            "grad_accum_steps": 2,
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
        # Within MCTS-DPO's ranges (5–64 simulations, 2–4 actions); shards = one per engine replica / GPU.
        "mcts": {"simulations": 16, "k": 4, "trees_per_batch": 64},
        # The authors' release samples expansions at T = 1.5 with 50-token steps; ours stops at a call's end.
        "policy": {"max_step_tokens": 128, "max_rollout_tokens": 512},
        # Llama-3.1-8B: bf16 weights, checkpointing on (activations dominate), LoRA r16/α32 like the warm-up
        # (§5.1), lr 5e-5, 10 % warm-up + cosine, global batch 32 pairs = 4 per GPU × 2 accumulation × 4 GPUs.
        "preference": {
            "learning_rate": 5e-5,
            "lr_scheduler": "cosine",
            "warmup_ratio": 0.1,
            "per_device_batch_size": 4,
            "grad_accum_steps": 2,
            "max_length": 4096,
            "lora_dropout": 0.05,
            "bf16": True,
            "gradient_checkpointing": True,
            "model_dtype": "bfloat16",
            "logging_steps": 10,
        },
        # The paper's 4 GPUs, data parallel.  Memory per GPU for LoRA r16 (all-linear) on Llama-3.1-8B: frozen
        # bf16 weights 8.0 B × 2 B = 16 GB; the adapter has 42 M parameters (32 layers × r·(in + out) of q, k,
        # v, o, gate, up, down = 1.31 M per layer), so its fp32 weights + gradients + two Adam moments take
        # 42 M × 16 B = 0.7 GB; activations with checkpointing at 4 × 4096 tokens ≈ 4 GB of layer inputs plus
        # one layer's recomputation, and the logits 4 × 4096 × 128 k × 2 B ≈ 4 GB (DPO: chosen + rejected,
        # twice that).  ≈ 30–40 GB of an 80 GB A100.  ZeRO-2 would shard only the 0.7 GB of optimiser state
        # and gradients: it saves nothing worth its communication, so DDP.  Below ~40 GB per GPU shard the
        # 16 GB of weights instead: strategy "fsdp" or "deepspeed" with zero_stage 3.
        "launch": {"strategy": "ddp", "processes_per_machine": 4},
        # Full categories, live ones included (the paper's Table 1 reports BFCL overall / non-live / live).
        "evaluation": {
            "limit": None,
            "categories": [
                "simple_python",
                "multiple",
                "parallel",
                "parallel_multiple",
                "irrelevance",
                "live_simple",
                "live_multiple",
                "live_parallel",
                "live_parallel_multiple",
                "live_irrelevance",
                "live_relevance",
                "apibank_level1",
                "apibank_level2",
            ],
            "max_new_tokens": 512,
            "batch_size": 64,
        },
    },
}


# ------------------------------------------------------------------------------------------------- presets


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

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, expected a YAML file") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    if cls is RunConfig:
        name = data.get("profile", "quick")
        if not isinstance(name, str):
            raise ConfigError(f"{path}: profile must be a string, got {name!r}")
        base = profile(name)
        return validate_paths(from_dict(RunConfig, data, base))
    return from_dict(cls, data)


# A path-looking value: absolute, relative (./ ../), home (~), or a data/model file name.
_FILE_SUFFIXES = (
    ".json",
    ".jsonl",
    ".parquet",
    ".csv",
    ".arrow",
    ".yaml",
    ".yml",
    ".txt",
    ".gguf",
    ".safetensors",
    ".bin",
    ".pt",
)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _check_source(key: str, value: str, *, want_dir: bool, also: Any = tuple) -> None:
    path = Path(os.path.expanduser(value))
    if path.exists():
        if want_dir and not path.is_dir():
            raise ConfigError(f"{key}: {value!r} is a file; a local model is a folder")
        if not want_dir and path.is_dir():
            raise ConfigError(f"{key}: {value!r} is a folder; expected a Parquet, JSON or JSON Lines file")
        return
    looks_like_path = value.startswith(("/", ".", "~")) or value.lower().endswith(_FILE_SUFFIXES)
    if not looks_like_path and (_HUB_ID.fullmatch(value) or value in also()):
        return  # a hub id is only asked for when the stage runs (offline machines fail there, by name)
    what = "no such file or folder" if looks_like_path else "neither an existing path nor a hub id (org/name)"
    known = f"; embedded models: {', '.join(also())}" if also() else ""
    raise ConfigError(f"{key}: {value!r}: {what}{known}")


def validate_paths(cfg: RunConfig) -> RunConfig:
    """Check ``model`` and ``data`` before any stage runs (a typo fails here, not minutes into a run).

    Rule: a value that exists must be a folder (``model``) or a file (``data``); otherwise ``data: default``
    (the embedded set), an embedded model name, or a hub id shaped ``org/name`` is accepted as is; anything
    else that does not exist is an error naming the key — in particular every path-looking value (starting
    with ``/``, ``.`` or ``~``, or ending in a data/model file suffix).  Relative paths are relative to the
    working directory, as the stages read them.
    """

    def embedded() -> tuple[str, ...]:
        from .registry import EMBEDDED_MODELS

        return tuple(sorted(EMBEDDED_MODELS))

    _check_source("model", cfg.model, want_dir=True, also=embedded)
    if cfg.data != "default":
        _check_source("data", cfg.data, want_dir=False)
    cfg.loader()  # a source without a format fails here, not in the data stage
    return cfg


#: The shipped experiment files (every field of every stage), one per profile: ``itool run --config`` them or
#: copy one to start an experiment.  Generated by ``itool config --profile P -o ...``; a test keeps them equal
#: to :func:`profile`.
CONFIG_DIR = Path(__file__).parent / "configs"


def dump_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write every field of ``cfg`` as YAML (atomically); ``load_config`` of the file gives ``cfg`` back."""
    import yaml

    from .artifacts import atomic_write_text

    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)
    atomic_write_text(path, text)
    return Path(path)
