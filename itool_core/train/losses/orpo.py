"""ORPO (Hong et al.): reference-free, an SFT term on the chosen step plus an odds-ratio term, via trl's ORPOTrainer.

    L_ORPO = NLL(a_w|x) − λ log σ( log odds(a_w|x) − log odds(a_l|x) ),   odds(a) = p/(1 − p)

on the mean token probability ``p``; λ is ``PreferenceConfig.beta``.  trl takes the NLL over prompt *and*
response; on a step-level pair the prompt is the long shared state (system prompt and tool schemas), so the
trainer below recomputes it over the chosen completion only, as the paper's L_SFT is over the response.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["ORPO"]


@functools.cache
def _trainer() -> type:
    import torch.nn.functional as F

    from .common import TokenCounter, row_from_ids, trl_experimental

    with trl_experimental():
        from trl.experimental.orpo import ORPOTrainer
        from trl.experimental.utils import pad_to_length

    class StepORPOTrainer(TokenCounter, ORPOTrainer):
        """ORPOTrainer on pre-tokenised rows, with the NLL term over the chosen completion only."""

        def tokenize_row(self, feature, model=None):
            return row_from_ids(feature)

        def concatenated_forward(self, model, batch):
            out = super().concatenated_forward(model, batch)
            if self.is_encoder_decoder:
                return out
            chosen_logits = out[2]  # [B, L-1, V]: all_logits[:B, :-1], the graph is kept
            length = chosen_logits.shape[1] + 1
            labels = pad_to_length(batch["chosen_labels"], length, pad_value=-100)[:, 1:].to(chosen_logits.device)
            nll = F.cross_entropy(
                chosen_logits.reshape(-1, chosen_logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100
            )
            return (*out[:4], nll, *out[5:])

    return StepORPOTrainer


class _ORPO:
    name = "orpo"

    def trainer_class(self) -> type:
        return _trainer()

    def trl_config(self, cfg: Any, common: dict[str, Any]) -> Any:
        from .common import trl_experimental

        with trl_experimental():
            from trl.experimental.orpo import ORPOConfig

            return ORPOConfig(remove_unused_columns=False, **common)


ORPO = _ORPO()
