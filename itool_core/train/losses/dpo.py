"""DPO (the paper's Eq. 10) and IPO on step-level pairs, both through trl's ``DPOTrainer``.

    L_DPO = −log σ( β [log πθ(a_w|x) − log π_ref(a_w|x)] − β [log πθ(a_l|x) − log π_ref(a_l|x)] )

with ``π_ref`` the previous iteration's policy (Eq. 11) and ``log π(a|x)`` the summed token log-probs of the
step.  IPO (Azar et al.) regresses the same log-ratio difference ``h`` — averaged per completion token, as trl
does — to ``1/(2τ)``: ``(h − 1/(2τ))²``, so deterministic preferences do not push the margin to infinity.
:func:`dpo_loss` / :func:`ipo_loss` state the equations; trl computes them inside the trainer, and
``tests/test_preference.py`` checks that the two agree on a real batch.
"""

from __future__ import annotations

import functools
import math
from typing import Any

__all__ = ["DPO", "IPO", "dpo_loss", "ipo_loss"]


def dpo_loss(chosen_logratio: float, rejected_logratio: float, beta: float) -> float:
    """Eq. 10 for one pair: ``−log σ(β (Δ_w − Δ_l))``, Δ = log πθ(a|x) − log π_ref(a|x) summed over the step."""
    z = beta * (chosen_logratio - rejected_logratio)
    return math.log1p(math.exp(-z)) if z > -30 else -z  # −log σ(z), without overflow for very negative z


def ipo_loss(chosen_logratio: float, rejected_logratio: float, tau: float) -> float:
    """IPO for one pair: ``(h − 1/(2τ))²`` with ``h`` = Δ_w − Δ_l, each Δ the *per-token mean* log-ratio."""
    return (chosen_logratio - rejected_logratio - 1.0 / (2.0 * tau)) ** 2


@functools.cache
def _trainer() -> type:
    from trl import DPOTrainer

    from .common import TokenCounter
    from .shared_prefix import shared_prefix_forward

    class StepDPOTrainer(TokenCounter, DPOTrainer):
        """DPOTrainer (losses "sigmoid" = DPO, "ipo") on pre-tokenised step-level rows; with ``shared_prefix``
        (``PreferenceConfig.shared_prefix``, set by ``train.preference``) each pair's policy and reference
        forwards run prefix-shared (:mod:`.shared_prefix`)."""

        shared_prefix = False

        def _compute_loss(self, model, inputs, return_outputs):
            if not self.shared_prefix:
                return super()._compute_loss(model, inputs, return_outputs)
            # the policy, and an explicit reference model when there is one (else the reference is the policy
            # with its adapter disabled: the same module)
            models = []
            for m in (self.model, self.ref_model):
                if m is not None:
                    m = self.accelerator.unwrap_model(m)
                    models.append(m.get_base_model() if hasattr(m, "get_base_model") else m)
            with shared_prefix_forward(models, inputs) as packed:
                if packed is not None:
                    self.count_computed(packed.tokens)
                return super()._compute_loss(model, inputs, return_outputs)

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            # trl's version extracts the prompt, appends EOS to every chosen/rejected *text* and re-tokenises.
            # Our rows are already {prompt_ids, chosen_ids, rejected_ids} from the search's ids (EOS only on
            # terminal steps, pairs over max_length dropped) — exactly what its collator expects.
            missing = {"prompt_ids", "chosen_ids", "rejected_ids"} - set(dataset.column_names)
            if missing:
                raise ValueError(f"{dataset_name} dataset must be pre-tokenised (prepare_pairs); missing {missing}")
            return dataset

    return StepDPOTrainer


class _DPOFamily:
    def __init__(self, name: str, trl_loss_type: str) -> None:
        self.name = name
        self._loss_type = trl_loss_type

    def trainer_class(self) -> type:
        return _trainer()

    def trl_config(self, cfg: Any, common: dict[str, Any]) -> Any:
        from trl import DPOConfig

        return DPOConfig(
            loss_type=[self._loss_type],  # trl 1.x: a list of losses
            precompute_ref_log_probs=False,  # the reference runs alongside (one pass per epoch anyway)
            **common,
        )


DPO = _DPOFamily("dpo", "sigmoid")
IPO = _DPOFamily("ipo", "ipo")
