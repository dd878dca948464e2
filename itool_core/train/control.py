"""The compute-matched control: the question a reader of the paper asks first — do the iTool iterations beat
spending the same training compute on more plain SFT?  (The paper compares iTool with SFT only.)

The control starts from the policy the iterations start from (the warm-up's SFT policy) and trains it further
with the warm-up's own loss — plain SFT on reference answers — for the compute the iterations' preference
updates spent.  **Matching rule** (:func:`plan_control`):

* **optimiser steps** S = Σᵢ steps of preference update i, exactly (an iteration that trained nothing adds 0);
* **training tokens** T = Σᵢ tokens of the rows preference update i trained on — prompt + chosen and
  prompt + rejected of every trained pair (``PreferenceResult.tokens``; the reference model's no-grad forward
  is not counted).  With ``preference.shared_prefix`` the forwards encode a pair's prompt once and run ≈ half
  of T (``computed_tokens``); T still counts it twice, so the control's training FLOPs (≈ 4N·T) exceed the
  iterations' (6N per computed token): where the match is off, it is off in the control's favour;
* **data**: the pool, the examples the iterations search (the replay buffer is the pool), rendered and
  tokenised as in the warm-up, in seeded order, cycled as often as S steps need;
* **batch** b = max(1, round(T / (S · t̄))) examples per step with no gradient accumulation, t̄ = mean tokens of
  a pool example — so S steps of b examples see ≈ T tokens (whole examples: the match is as close as that
  allows, and the result records how close);
* everything else as the warm-up (``sft`` section): learning rate and schedule, LoRA, precision, loss.

The plan (targets) and what was spent (steps, tokens) are both recorded, so the rule is checkable from the
run's outputs: ``steps == target_steps`` and ``tokens / target_tokens`` near 1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import SFTConfig
from ..data.records import Example

__all__ = ["ControlPlan", "plan_control", "control_config", "train_control", "MATCHING_RULE"]

#: One line for reports and the results page.
MATCHING_RULE = (
    "compute-matched control: the SFT policy trained further with plain SFT (the warm-up's settings) on the pool "
    "for exactly the optimiser steps S the iterations' preference updates took, b = round(T / (S · mean tokens "
    "of a pool example)) examples per step, so that it feeds ≈ the T training tokens those updates fed forward"
)


@dataclass(frozen=True)
class ControlPlan:
    """What the control must spend (``target_*``) and the batch that spends it."""

    target_steps: int
    target_tokens: int
    batch_size: int
    epochs: int  # passes over the pool that S steps of b examples need (the pool is cycled)
    n_examples: int
    mean_example_tokens: float

    @property
    def planned_tokens(self) -> float:
        return self.target_steps * self.batch_size * self.mean_example_tokens


def plan_control(target_steps: int, target_tokens: int, example_tokens: Sequence[int]) -> ControlPlan:
    """The matching rule (module docstring) for examples of the given token lengths."""
    if target_steps < 1:
        raise ValueError(f"control: target_steps must be ≥ 1, got {target_steps}")
    if target_tokens < 0:
        raise ValueError(f"control: target_tokens must be ≥ 0, got {target_tokens}")
    if not example_tokens:
        raise ValueError("control: no trainable example in the pool")
    mean = sum(example_tokens) / len(example_tokens)
    batch = max(1, round(target_tokens / (target_steps * mean)))
    epochs = math.ceil(target_steps / math.ceil(len(example_tokens) / batch))
    return ControlPlan(target_steps, target_tokens, batch, epochs, len(example_tokens), mean)


def control_config(sft: SFTConfig, plan: ControlPlan) -> SFTConfig:
    """The warm-up's settings with the plan's batch and step count (one stage, no accumulation, merged)."""
    return dataclasses.replace(
        sft,
        mode="curriculum",
        per_device_batch_size=plan.batch_size,
        grad_accum_steps=1,
        epochs_per_stage=float(plan.epochs),
        max_steps_per_stage=plan.target_steps,
        merge=True,
    )


def train_control(
    policy: str,
    examples: Sequence[Example],
    sft: SFTConfig,
    target_steps: int,
    target_tokens: int,
    out_dir: str,
    callback: Any = None,
) -> tuple[ControlPlan, Any]:
    """Plan the control on ``examples`` (the pool) and train it from ``policy``; returns the plan and the
    :class:`~itool_core.train.sft.SFTResult` (its one stage's ``steps`` and ``tokens`` are what was spent)."""
    from ..calls import PromptStyle
    from ..models import load_tokenizer
    from .sft import build_sft_records, train_sft

    tok = load_tokenizer(policy)
    records, _ = build_sft_records(examples, tok, PromptStyle(sft.tools_style), sft.max_length)
    plan = plan_control(target_steps, target_tokens, [len(r["input_ids"]) for r in records])
    # resume: a retry or a re-run after a kill continues from the stage's last checkpoint (out_dir is per input)
    res = train_sft(
        policy, [("control", list(examples))], control_config(sft, plan), out_dir, callback=callback, resume=True
    )
    return plan, res
