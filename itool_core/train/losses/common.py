"""What every step-level trainer shares: a token counter for tokens/s, trl's CPO/ORPO row format from our ids,
and a guard for trl's experimental-module warning."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["TokenCounter", "count_tokens", "row_from_ids", "trl_experimental"]


def count_tokens(inputs: Mapping[str, Any]) -> int:
    # DPO batches: one "attention_mask" over [chosen; rejected]; CPO/ORPO: one mask per side (the prompt's own
    # mask is part of each side's sequence already).
    keys = ("attention_mask",) if "attention_mask" in inputs else ("chosen_attention_mask", "rejected_attention_mask")
    return int(sum(int(inputs[k].sum()) for k in keys if k in inputs))


class TokenCounter:
    """Mixin before a trl trainer: counts the non-padding tokens each training step sees (tokens/s), and the
    tokens its forwards actually run (fewer where a pair's shared state is encoded once: ``shared_prefix``)."""

    model: Any  # the trainer's
    tokens_seen = 0
    tokens_computed = 0

    def training_step(self, model, inputs, *args, **kwargs):
        self.tokens_seen += count_tokens(inputs)
        before = self.tokens_computed
        out = super().training_step(model, inputs, *args, **kwargs)
        if self.tokens_computed == before:  # a trainer that does not report its own forwards runs them unpacked
            self.tokens_computed += count_tokens(inputs)
        return out

    def count_computed(self, tokens: int) -> None:
        if self.model.training:  # evaluation forwards are not training
            self.tokens_computed += int(tokens)


def row_from_ids(feature: Mapping[str, Any]) -> dict[str, list[int]]:
    """trl's CPO/ORPO ``tokenize_row`` output (decoder-only branch) built from our ids: no BOS added, no EOS
    added, no re-tokenisation; labels −100 on the prompt."""
    prompt = list(feature["prompt_ids"])
    batch: dict[str, list[int]] = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
    for side in ("chosen", "rejected"):
        comp = list(feature[f"{side}_ids"])
        seq = prompt + comp
        batch[f"{side}_input_ids"] = seq
        batch[f"{side}_attention_mask"] = [1] * len(seq)
        batch[f"{side}_labels"] = [-100] * len(prompt) + comp
    return batch


@contextlib.contextmanager
def trl_experimental() -> Iterator[None]:
    """CPO (for SimPO) and ORPO live under ``trl.experimental`` in trl 1.x; we use them knowingly."""
    from trl.import_utils import TRLExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TRLExperimentalWarning)
        yield
