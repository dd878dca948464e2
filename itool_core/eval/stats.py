"""How much a score can be trusted: Wilson intervals for one accuracy, exact McNemar tests for two paired ones.

An accuracy on n items is a binomial proportion.  At the item counts this project can afford on a CPU (3–100
per category) the normal-approximation interval is wrong near 0 % and 100 % (it can leave [0, 1] or have width
0); the **Wilson score interval** does not, so every evaluation reports it next to n.

Two stages evaluated on the *same* items (the evaluation subset is seeded and stable) are compared item by
item: only the discordant items carry information — ``b`` items the first stage got right and the second
wrong, ``c`` the reverse.  Under "no difference" each discordant item goes either way with probability ½, so
the **exact McNemar test** is a two-sided binomial test of ``b`` out of ``b + c``.  Unpaired comparisons of two
intervals waste that pairing and are not made.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["wilson", "mcnemar_exact", "Paired", "paired"]


def wilson(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % (``z`` = 1.96) Wilson score interval of ``correct / n``; ``(0, 1)`` for n = 0 (nothing is known)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, {n}], got {correct}")
    p = correct / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # at k = 0 and k = n the bound is exactly 0 / 1; say so rather than leave a rounding error
    lo = 0.0 if correct == 0 else max(0.0, centre - half)
    hi = 1.0 if correct == n else min(1.0, centre + half)
    return lo, hi


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant items (1.0 when there are none)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class Paired:
    """Stage B against stage A on the items both were scored on."""

    n: int  # items in common
    a_correct: int
    b_correct: int
    a_only: int  # right in A, wrong in B
    b_only: int  # wrong in A, right in B
    p_value: float  # exact McNemar

    @property
    def diff(self) -> float:
        """Accuracy of B minus accuracy of A on the common items (in [−1, 1])."""
        return (self.b_correct - self.a_correct) / self.n if self.n else 0.0


def paired(a: Mapping[str, bool], b: Mapping[str, bool]) -> Paired:
    """Compare per-item verdicts ``{item id: correct}`` of two stages on the ids they share."""
    common = sorted(set(a) & set(b))
    a_only = sum(1 for i in common if a[i] and not b[i])
    b_only = sum(1 for i in common if b[i] and not a[i])
    return Paired(
        n=len(common),
        a_correct=sum(bool(a[i]) for i in common),
        b_correct=sum(bool(b[i]) for i in common),
        a_only=a_only,
        b_only=b_only,
        p_value=mcnemar_exact(a_only, b_only),
    )
