"""Preference optimisation on step-level pairs (§4.3, Eq. 10–11 of the paper): DPO, with IPO, SimPO, ORPO selectable.

The idea
--------
The search (``mcts``) leaves, at every node with two or more visited children, a pair of *next steps* from the
same state: ``x`` = the rendered prompt plus the steps taken so far, ``a_w`` = the child with the highest Q,
``a_l`` = the one with the lowest Q (``mcts.pairs``).  The policy is then updated with DPO on these pairs
(Eq. 10), the reference being the policy of the *previous* iteration (Eq. 11):

    L_DPO(θ; π_ref) = −E_(x, a_w, a_l) log σ( β log πθ(a_w|x)/π_ref(a_w|x) − β log πθ(a_l|x)/π_ref(a_l|x) )
    π_ref = π_θ_{i−1}          (iteration i starts from, and is anchored to, the policy that ran the search)

``log π(a|x)`` is the sum of the token log-probs of the step's tokens after ``x``; ``β`` sets how far the new
policy may move from the reference (the implicit KL leash).  Because a step is short and the shared state is
long, a step-level pair isolates the *fragment* where the two answers part ways (the paper's "fragment
deficiency") instead of diluting it over a whole answer.

The variants change the loss, not the data (``PreferenceConfig.loss``, one module each under
:mod:`itool_core.train.losses`, registered in :data:`itool_core.registry.LOSSES`): ``dpo`` and ``ipo``
(reference = previous policy), ``simpo`` and ``orpo`` (reference-free: no reference model is loaded).

Step-level pitfalls handled here (docs/design.md#step-level-dpo-pitfalls)
------------------------------------------------------------------------
1. **EOS only on terminal steps.**  trl appends EOS to every chosen/rejected (DPO: to the text; CPO/ORPO:
   ``add_eos_token_if_needed`` after tokenising).  On an intermediate step (one call followed by ``,``) that
   would teach the policy to *stop after one call*.  We build the tokenised rows ourselves:
   ``chosen = chosen_ids + [eos]`` only if ``chosen_terminal``, same for rejected — and bypass trl's text
   preparation (see "trl internals" below).
2. **The ids the search generated, never re-tokenised.**  ``prompt_ids + chosen_ids`` is exactly a sequence the
   policy produced (``mcts.pairs``).  Re-tokenising text can merge tokens across the boundary, making the pair
   something the search never saw.  trl's DPO tokenises text, CPO/ORPO also prepend BOS; we do neither.
3. **Shared tokens go to the prompt.**  The shared state is already in ``prompt_ids``; in addition the leading
   tokens both steps share (``[get_weather(city=`` …) are moved from the completions into the prompt
   (``trim_common_prefix``, as MCTS-DPO sums log-probs only from the first differing token).  For DPO's summed
   log-ratios this changes nothing (identical tokens cancel exactly); for the length-normalised losses (SimPO,
   IPO, ORPO) it keeps shared tokens from diluting the margin.  The full sequences are unchanged.
4. **Too long → dropped, never truncated.**  A cut completion would lose its end (and its EOS).  Pairs with
   ``len(prompt) + len(longest completion) > max_length`` are left out and counted.
5. **Reference = the previous policy, explicitly.**  ``policy`` is a *merged* folder (the previous iteration's
   LoRA folded into its base).  We train a *fresh* LoRA adapter on it with ``ref_model=None``; trl then computes
   the reference by disabling the adapter — i.e. ``policy`` itself, which *is* the previous iteration's policy
   because it was merged.  (Had we loaded the previous adapter as a ``PeftModel`` and trained on, trl would add
   a copy of it; had we trained a new adapter on the original base, the reference would silently be the
   base.)  ``reference`` defaults to ``policy``; a different folder is loaded as an explicit ``ref_model``.
6. **ORPO's SFT term on the step only.**  trl's ORPO computes the NLL term over prompt *and* response; with a
   long shared state that is mostly SFT on the prompt (system prompt and tool schemas included).  The paper's
   L_SFT is over the response; we recompute it over the chosen completion tokens.

trl internals overridden (trl 1.16.0; re-check on upgrade; the subclasses live in ``train.losses``)
--------------------------------------------------------------------------------------------------
``DPOTrainer._prepare_dataset`` returns our already tokenised dataset; ``CPOTrainer`` / ``ORPOTrainer``
``tokenize_row`` builds trl's row format from our ids; ``ORPOTrainer.concatenated_forward`` recomputes the NLL
term over the chosen completion only (pitfall 6); ``training_step`` counts tokens, then calls trl's.  trl's
collators and losses are untouched.

Metrics (loss, rewards/margins, rewards/accuracies, logps, steps, wall time, tokens/s, peak RSS) leave through
``callback(event, metrics)`` and the returned :class:`PreferenceResult`; nothing is printed.
"""

from __future__ import annotations

import gc
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import PreferenceConfig
from . import losses
from .common import all_sum, barrier, is_main, label_positions_only, peak_rss_mb, quiet_progress, world_size

__all__ = [
    "PreferenceConfig",
    "PreferenceResult",
    "PreparedPairs",
    "Callback",
    "load_pairs",
    "prepare_pairs",
    "planned_steps",
    "build_trainer",
    "train_preference",
    "completion_logps",
]

#: ``callback(event, metrics)``; events "start", "log", "end" (see :func:`train_preference`).
Callback = Callable[[str, dict], None]


# ------------------------------------------------------------------------------------------------------- data

_REQUIRED = ("prompt_ids", "chosen_ids", "rejected_ids", "chosen_terminal", "rejected_terminal")


def load_pairs(src: Any) -> list[dict[str, Any]]:
    """PAIRS rows as dicts from a list of dicts, a pyarrow Table, an :class:`~itool_core.artifacts.ArtifactRef`
    (content hash verified) or a Parquet path (schema tag checked)."""
    import pyarrow as pa

    from ..artifacts import ArtifactRef, read_table
    from ..mcts.pairs import PAIRS

    if isinstance(src, (ArtifactRef, str, os.PathLike)):
        rows = read_table(src, PAIRS).to_pylist()
    elif isinstance(src, pa.Table):
        rows = src.to_pylist()
    else:
        rows = [dict(r) for r in src]
    for i, r in enumerate(rows):
        missing = [k for k in _REQUIRED if k not in r]
        if missing:
            raise ValueError(f"pair {i}: missing {missing} (PAIRS schema, itool_core.mcts.pairs)")
    return rows


@dataclass
class PreparedPairs:
    """Tokenised training rows and what was left out.  ``rows[i]`` = {prompt_ids, chosen_ids, rejected_ids}."""

    rows: list[dict[str, list[int]]]
    n_input: int
    n_dropped_too_long: int = 0
    n_dropped_empty: int = 0
    #: Non-terminal steps whose ids ended in EOS (a search bug upstream): the EOS was removed.
    n_eos_stripped: int = 0
    n_chosen_terminal: int = 0
    n_rejected_terminal: int = 0
    #: Tokens moved from the completions into the prompt by ``trim_common_prefix``.
    n_prefix_tokens_moved: int = 0
    #: Tokens of the kept rows (prompt + chosen + prompt + rejected, i.e. one epoch's forward tokens).
    n_tokens: int = 0

    def stats(self) -> dict[str, int]:
        d = asdict(self)
        d.pop("rows")
        d["n_pairs"] = len(self.rows)
        return d


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prepare_pairs(pairs: Iterable[Mapping[str, Any]], eos_id: int, cfg: PreferenceConfig) -> PreparedPairs:
    """Turn PAIRS rows into trl's tokenised preference rows, from the search's own ids (no re-tokenisation).

    ``chosen = chosen_ids + [eos]`` only if ``chosen_terminal`` (same for rejected): a non-terminal step — one
    call followed by ``,`` — must not teach the policy to stop.  See the module docstring for the other rules.
    """
    pairs = list(pairs)
    out = PreparedPairs(rows=[], n_input=len(pairs))

    def completion(ids: Sequence[int], terminal: bool) -> list[int]:
        ids = [int(t) for t in ids]
        if terminal:
            # the engines never return EOS in token_ids (engines.base); append it once
            if not ids or ids[-1] != eos_id:
                ids.append(eos_id)
        elif ids and ids[-1] == eos_id:
            ids = ids[:-1]
            out.n_eos_stripped += 1
        return ids

    for p in pairs:
        prompt = [int(t) for t in p["prompt_ids"]]
        chosen = completion(p["chosen_ids"], bool(p["chosen_terminal"]))
        rejected = completion(p["rejected_ids"], bool(p["rejected_terminal"]))
        if not prompt or not chosen or not rejected or chosen == rejected:
            out.n_dropped_empty += 1
            continue
        if len(prompt) + max(len(chosen), len(rejected)) > cfg.max_length:
            out.n_dropped_too_long += 1
            continue
        if cfg.trim_common_prefix:
            # keep at least one token in each completion: the pair must still say something
            k = min(_common_prefix(chosen, rejected), len(chosen) - 1, len(rejected) - 1)
            if k > 0:
                prompt, chosen, rejected = prompt + chosen[:k], chosen[k:], rejected[k:]
                out.n_prefix_tokens_moved += k
        out.n_chosen_terminal += bool(p["chosen_terminal"])
        out.n_rejected_terminal += bool(p["rejected_terminal"])
        out.n_tokens += 2 * len(prompt) + len(chosen) + len(rejected)
        out.rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return out


def planned_steps(n_pairs: int, cfg: PreferenceConfig, processes: int = 1) -> int:
    """Optimiser steps: ``ceil(epochs · ceil(ceil(n / (batch · processes)) / accumulation))``, capped by
    ``max_steps``; ``processes`` data-parallel ranks each take ``per_device_batch_size`` pairs of a micro-batch."""
    if n_pairs <= 0:
        return 0
    batches = math.ceil(n_pairs / (cfg.per_device_batch_size * processes))
    steps = math.ceil(cfg.epochs * math.ceil(batches / cfg.grad_accum_steps) - 1e-9)
    if cfg.max_steps is not None:
        steps = min(steps, cfg.max_steps)
    return max(steps, 1)


# ------------------------------------------------------------------------------------------------- training


def _same_model(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Same local folder (after resolving links / relative paths), or the same name/hub id."""
    path_a, path_b = Path(a), Path(b)
    if path_a.exists() and path_b.exists():
        return path_a.resolve() == path_b.resolve()
    return str(a) == str(b)


def _trl_args(cfg: PreferenceConfig, output_dir: str, steps: int):
    import torch

    from ..models import resolve_bf16

    common = dict(
        output_dir=output_dir,  # nothing is saved there (save_strategy="no"); the adapter is saved by us
        max_steps=steps,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=float(cfg.warmup_ratio),  # transformers 5: a float in [0, 1) is a ratio
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        beta=cfg.resolved_beta(),
        bf16=resolve_bf16(cfg.bf16),
        # trl defaults to checkpointing ON; transformers 5 calls it activation_checkpointing (the new name wins
        # over trl's deprecated gradient_checkpointing default).  A deliberate choice, see PreferenceConfig.
        activation_checkpointing=cfg.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(),  # bf16 autocast on CPU needs the explicit CPU flag
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_strategy="steps",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        # launched data-parallel (train/launch.py): every LoRA weight takes part in every step, so DDP need
        # not search the graph for unused ones each step
        ddp_find_unused_parameters=False,
        disable_dropout=True,  # the model's own dropout; LoRA dropout is cfg.lora_dropout
    )
    return losses.get(cfg.loss).trl_config(cfg, common)


def _lora(cfg: PreferenceConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules) if isinstance(cfg.target_modules, tuple) else cfg.target_modules,
        task_type="CAUSAL_LM",
    )


def build_trainer(
    policy: str | os.PathLike,
    pairs: Any,
    cfg: PreferenceConfig,
    output_dir: str | os.PathLike,
    *,
    reference: str | os.PathLike | None = None,
    callbacks: Sequence[Any] = (),
):
    """The trl trainer of ``cfg.loss`` with a fresh LoRA adapter on ``policy`` and the step-level rows.

    Returns ``(trainer, prepared, info)``: ``prepared`` is the :class:`PreparedPairs`, ``info`` says which
    reference is used (``{"reference": path or None, "reference_mode": ...}``).  Exposed for tests and
    benchmarks (``trainer.get_train_dataloader()`` yields exactly the batches training sees);
    :func:`train_preference` is the stage entry point.
    """
    from datasets import Dataset
    from transformers import PrinterCallback

    from ..models import load_policy

    model, tok = load_policy(policy, dtype=cfg.model_dtype)
    if tok.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token: terminal steps cannot be closed")
    prepared = prepare_pairs(load_pairs(pairs), tok.eos_token_id, cfg)
    if not prepared.rows:
        raise ValueError(f"no preference pair left to train on: {prepared.stats()}")

    ref_model = None
    if not cfg.uses_reference:
        info: dict[str, Any] = {"reference": None, "reference_mode": f"none ({cfg.loss} is reference-free)"}
        if reference is not None and not _same_model(reference, policy):
            warnings.warn(f"{cfg.loss} is reference-free: reference={reference!s} is ignored", stacklevel=2)
    elif reference is None or _same_model(reference, policy):
        # ref_model=None + peft_config: trl disables the fresh adapter to get the reference = `policy` itself,
        # the merged previous-iteration policy (Eq. 11).  No second copy of the weights in memory.
        info = {"reference": str(policy), "reference_mode": "policy (adapter disabled)"}
    else:
        ref_model, _ = load_policy(reference, dtype=cfg.model_dtype)
        info = {"reference": str(reference), "reference_mode": "explicit ref_model"}

    steps = planned_steps(len(prepared.rows), cfg, world_size())
    trainer_cls = losses.get(cfg.loss).trainer_class()
    kwargs = dict(
        model=model,
        args=_trl_args(cfg, str(output_dir), steps),
        train_dataset=Dataset.from_list(prepared.rows),
        processing_class=tok,
        peft_config=_lora(cfg),
        callbacks=list(callbacks),
    )
    if cfg.uses_reference:
        kwargs["ref_model"] = ref_model
    trainer = trainer_cls(**kwargs)
    if hasattr(trainer, "shared_prefix"):
        trainer.shared_prefix = cfg.shared_prefix
    trainer.remove_callback(PrinterCallback)  # with tqdm off, transformers prints every log dict
    info["steps_planned"] = steps
    return trainer, prepared, info


@dataclass
class PreferenceResult:
    loss: str
    beta: float
    #: The reference the loss was anchored to (the ``policy`` folder by default), None for SimPO/ORPO.
    reference: str | None
    reference_mode: str
    policy: str
    n_pairs: int
    data: dict[str, int]  # PreparedPairs.stats(): dropped / terminal / moved-prefix counts
    steps: int
    train_loss: float  # the trainer's mean training loss
    #: Means over the logged steps of loss, rewards/margins, rewards/accuracies, rewards/chosen|rejected,
    #: logps/chosen|rejected (keys as trl logs them).
    metrics: dict[str, float]
    #: The last logged step's values (same keys).
    last: dict[str, float]
    history: list[dict[str, float]]
    #: Non-padding tokens of the rows trained on (prompt + chosen, prompt + rejected): the control's unit.
    tokens: int
    tokens_per_s: float
    s_per_step: float
    wall_s: float
    peak_rss_mb: float
    adapter_dir: str
    merged_dir: str | None
    trl_version: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    #: Tokens the policy's forwards ran (the reference's are as many): ``tokens`` less the shared states
    #: encoded once (``shared_prefix``); 0 in results written before it was counted.
    computed_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreferenceResult:
        """The result a run wrote (``preference_result.json``; a launched run's rank 0 writes it)."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


_SUMMARY_KEYS = (
    "loss",
    "rewards/margins",
    "rewards/accuracies",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
    "grad_norm",
)


def _make_log_callback(emit: Callback, history: list):
    from transformers import TrainerCallback

    class _Forward(TrainerCallback):
        # Forwards trl's per-step logs (loss, rewards/*, logps/*, ...) as "log" events.
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return  # the final train summary (train_loss, train_runtime) is reported in "end"
            rec: dict[str, float] = {"step": int(state.global_step)}
            for k, v in logs.items():
                try:
                    rec[k] = float(v)
                except (TypeError, ValueError):
                    pass
            history.append(rec)
            emit("log", rec)

    return _Forward()


def train_preference(
    policy: str | os.PathLike,
    pairs: Any,
    cfg: PreferenceConfig = PreferenceConfig(),
    out_dir: str | os.PathLike = "runs/preference",
    *,
    reference: str | os.PathLike | None = None,
    callback: Callback | None = None,
) -> PreferenceResult:
    """One preference update (Eq. 10–11): a fresh LoRA adapter on ``policy``, trained on step-level ``pairs``.

    ``policy``     a merged model folder (the previous iteration's policy, or the warm-up/base model) or any
                   name ``models.load_policy`` accepts.
    ``pairs``      PAIRS rows: a list of dicts, a pyarrow Table, an ``ArtifactRef`` or a Parquet path.
    ``reference``  DPO/IPO reference; defaults to ``policy`` — the previous iteration's policy, obtained by
                   disabling the new adapter (no second copy in memory).  A different folder is loaded and
                   passed to trl as ``ref_model``.  SimPO and ORPO are reference-free: it is ignored (warning).

    Writes ``out_dir/adapter`` (LoRA + tokenizer, atomically via ``models.save_policy``), ``out_dir/merged``
    (``models.merge_adapter``: the next iteration's policy and reference) when ``cfg.merge``, and
    ``out_dir/preference_result.json``.

    ``callback(event, metrics)`` receives ``"start"`` {loss, beta, reference, steps_planned, data stats},
    ``"log"`` per logging step {step, loss, rewards/margins, rewards/accuracies, rewards/chosen|rejected,
    logps/chosen|rejected, learning_rate, grad_norm, ...} and ``"end"`` (``PreferenceResult.to_dict()``).
    """
    emit = callback or (lambda event, metrics: None)
    with quiet_progress(), label_positions_only():
        return _train_preference(policy, pairs, cfg, Path(out_dir), reference, emit)


def _train_preference(policy, pairs, cfg: PreferenceConfig, out: Path, reference, emit: Callback) -> PreferenceResult:
    import trl

    from ..artifacts import atomic_write_json
    from ..models import merge_adapter, save_policy

    out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix=".trainer.", dir=out) as scratch:
        trainer, prepared, info = build_trainer(
            policy, pairs, cfg, scratch, reference=reference, callbacks=[_make_log_callback(emit, history)]
        )
        emit(
            "start", {"loss": cfg.loss, "beta": cfg.resolved_beta(), "policy": str(policy), **info, **prepared.stats()}
        )
        t0 = time.perf_counter()
        train_out = trainer.train()
        wall = time.perf_counter() - t0
        steps = int(train_out.global_step)
        tokens = all_sum(int(trainer.tokens_seen))  # each rank counted its own share of the batches
        computed = all_sum(int(trainer.tokens_computed))
        peft_model = trainer.accelerator.unwrap_model(trainer.model)
        # under accelerate launch every rank runs this function, and only rank 0 writes
        adapter_dir = out / "adapter"
        if is_main():
            save_policy(peft_model, trainer.processing_class, adapter_dir)
        del trainer, peft_model
        gc.collect()

    merged_dir = None
    if cfg.merge:
        # Reload `policy` and fold the adapter in (independent of the trainer's patched in-memory model).
        merged_dir = str(out / "merged")
        if is_main():
            merge_adapter(policy, adapter_dir, merged_dir)

    def mean(key: str) -> float | None:
        vals = [h[key] for h in history if key in h]
        return sum(vals) / len(vals) if vals else None

    metrics = {k: v for k in _SUMMARY_KEYS if (v := mean(k)) is not None}
    last = {k: history[-1][k] for k in _SUMMARY_KEYS if history and k in history[-1]}
    result = PreferenceResult(
        loss=cfg.loss,
        beta=cfg.resolved_beta(),
        reference=info["reference"],
        reference_mode=info["reference_mode"],
        policy=str(policy),
        n_pairs=len(prepared.rows),
        data=prepared.stats(),
        steps=steps,
        train_loss=float(train_out.training_loss),
        metrics=metrics,
        last=last,
        history=history,
        tokens=tokens,
        tokens_per_s=tokens / wall if wall > 0 else 0.0,
        s_per_step=wall / steps if steps else 0.0,
        wall_s=wall,
        peak_rss_mb=peak_rss_mb(),
        adapter_dir=str(adapter_dir),
        merged_dir=merged_dir,
        trl_version=trl.__version__,
        config=asdict(cfg),
        computed_tokens=computed,
    )
    if is_main():
        atomic_write_json(out / "preference_result.json", result.to_dict())
    barrier()  # no rank returns before the run's files are in place
    emit("end", result.to_dict())
    return result


# ------------------------------------------------------------------------------------------------- helpers


def completion_logps(model, prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> list[float]:
    """Per-token log-probs of ``completion_ids`` after ``prompt_ids`` under ``model`` (one forward pass, no
    grad) — an independent check of what the trainers compute (sum → DPO's log π, mean → SimPO/ORPO/IPO)."""
    import torch

    ids = torch.tensor([list(prompt_ids) + list(completion_ids)], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    start = len(prompt_ids) - 1
    targets = ids[0, 1:]
    return logp[start:, :].gather(1, targets[start:, None]).squeeze(1).tolist()
