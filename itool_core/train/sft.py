"""Warm-up SFT with an easy-to-hard curriculum (§4.2 of the paper, Eq. 2–3), LoRA via peft, loss via trl.

The warm-up stage teaches the policy the answer format and the basics of tool use before the iterative stage
(search + preference optimisation) can get non-zero rewards.  The paper trains it as a curriculum: the
warm-up data D is cut into D_easy, D_medium, D_hard (``data.split.curriculum_thirds``) and the model is
fine-tuned on each in turn, every stage starting from the previous stage's parameters:

    θ_1 = argmin_θ L_SFT(θ; D_easy)   from θ_0          (Eq. 2, the usual NLL of the answer given q, T)
    θ_2 = argmin_θ L_SFT(θ; D_medium) from θ_1
    θ_3 = argmin_θ L_SFT(θ; D_hard)   from θ_2          (Eq. 3)

Here θ is one LoRA adapter (peft) continued across the stages; each stage is its own trl ``SFTTrainer`` run
(fresh optimiser and learning-rate schedule, as three consecutive fine-tuning runs are).  The "mixed" mode
trains once on the shuffled union with the same total number of optimiser steps — the ablation of Fig. 4.

Data: each example becomes a prompt/completion pair rendered by the project's one renderer
(``calls.render_prompt`` for the prompt, ``calls.render_target`` + the tokenizer's end token for the answer),
tokenised here and joined at the id level — the prompt ids exactly as the generation engines encode a prompt
(``add_special_tokens=False``), then the answer ids — and handed to trl as ``input_ids`` + ``completion_mask``;
trl turns the mask into labels (−100 on the prompt), so the loss covers exactly the answer and its end token:
the text the evaluation decodes, and the tokens the replay buffer's perplexity (``data.replay``, Eq. 4)
averages.  Why not let trl tokenise the strings: it calls ``tokenizer(text)`` with special tokens, which for
Llama-3 prepends a second ``<|begin_of_text|>`` to a chat-templated prompt that already starts with one, and
the trained context would differ from the one the engines generate from.  Examples longer than ``max_length``
are left out and counted rather than truncated (a cut answer teaches a call list without its end).

Metrics (loss per logging step and per stage, tokens/s, s/step, wall time, peak RSS) leave through
``callback(event, metrics)`` and the returned :class:`SFTResult`; nothing is printed.
"""

from __future__ import annotations

import gc
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..calls import PromptStyle
from ..config import SFTConfig
from ..data.records import Example
from ..data.tokenise import end_token, sft_pair, tokenize_pair  # re-exported; data.replay uses them too
from .common import barrier, is_main, peak_rss_mb, quiet_progress, world_size

__all__ = [
    "Callback",
    "StageResult",
    "SFTResult",
    "end_token",
    "sft_pair",
    "tokenize_pair",
    "build_sft_records",
    "planned_steps",
    "stage_dir_name",
    "build_trainer",
    "answer_loss",
    "answer_positions",
    "LengthGroupedWindows",
    "shifted_answer_loss",
    "train_sft",
]

#: ``callback(event, metrics)``; events: "stage_start", "log", "stage_end", "end" (see :func:`train_sft`).
Callback = Callable[[str, dict], None]


def build_sft_records(
    examples: Sequence[Example], tokenizer, style: PromptStyle = PromptStyle(), max_length: int | None = None
) -> tuple[list[dict[str, list[int]]], list[str]]:
    """trl-ready records ``{"input_ids", "completion_mask"}`` (mask 0 on the prompt, 1 on the answer + end token)
    and the ids of the examples left out because prompt + answer exceed ``max_length`` tokens."""
    records, dropped = [], []
    for ex in examples:
        p_ids, c_ids = tokenize_pair(tokenizer, *sft_pair(tokenizer, ex, style))
        if max_length is not None and len(p_ids) + len(c_ids) > max_length:
            dropped.append(ex.id)
            continue
        records.append({"input_ids": p_ids + c_ids, "completion_mask": [0] * len(p_ids) + [1] * len(c_ids)})
    return records, dropped


def planned_steps(n_examples: int, cfg: SFTConfig, processes: int = 1) -> int:
    """Optimiser steps of one stage: ``ceil(epochs · ceil(ceil(n / (batch · processes)) / accumulation))``,
    capped by ``max_steps_per_stage``.  Computed here (and passed as ``max_steps``) so curriculum and mixed runs
    are step-for-step comparable whatever the trainer's own rounding.  ``processes``: data-parallel ranks, each
    taking ``per_device_batch_size`` examples of every micro-batch (train/launch.py)."""
    if n_examples <= 0:
        return 0
    batches = math.ceil(n_examples / (cfg.per_device_batch_size * processes))
    updates_per_epoch = math.ceil(batches / cfg.grad_accum_steps)
    steps = math.ceil(cfg.epochs_per_stage * updates_per_epoch - 1e-9)
    if cfg.max_steps_per_stage is not None:
        steps = min(steps, cfg.max_steps_per_stage)
    return max(steps, 1)


def stage_dir_name(index: int, name: str) -> str:
    """``stage_1_easy`` ... — 1-based, so the folder order is the training order."""
    return f"stage_{index}_{name}"


@dataclass
class StageResult:
    name: str
    index: int
    n_examples: int
    n_dropped_too_long: int
    steps: int
    train_loss: float  # mean training loss over the stage (trainer's ``training_loss``)
    first_loss: float | None  # first and last logged step losses: the stage's learning curve ends
    last_loss: float | None
    tokens: int  # non-padding tokens fed forward (prompt + answer)
    tokens_per_s: float
    s_per_step: float
    wall_s: float
    peak_rss_mb: float
    adapter_dir: str
    resumed: bool = False  # loaded from a finished stage folder of an earlier, interrupted run (``resume``)
    #: > 0: this stage continued from a mid-stage checkpoint of an interrupted run (``resume``) after this
    #: many steps; ``tokens``, ``train_loss`` and the losses cover the whole stage, ``wall_s``, ``s_per_step``
    #: and ``tokens_per_s`` only the steps trained in this run.
    resumed_at_step: int = 0


STAGE_MARKER = "stage_result.json"
#: ``out_dir/.checkpoints/stage_<i>_<name>/``: the trainer checkpoints of the stage being trained, removed
#: when it finishes (a dot folder: not an artefact of the run).
CHECKPOINTS = ".checkpoints"
CHECKPOINT_MARKER = "fingerprint.json"  # in a stage's checkpoint folder: the inputs its checkpoints belong to
# Fields that do not change a stage's weights: toggling them must not invalidate finished stages.
_NOT_IN_FINGERPRINT = ("merge", "logging_steps", "checkpoint_steps")


def _model_identity(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    return str(getattr(getattr(model, "config", None), "_name_or_path", type(model).__name__))


def stage_fingerprint(
    previous: str,
    model_id: str,
    cfg: SFTConfig,
    index: int,
    name: str,
    steps: int,
    records: Sequence[dict[str, list[int]]],
) -> str:
    """A hash of everything a stage's saved adapter depends on: the previous stage's fingerprint (so a change
    upstream invalidates every later stage), the base model, the weight-relevant config, and the exact token
    records and step count of this stage.  Training is deterministic given these (each stage's trainer is
    re-seeded with ``cfg.seed + index − 1`` and starts a fresh optimiser), so a resumed run reproduces an
    uninterrupted one."""
    from ..artifacts import fingerprint

    conf = {k: v for k, v in asdict(cfg).items() if k not in _NOT_IN_FINGERPRINT}
    return fingerprint(
        previous, model_id, conf, index, name, steps, [(r["input_ids"], r["completion_mask"]) for r in records]
    )


def _finished_stage(stage_dir: Path, fingerprint: str) -> StageResult | None:
    """The :class:`StageResult` a finished stage folder recorded, if it was trained from the same inputs."""
    from ..artifacts import read_marker

    saved = read_marker(stage_dir / STAGE_MARKER, fingerprint)
    if saved is None or not (stage_dir / "adapter_model.safetensors").is_file():
        return None
    fields = {k: saved["result"][k] for k in StageResult.__dataclass_fields__ if k in saved["result"]}
    return StageResult(**{**fields, "adapter_dir": str(stage_dir), "resumed": True})


def _last_checkpoint(ckpt_root: Path, fingerprint: str) -> Path | None:
    """The newest complete trainer checkpoint an interrupted run left for a stage with the same inputs.

    transformers writes ``trainer_state.json`` last, so a folder without it was cut mid-save: it is removed
    (the previous complete checkpoint is only rotated out after the next one is complete)."""
    from ..artifacts import read_marker

    if read_marker(ckpt_root / CHECKPOINT_MARKER, fingerprint) is None:
        return None
    complete = []
    for d in ckpt_root.glob("checkpoint-*"):
        if not d.name.removeprefix("checkpoint-").isdigit():
            continue
        if (d / "trainer_state.json").is_file():
            complete.append(d)
        elif is_main():  # one rank tidies; the others only skip it
            shutil.rmtree(d, ignore_errors=True)
    return max(complete, key=lambda d: int(d.name.removeprefix("checkpoint-")), default=None)


def _checkpoint_state(checkpoint: Path) -> dict:
    import json

    return json.loads((checkpoint / "trainer_state.json").read_text())


def _stage_loss(log_history: list[dict], resumed_at: int, steps: int, post_resume_mean: float) -> float:
    """The stage's mean training loss when it was resumed at step ``resumed_at``: the trainer's
    ``training_loss`` only averages the steps of the resumed run; the checkpoint's log history holds the rest
    (each logged loss is the mean since the previous log, so it weighs as many steps as it spans)."""
    if resumed_at <= 0:
        return post_resume_mean
    before, last = 0.0, 0
    for rec in log_history:
        if "loss" in rec and rec.get("step", 0) <= resumed_at:
            before += rec["loss"] * (rec["step"] - last)
            last = rec["step"]
    return (before + post_resume_mean * (steps - resumed_at)) / steps


@dataclass
class SFTResult:
    mode: str
    stages: list[StageResult]
    adapter_dir: str  # the adapter after the last stage
    merged_dir: str | None
    wall_s: float
    peak_rss_mb: float
    config: dict[str, Any] = field(default_factory=dict)
    #: The trained model in this process (merged when ``cfg.merge``, else the peft model); not serialised.
    model: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "stages": [asdict(s) for s in self.stages],
            "adapter_dir": self.adapter_dir,
            "merged_dir": self.merged_dir,
            "wall_s": self.wall_s,
            "peak_rss_mb": self.peak_rss_mb,
            "config": self.config,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SFTResult:
        """The result a run wrote (``sft_result.json``; a launched run's rank 0 writes it), without the model."""
        stages = [StageResult(**{k: s[k] for k in StageResult.__dataclass_fields__ if k in s}) for s in d["stages"]]
        return cls(
            **{
                **{k: d[k] for k in ("mode", "adapter_dir", "merged_dir", "wall_s", "peak_rss_mb")},
                "stages": stages,
                "config": d.get("config", {}),
            }
        )


def _make_log_callback(emit: Callback, stage: str, step_offset: int):
    from transformers import TrainerCallback

    class _Forward(TrainerCallback):
        # Forwards the trainer's per-step logs as "log" events with a run-global step (stages continue the count).
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            rec = {"stage": stage, "step": step_offset + state.global_step, "stage_step": state.global_step}
            for k in ("loss", "learning_rate", "grad_norm", "num_input_tokens_seen"):
                if k in logs:
                    rec[k] = float(logs[k])
            emit("log", rec)

    return _Forward()


def _load(model_or_name: Any, tokenizer, cfg: SFTConfig):
    if isinstance(model_or_name, (str, os.PathLike)):
        from ..models import load_policy

        model, tok = load_policy(model_or_name, dtype=cfg.model_dtype)
        return model, tokenizer or tok
    if tokenizer is None:
        from ..models import load_tokenizer

        tokenizer = load_tokenizer(model_or_name.config._name_or_path)
    return model_or_name, tokenizer


def answer_loss(outputs, labels, *, normalisation: str = "example", decision_weight: float = 1.0):
    """The SFT loss on the answer tokens, weighted as ``sft.loss_normalisation`` and ``sft.decision_weight`` say.

    ``normalisation="token"`` is trl's loss: every answer token of the batch weighs the same, so an example
    weighs as much as it has answer tokens.  A "no call" answer has ~15 tokens against 40–100 for a call list,
    and its one informative token — the first, "None" vs "[" — is a small share of the gradient: abstention
    stays under-trained (docs/notebook/RESULTS.md, "Abstention").  ``"example"`` averages each example's tokens first,
    then the examples: every answer weighs the same.  ``decision_weight`` multiplies the loss of each answer's
    first token — the call / no-call decision — in either normalisation (the weights enter the denominators
    too, so a weight of 1 is the plain mean).  Unlike ``"example"`` it leaves the two answers' shares of the
    decision at their frequencies in the data; it only makes the decision a larger share of the gradient.

    ``outputs.logits`` are not shifted yet; ``labels`` are -100 outside the answer (one answer per row: the
    records are not packed).  The result is a per-batch mean.  The trainer does not build these full logits
    (batch × length × vocabulary): it projects only the positions that predict an answer token
    (:func:`answer_positions`) and calls :func:`shifted_answer_loss` on them.
    """
    return shifted_answer_loss(
        outputs.logits[:, :-1, :], labels[:, 1:], normalisation=normalisation, decision_weight=decision_weight
    )


def answer_positions(labels):
    """The positions t whose next token t + 1 is an answer token in at least one row, ascending: the only
    positions whose logits the loss reads.  A prompt of ~600 tokens has an answer of ~30: projecting the rest
    through the 49k-word LM head (as trl's fused head does off-GPU, every position plus entropy) is most of an
    SFT step's LM-head work and memory for nothing."""
    return (labels[:, 1:] != -100).any(dim=0).nonzero().squeeze(1)


def shifted_answer_loss(
    logits, target, *, normalisation: str = "example", decision_weight: float = 1.0, num_items: int | None = None
):
    """:func:`answer_loss` on logits already aligned with their targets (``logits[:, j]`` predicts
    ``target[:, j]``, -100 = no loss), e.g. only the :func:`answer_positions`.  ``num_items``: the answer tokens
    of the whole accumulated batch (the trainer's ``num_items_in_batch``) — for the plain token mean (weight 1) the
    loss is then the sum over this micro-batch divided by it, trl's exact token mean under gradient
    accumulation."""
    import torch

    logits = logits.float()
    target = target.to(logits.device)
    mask = target != -100
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none")
    weight = mask.float()
    first = mask & (mask.cumsum(dim=1) == 1)
    weight = torch.where(first, weight * decision_weight, weight)
    has_answer = mask.any(dim=1)
    if not bool(has_answer.any()):
        return nll.sum() * 0.0  # a finite zero that still depends on the graph
    if normalisation == "token":
        if num_items is not None and decision_weight == 1.0:
            return (nll * weight).sum() / num_items
        return (nll * weight).sum() / weight.sum()
    per_example = (nll * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1e-12)
    return per_example[has_answer].mean()


class LengthGroupedWindows:
    """A seeded random order of the examples in which each micro-batch holds examples of similar length.

    The order is a random permutation cut into windows of ``window`` examples; inside a window the examples are
    sorted by length, cut into micro-batches of ``group`` and the micro-batches shuffled (a shorter last one stays
    last).  Random batches of 4 warm-up examples are ≈ 21 % padding in the linear layers and ≈ 34 % in attention
    (docs/notebook/RESULTS.md, session 17); these are a few %.  Unlike transformers' ``group_by_length`` (sorted
    50-batch megabatches, longest first), the examples a run shorter than an epoch trains on are the permutation's
    prefix, not the longest ones.  ``group`` must be the *global* micro-batch (per-device batch × processes):
    accelerate hands consecutive per-device batches to the ranks, so the order — and every update — is the same
    for one process of 4 and two of 2.  ``set_epoch`` (called by accelerate) draws a new permutation per epoch."""

    def __init__(self, lengths: Sequence[int], group: int, seed: int, window_groups: int = 8):
        self.lengths = list(lengths)
        self.group = max(1, group)
        self.window = self.group * max(1, window_groups)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import torch

        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        out: list[int] = []
        for w0 in range(0, len(perm), self.window):
            chunk = sorted(perm[w0 : w0 + self.window], key=lambda i: (self.lengths[i], i))
            groups = [chunk[i : i + self.group] for i in range(0, len(chunk), self.group)]
            full = [gr for gr in groups if len(gr) == self.group]
            for j in torch.randperm(len(full), generator=g).tolist():
                out.extend(full[j])
            out.extend(i for gr in groups if len(gr) < self.group for i in gr)
        return iter(out)


def _answer_loss_trainer(base, normalisation: str, decision_weight: float):
    """``base`` (trl's SFTTrainer) computing the loss from the logits of the :func:`answer_positions` only
    (transformers' ``logits_to_keep``) — trl 1.x deprecates ``compute_loss_func`` (an extra forward pass per
    step) in favour of overriding ``compute_loss``, as done here.

    The plain token mean is trl's loss, exactly, with trl's gradient-accumulation handling (sum over the
    micro-batch / answer tokens of the accumulated batch).  The other normalisations are per-batch means: the
    trainer is told so (``loss_is_scaled_for_ga = False``) and divides them under accumulation.  Batches come
    from :class:`LengthGroupedWindows` (little padding) instead of a plain random order."""
    exact_token_mean = normalisation == "token" and decision_weight == 1.0

    class AnswerLossSFTTrainer(base):
        loss_is_scaled_for_ga = None if exact_token_mean else False

        def _get_train_sampler(self, train_dataset=None):
            ds = self.train_dataset if train_dataset is None else train_dataset
            group = self.args.per_device_train_batch_size * max(1, self.args.world_size)
            return LengthGroupedWindows([len(x) for x in ds["input_ids"]], group, seed=self.args.seed)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]
            keep = answer_positions(labels)
            fwd = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
            outputs = model(**fwd, use_cache=False, logits_to_keep=keep)
            target = labels[:, keep + 1]
            num_items = int(num_items_in_batch) if exact_token_mean and num_items_in_batch is not None else None
            loss = shifted_answer_loss(
                outputs.logits,
                target,
                normalisation=normalisation,
                decision_weight=decision_weight,
                num_items=num_items,
            )
            if num_items is not None and self.args.average_tokens_across_devices:
                # as trl: num_items_in_batch counts every rank's tokens and DDP averages the gradients
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    return AnswerLossSFTTrainer


def build_trainer(
    peft_model,
    tokenizer,
    records: list[dict[str, list[int]]],
    cfg: SFTConfig,
    max_steps: int,
    output_dir: str | os.PathLike,
    *,
    seed: int | None = None,
    callbacks: Sequence[Any] = (),
    checkpoint_steps: int = 0,
):
    """The trl ``SFTTrainer`` of one stage on :func:`build_sft_records` records (pre-tokenised: trl skips its
    tokenisation and builds labels from ``completion_mask``).  Exposed so a test can inspect the exact labels
    the loss sees (``trainer.train_dataset[i]["labels"]``).  ``checkpoint_steps > 0`` saves a resumable
    checkpoint (only the newest is kept) into ``output_dir`` every that many steps."""
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTConfig as TrlSFTConfig
    from trl import SFTTrainer

    from ..models import resolve_bf16

    args = TrlSFTConfig(
        output_dir=str(output_dir),  # only checkpoints go there; train_sft saves the stage adapters itself
        max_steps=max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=float(cfg.warmup_ratio),  # transformers 5: a float in [0, 1) is a ratio of the steps
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        completion_only_loss=True,  # labels −100 on the prompt: loss on the answer + end token only
        bf16=resolve_bf16(cfg.bf16),
        # trl's default is checkpointing ON; transformers 5 calls it activation_checkpointing and the new name
        # wins over trl's (deprecated) gradient_checkpointing=True default.
        activation_checkpointing=cfg.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(),  # bf16 autocast on CPU needs the explicit CPU flag
        seed=cfg.seed if seed is None else seed,
        logging_steps=cfg.logging_steps,
        logging_strategy="steps",
        save_strategy="steps" if checkpoint_steps > 0 else "no",
        save_steps=checkpoint_steps or 500,
        save_total_limit=1,
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        # launched data-parallel (train/launch.py): every LoRA weight takes part in every step, so DDP need
        # not search the graph for unused ones each step
        ddp_find_unused_parameters=False,
    )
    trainer = _answer_loss_trainer(SFTTrainer, cfg.loss_normalisation, cfg.decision_weight)(
        model=peft_model,
        args=args,
        train_dataset=Dataset.from_list(list(records)),
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # with tqdm off, transformers would print every log dict
    return trainer


def train_sft(
    model: Any,
    stages: Sequence[tuple[str, Sequence[Example]]],
    cfg: SFTConfig = SFTConfig(),
    out_dir: str | os.PathLike = "runs/warmup",
    callback: Callback | None = None,
    *,
    tokenizer: Any = None,
    resume: bool = False,
) -> SFTResult:
    """LoRA SFT over ``stages`` (``[("easy", [...]), ("medium", [...]), ("hard", [...])]``).

    ``model`` is a name/path (loaded with ``models.load_policy`` in ``cfg.model_dtype``) or a model object
    (then pass ``tokenizer``).  A plain model gets a new LoRA adapter (``cfg.lora_*``) injected *in place*; a
    peft model continues its adapter.  ``cfg.mode == "curriculum"`` trains the stages in the given order;
    ``"mixed"`` trains once on their shuffled union for the sum of the stages' planned steps.

    Writes ``out_dir/stage_<i>_<name>/`` (adapter + tokenizer, atomically) after each stage, ``out_dir/merged/``
    at the end when ``cfg.merge`` (the merged model is also what ``SFTResult.model`` holds — the passed model
    object is merged in place), and ``out_dir/sft_result.json``.

    ``callback(event, metrics)`` receives ``"stage_start"`` {stage, index, n_examples, n_dropped_too_long,
    steps}, ``"log"`` {stage, step (global), stage_step, loss, learning_rate, grad_norm}, ``"stage_end"``
    (a :class:`StageResult` as dict) and ``"end"`` (``SFTResult.to_dict()``).

    ``resume=True`` reuses a stage folder finished by an earlier run into the same ``out_dir`` when its
    recorded :func:`stage_fingerprint` matches (same base model — by name or path, a model object by its
    ``name_or_path``, not by its weights — config, data and steps, and the same for every stage before it): the
    adapter is loaded instead of trained, its ``StageResult`` comes back with
    ``resumed=True``, and the events are ``stage_start`` (with ``resumed``) and ``stage_end`` without logs.  A
    warm-up that dies in its third stage then restarts there — on CPU a stage is up to an hour and a half.
    Within a stage, ``cfg.checkpoint_steps`` saves a trainer checkpoint (adapter, optimiser, scheduler, RNG)
    under ``out_dir/.checkpoints/``; a resumed run continues an unfinished stage from its newest checkpoint
    when the stage's fingerprint matches (``StageResult.resumed_at_step``, ``stage_start``'s
    ``resumed_at_step``), and reproduces the uninterrupted run's weights.
    """
    if not stages:
        raise ValueError("train_sft: no stages given")
    names = [n for n, _ in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"train_sft: stage names must be unique, got {names}")
    with quiet_progress():
        return _train_sft(model, stages, cfg, out_dir, callback or (lambda event, metrics: None), tokenizer, resume)


def _train_sft(model, stages, cfg: SFTConfig, out_dir, emit: Callback, tokenizer, resume: bool) -> SFTResult:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model, load_peft_weights, set_peft_model_state_dict

    from ..artifacts import atomic_write_json, write_marker
    from ..models import save_policy

    t_run = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    style = PromptStyle(cfg.tools_style)

    model_id = _model_identity(model)
    model, tok = _load(model, tokenizer, cfg)
    tok.padding_side = "right"  # training pads on the right (causal LM: positions stay 0..n-1)

    # One adapter for the whole warm-up: the curriculum continues it stage after stage (Eq. 2–3).
    if isinstance(model, PeftModel):
        peft_model = model
        for n, p in peft_model.named_parameters():
            p.requires_grad_("lora_" in n)
    else:
        torch.manual_seed(cfg.seed)  # LoRA A is randomly initialised: make it a function of the seed
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules) if isinstance(cfg.target_modules, tuple) else cfg.target_modules,
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, lora)

    # Tokenise + length-filter every stage up front, so the steps of both modes are known before training.
    prepared = []
    for name, exs in stages:
        records, dropped = build_sft_records(exs, tok, style, cfg.max_length)
        prepared.append((name, records, dropped))
    # Under accelerate launch every rank runs this function; each trains on its share of every batch, and
    # only rank 0 writes (is_main), the others waiting for it where they read what it wrote (barrier).
    processes = world_size()
    if cfg.mode == "mixed":
        total_steps = sum(planned_steps(len(r), cfg, processes) for _, r, _ in prepared)
        union = [rec for _, r, _ in prepared for rec in r]
        random.Random(cfg.seed).shuffle(union)
        runs = [("mixed", union, [d for _, _, ds in prepared for d in ds], total_steps)]
    else:
        runs = [(name, r, d, planned_steps(len(r), cfg, processes)) for name, r, d in prepared]

    results: list[StageResult] = []
    step_offset = 0
    fingerprint = ""
    for index, (name, records, dropped, steps) in enumerate(runs, start=1):
        if not records:
            raise ValueError(
                f"stage {name!r}: no trainable example ({len(dropped)} longer than max_length={cfg.max_length})"
            )
        fingerprint = stage_fingerprint(fingerprint, model_id, cfg, index, name, steps, records)
        stage_dir = out / stage_dir_name(index, name)
        done = _finished_stage(stage_dir, fingerprint) if resume else None
        ckpt_root = out / CHECKPOINTS / stage_dir.name
        resume_from = _last_checkpoint(ckpt_root, fingerprint) if resume and done is None else None
        ckpt_state = _checkpoint_state(resume_from) if resume_from else {}
        resumed_at = int(ckpt_state.get("global_step", 0))
        emit(
            "stage_start",
            {
                "stage": name,
                "index": index,
                "n_examples": len(records),
                "n_dropped_too_long": len(dropped),
                "steps": steps,
                "resumed": done is not None,
                "resumed_at_step": resumed_at,
            },
        )
        if done is not None:
            set_peft_model_state_dict(peft_model, load_peft_weights(str(stage_dir)))
            results.append(done)
            emit("stage_end", asdict(done))
            step_offset += done.steps
            continue
        checkpointing = 0 < cfg.checkpoint_steps < steps  # a checkpoint at the last step would never be used
        barrier()  # every rank has decided where to resume before rank 0 removes anything
        if is_main():
            if resume_from is None and ckpt_root.exists():
                shutil.rmtree(ckpt_root)  # another stage's, or resume is off: never continue from it
            if checkpointing and resume_from is None:
                ckpt_root.mkdir(parents=True)
                write_marker(ckpt_root / CHECKPOINT_MARKER, fingerprint)
        barrier()
        trainer_dir = (
            nullcontext(str(ckpt_root))
            if checkpointing or resume_from
            else tempfile.TemporaryDirectory(prefix=".trainer.", dir=out)
        )
        with trainer_dir as scratch:
            trainer = build_trainer(
                peft_model,
                tok,
                records,
                cfg,
                steps,
                scratch,
                seed=cfg.seed + index - 1,
                callbacks=[_make_log_callback(emit, name, step_offset)],
                checkpoint_steps=cfg.checkpoint_steps if checkpointing else 0,
            )
            tokens_before = int(ckpt_state.get("num_input_tokens_seen", 0))
            t0 = time.perf_counter()
            train_out = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
            wall = time.perf_counter() - t0
            tokens = int(trainer.state.num_input_tokens_seen)
            done_steps = int(train_out.global_step)
            # the trainer's own history: on a resumed stage it also holds the logs before the checkpoint
            stage_logs = [r for r in trainer.state.log_history if "loss" in r]
            train_loss = _stage_loss(stage_logs, resumed_at, done_steps, float(train_out.training_loss))
            del trainer
            gc.collect()
        if is_main():
            save_policy(peft_model, tok, stage_dir)
        res = StageResult(
            name=name,
            index=index,
            n_examples=len(records),
            n_dropped_too_long=len(dropped),
            steps=done_steps,
            train_loss=train_loss,
            first_loss=stage_logs[0]["loss"] if stage_logs else None,
            last_loss=stage_logs[-1]["loss"] if stage_logs else None,
            tokens=tokens,
            tokens_per_s=(tokens - tokens_before) / wall if wall > 0 else 0.0,
            s_per_step=wall / (done_steps - resumed_at) if done_steps > resumed_at else 0.0,
            wall_s=wall,
            peak_rss_mb=peak_rss_mb(),
            adapter_dir=str(stage_dir),
            resumed_at_step=resumed_at,
        )
        if is_main():
            # written after the adapter folder is in place: a crash in between only means the stage is retrained
            write_marker(stage_dir / STAGE_MARKER, fingerprint, result=asdict(res))
            shutil.rmtree(ckpt_root, ignore_errors=True)
            if ckpt_root.parent.is_dir() and not any(ckpt_root.parent.iterdir()):
                ckpt_root.parent.rmdir()
        barrier()
        results.append(res)
        emit("stage_end", asdict(res))
        step_offset += done_steps

    peft_model.eval()
    final_model: Any = peft_model
    merged_dir = None
    if cfg.merge:
        # Fold the adapter into the base weights: the next iteration's policy and DPO reference
        # (docs/design.md#reference-model).
        final_model = peft_model.merge_and_unload()
        merged_dir = str(out / "merged")
        if is_main():
            save_policy(final_model, tok, merged_dir)
    result = SFTResult(
        mode=cfg.mode,
        stages=results,
        adapter_dir=results[-1].adapter_dir,
        merged_dir=merged_dir,
        wall_s=time.perf_counter() - t_run,
        peak_rss_mb=peak_rss_mb(),
        config=asdict(cfg),
        model=final_model,
    )
    if is_main():
        atomic_write_json(out / "sft_result.json", result.to_dict())
    barrier()  # no rank returns before the run's files are in place
    emit("end", result.to_dict())
    return result
