"""All augmentations together: which run (:class:`AugmentConfig`) and :func:`augment`, which runs them.

Each augmentation runs on the same inputs with its own seeded stream, so switching one off for an ablation
row leaves the others' output unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ...config import AUGMENTATIONS
from ..records import Example
from .caps import CapParams
from .distract import DistractorParams, distractors
from .multicall import ParallelParams, parallel
from .nocall import NoCallParams, no_call, source_rates
from .rename import RenameParams, renamed

#: ``AUGMENTATIONS`` (config.py, so a run config can name them): the augmentations in the order :func:`augment`
#: runs them.


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run (``enabled``) and their parameters; frozen, plain values (hashable cache key)."""

    enabled: tuple[str, ...] = AUGMENTATIONS
    caps: CapParams = field(default_factory=CapParams)
    no_call: NoCallParams = field(default_factory=NoCallParams)
    parallel: ParallelParams = field(default_factory=ParallelParams)
    renamed: RenameParams = field(default_factory=RenameParams)
    distractors: DistractorParams = field(default_factory=DistractorParams)
    #: Apply the source caps (before augmenting, and again on the final set).
    apply_caps: bool = True

    def __post_init__(self) -> None:
        unknown = [a for a in self.enabled if a not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"unknown augmentations {unknown}; known: {list(AUGMENTATIONS)}")

    def without(self, *names: str) -> AugmentConfig:
        for n in names:
            if n not in AUGMENTATIONS:
                raise ValueError(f"unknown augmentation {n!r}; known: {list(AUGMENTATIONS)}")
        return replace(self, enabled=tuple(a for a in self.enabled if a not in names))

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(enabled=())


_FUNCS: dict[str, Callable[..., list[Example]]] = {
    "no_call": no_call,
    "parallel": parallel,
    "renamed": renamed,
    "distractors": distractors,
}


def augment(
    examples: Sequence[Example],
    cfg: AugmentConfig = AugmentConfig(),
    seed: int = 0,
    no_call_sources: Sequence[Example] | None = None,
) -> dict[str, list[Example]]:
    """Run every enabled augmentation on ``examples`` (each from the same inputs, its own seeded stream).

    Augmentations do not feed each other, so switching one off for an ablation leaves the others identical —
    except under ``cfg.no_call.source_share``, where the no-call rates are computed from the rows the others
    produce.  ``no_call_sources`` (default ``examples``): where no-call questions come from.  The build passes
    the set *before* the source caps: a no-call example has no call, so it cannot over-represent a function,
    and the questions the caps dropped (hundreds of API-Bank ``ToolSearcher`` requests) still widen the
    no-call set.
    """
    out = {
        name: _FUNCS[name](examples, getattr(cfg, name), seed)
        for name in AUGMENTATIONS
        if name in cfg.enabled and name != "no_call"
    }
    if "no_call" in cfg.enabled:
        src = no_call_sources if no_call_sources is not None else examples
        rates = None
        share = cfg.no_call.shares
        if share is not None:
            if isinstance(share, Mapping) and (unknown := sorted(set(share) - {e.source for e in src})):
                raise ValueError(
                    f"no_call.source_share names {unknown}, not a source of the set "
                    f"(its sources: {sorted({e.source for e in src})})"
                )
            rates = source_rates(src, [*examples, *(e for v in out.values() for e in v)], share)
        out["no_call"] = no_call(src, cfg.no_call, seed, rates)
    return {name: out[name] for name in AUGMENTATIONS if name in out}
