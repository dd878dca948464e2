"""SimPO (Meng et al.): a reference-free loss on the length-normalised log-prob margin, via trl's CPOTrainer.

    L_SimPO = −log σ( β/|a_w| · log πθ(a_w|x) − β/|a_l| · log πθ(a_l|x) − γ )

SimPO is CPO's "simpo" loss without CPO's behaviour-cloning term (``cpo_alpha = 0``); trl's ``simpo_gamma`` is
γ itself, set as ``PreferenceConfig.simpo_gamma_beta_ratio · β`` (the SimPO paper's γ/β ≈ 0.5).  No reference
model is loaded.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["SIMPO"]


@functools.cache
def _trainer() -> type:
    from .common import TokenCounter, row_from_ids, trl_experimental

    with trl_experimental():
        from trl.experimental.cpo import CPOTrainer

    class StepCPOTrainer(TokenCounter, CPOTrainer):
        """CPOTrainer (used with loss_type="simpo", cpo_alpha=0 = SimPO) on pre-tokenised rows."""

        def tokenize_row(self, feature, model=None):
            # trl's version re-tokenises prompt + answer text, prepends BOS and appends EOS to both answers.
            return row_from_ids(feature)

    return StepCPOTrainer


class _SimPO:
    name = "simpo"

    def trainer_class(self) -> type:
        return _trainer()

    def trl_config(self, cfg: Any, common: dict[str, Any]) -> Any:
        from .common import trl_experimental

        with trl_experimental():
            from trl.experimental.cpo import CPOConfig

            return CPOConfig(
                loss_type="simpo",
                cpo_alpha=0.0,
                simpo_gamma=cfg.simpo_gamma_beta_ratio * cfg.resolved_beta(),
                remove_unused_columns=False,
                **common,
            )


SIMPO = _SimPO()
