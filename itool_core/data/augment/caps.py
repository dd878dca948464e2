"""Source caps: no single function may hold more than a set share of the training set's target calls.

The embedded sets are dominated by a few functions (``sql.execute`` in BFCL's unused sets, ``ToolSearcher`` in
API-Bank's training set); a small model memorises those names instead of reading the tool list.  The caps
drop, seeded, examples of over-represented functions before augmenting (and again on the final set).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..records import Example
from .common import _rng, _sorted


@dataclass(frozen=True)
class CapParams:
    """Source caps: no function above ``max_share`` of all target calls (``overrides``: per-function shares)."""

    max_share: float = 0.05
    #: ``(("ToolSearcher", 0.1), ...)``: a different share for named functions.
    overrides: tuple[tuple[str, float], ...] = ()
    #: A function is never cut below this many calls (keeps tiny sets from being emptied).
    min_calls: int = 1


def cap_functions(
    examples: Sequence[Example],
    params: CapParams = CapParams(),
    seed: int = 0,
    drop_first: Callable[[Example], bool] | None = None,
) -> list[Example]:
    """Drop (seeded) examples of over-represented functions until none exceeds its share of all target calls.

    The share is of the *remaining* set's calls, so it is re-evaluated after every drop; the most
    over-represented function loses an example first.  No-call examples are never dropped (they have no
    calls).  ``drop_first``: examples it marks go before the others (the build's final pass marks augmented
    ones, so a function pushed over its cap by parallel joins loses joins, not its original examples).
    Returns the kept examples in their input order.
    """
    rng = _rng(seed, "caps")
    overrides = dict(params.overrides)
    order = _sorted(examples)
    rng.shuffle(order)  # the drop order: a seeded permutation
    if drop_first is not None:
        order.sort(key=lambda e: not drop_first(e))  # stable: the permutation holds within each part
    queues: dict[str, list[Example]] = defaultdict(list)
    for ex in order:
        for name in dict.fromkeys(c.name for c in ex.target):
            queues[name].append(ex)
    counts = Counter(c.name for ex in examples for c in ex.target)
    total = sum(counts.values())
    dropped: set[str] = set()
    pos: dict[str, int] = defaultdict(int)
    while total:
        excess = {f: n - max(overrides.get(f, params.max_share) * total, params.min_calls) for f, n in counts.items()}
        f, ex_n = max(excess.items(), key=lambda kv: (kv[1], kv[0]))
        if ex_n <= 0:
            break
        q = queues[f]
        while pos[f] < len(q) and q[pos[f]].id in dropped:
            pos[f] += 1
        if pos[f] >= len(q):  # pragma: no cover - counts and queues agree
            break
        victim = q[pos[f]]
        dropped.add(victim.id)
        for c in victim.target:
            counts[c.name] -= 1
            total -= 1
    return [e for e in examples if e.id not in dropped]
