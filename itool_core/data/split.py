"""Warm-up / pool split and the easy → medium → hard curriculum of the warm-up stage (§4.2 of the paper).

The paper holds 10 % of the training data back for the iterative reinforcement stage (the pool that the
perplexity replay buffer, Eq. 4, draws hard examples from) and trains the warm-up SFT on the other 90 %,
sequentially from easy to hard (Eq. 2–3).  Difficulty is judged by three criteria: the number of candidate
tools, the string length of the tool set and the number of calls in the answer.

One score from three criteria
-----------------------------
The paper does not say how the three criteria are combined.  We use the **mean of the three per-criterion
percentile ranks** within the data set being ordered:

    d(x) = ( pr(n_tools(x)) + pr(tools_chars(x)) + pr(n_calls(x)) ) / 3,   pr(v) = (rank(v) - 0.5) / N

with average ranks for ties (so equal values get equal percentiles).  Why ranks and not the raw values:

* the criteria live on incomparable scales (1–20 tools, 100–20 000 characters, 0–5 calls); any weighted sum of
  raw values would let the character count decide alone;
* the distributions are heavy-tailed (a few tool sets are huge); ranks are invariant to monotone transforms and
  insensitive to outliers, so no log/clip constant has to be tuned;
* equal weights, because the paper treats the three criteria as equally important and gives no weights;
* the score is relative to the data set (it orders; it does not measure), which is all a three-way cut needs.

A no-call example (``n_calls = 0``) scores easiest on the third criterion; its tool-set criteria still count.
By default the thirds are cut per answer kind (no-call / call) so every stage keeps the no-call share
(:func:`curriculum_thirds` says why).

Ties in the score are broken by a seeded hash of the example id, so the order is total, stable under
re-ordering of the input, and changes with the seed only among equally difficult examples.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..config import SplitConfig
from .records import Example

__all__ = [
    "CRITERIA",
    "criteria",
    "percentile_ranks",
    "difficulty_score",
    "difficulty_scores",
    "order_by_difficulty",
    "split_pool",
    "curriculum_thirds",
    "write_parts",
    "split_and_write",
    "CURRICULUM_STAGES",
]

#: The three criteria of §4.2, in the order the score averages them.
CRITERIA = ("n_tools", "tools_chars", "n_calls")
#: Names of the curriculum stages, easiest first (also the artifact file stems).
CURRICULUM_STAGES = ("easy", "medium", "hard")


def criteria(ex: Example) -> tuple[int, int, int]:
    """``(n_tools, tools_chars, n_calls)`` of one example — the same numbers as the ``examples`` columns."""
    # Same definitions as Example.to_row (the n_tools / tools_chars / n_calls columns), without the other JSON.
    return len(ex.tools), len(json.dumps(ex.tools, ensure_ascii=False)), len(ex.target)


def percentile_ranks(values: Sequence[float]) -> list[float]:
    """Mid-rank percentiles in (0, 1): ``(average rank − 0.5) / N``; equal values get equal percentiles."""
    n = len(values)
    order = sorted(range(n), key=lambda i: values[i])
    out = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and values[order[j + 1]] == values[order[i]]:
            j += 1
        avg_rank = (i + j) / 2 + 1  # 1-based average rank of the tie group
        for k in range(i, j + 1):
            out[order[k]] = (avg_rank - 0.5) / n
        i = j + 1
    return out


def difficulty_score(percentiles: Sequence[float]) -> float:
    """``d(x) = (pr(n_tools) + pr(tools_chars) + pr(n_calls)) / 3``: the mean of one example's per-criterion
    percentile ranks (:func:`percentile_ranks`), in :data:`CRITERIA` order.

    Equal weights, because the paper names the three criteria of §4.2 without weighting them; ranks, because
    the criteria live on incomparable, heavy-tailed scales (module docstring)."""
    if len(percentiles) != len(CRITERIA):
        raise ValueError(f"one percentile per criterion {CRITERIA}, got {len(percentiles)}")
    return sum(percentiles) / len(CRITERIA)


def difficulty_scores(examples: Sequence[Example]) -> list[float]:
    """:func:`difficulty_score` of each example, in input order, with percentiles taken within this set."""
    if not examples:
        return []
    feats = [criteria(e) for e in examples]
    per_criterion = [percentile_ranks([f[c] for f in feats]) for c in range(len(CRITERIA))]
    return [difficulty_score([pc[i] for pc in per_criterion]) for i in range(len(examples))]


def _tie_key(seed: int, ex_id: str) -> int:
    # Seeded, platform-independent (unlike hash()), and a function of the id only: stable under input order.
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{ex_id}".encode()).digest()[:8], "big")


def order_by_difficulty(examples: Sequence[Example], seed: int = 0) -> list[Example]:
    """Examples sorted from easiest to hardest; ties by a seeded hash of the id (then the id itself)."""
    scores = difficulty_scores(examples)
    idx = sorted(range(len(examples)), key=lambda i: (scores[i], _tie_key(seed, examples[i].id), examples[i].id))
    return [examples[i] for i in idx]


def _largest_remainder(quotas: dict[str, float], total: int) -> dict[str, int]:
    """Integers ``floor(q)`` or ``ceil(q)`` per key that sum to ``total`` (Hamilton's method, ties by key)."""
    base = {k: int(q) for k, q in quotas.items()}
    left = total - sum(base.values())
    for k in sorted(quotas, key=lambda k: (-(quotas[k] - base[k]), k))[: max(left, 0)]:
        base[k] += 1
    return base


def split_pool(examples: Sequence[Example], cfg: SplitConfig = SplitConfig()) -> tuple[list[Example], list[Example]]:
    """``(warmup, pool)``: a seeded draw of ``round(pool_fraction · N)`` examples into the pool.

    Stratified by ``cfg.stratify_by``: every stratum with at least ``cfg.min_stratum`` examples gets its
    proportional share (``floor`` or ``ceil`` of ``pool_fraction · n``, Hamilton rounding so the total is exact);
    smaller strata are drawn from together as one stratum, so rare categories neither vanish by rounding nor get
    over-sampled.  Within a stratum the draw is the first items of a seeded order (a hash of seed and id), so
    the result does not depend on the input order.  Both parts keep the input order.  Ids must be unique.
    """
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"split_pool: duplicate example id {dup!r}")
    n = len(examples)
    total = int(round(cfg.pool_fraction * n))  # round-half-even on exact .5, deterministic
    strata: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        key = getattr(e, cfg.stratify_by) if cfg.stratify_by else "all"
        strata[str(key)].append(i)
    if cfg.stratify_by:
        rare = [k for k, v in strata.items() if len(v) < cfg.min_stratum]
        if len(rare) > 0:
            merged = [i for k in rare for i in strata.pop(k)]
            strata["\x00rare"] = merged  # a key no real category can have
    quotas = {k: cfg.pool_fraction * len(v) for k, v in strata.items()}
    counts = _largest_remainder(quotas, total)
    chosen: set[int] = set()
    for k, members in strata.items():
        members = sorted(members, key=lambda i: (_tie_key(cfg.seed, examples[i].id), examples[i].id))
        chosen.update(members[: counts[k]])
    warmup = [e for i, e in enumerate(examples) if i not in chosen]
    pool = [e for i, e in enumerate(examples) if i in chosen]
    return warmup, pool


def _cut_thirds(ordered: Sequence[Example]) -> tuple[list[Example], list[Example], list[Example]]:
    n = len(ordered)
    k, r = divmod(n, 3)
    sizes = [k + (1 if i >= 3 - r else 0) for i in range(3)]
    a, b = sizes[0], sizes[0] + sizes[1]
    return list(ordered[:a]), list(ordered[a:b]), list(ordered[b:])


def curriculum_thirds(
    warmup: Sequence[Example], seed: int = 0, no_call_every_stage: bool = True
) -> tuple[list[Example], list[Example], list[Example]]:
    """``(easy, medium, hard)``: the warm-up set ordered by difficulty and cut into three equal parts.

    With ``N = 3k + r`` the sizes are ``k`` or ``k + 1`` and the extra examples go to the *harder* parts
    (``N = 10`` → 3, 3, 4), so no easy part is ever larger than a harder one.  Each part is in difficulty
    order (easiest first); the SFT trainer shuffles within a stage.

    ``no_call_every_stage`` (the default): no-call and call examples are cut into thirds separately, by the
    same score, and stage *i* is the union of both *i*-th thirds.  Why: ``n_calls = 0`` is the easiest value of
    the third criterion, so a plain cut puts almost every no-call example into *easy* (default training set:
    140 of the 205 warm-up no-call examples in *easy*, 27 in *hard*), and sequential SFT would show the last
    stage — the one the policy leaves the warm-up with — almost no "no call" answers.  Each stage keeps the
    set's no-call share instead (68 / 68 / 69), as ``select_hardest`` keeps it for the search, and within each
    kind the order is still easy → hard.  (It is not enough on its own to keep BFCL irrelevance up at the quick
    profile's 48 steps: docs/notebook/RESULTS.md.)  Sizes then differ by at most 2 between stages.
    """
    ordered = order_by_difficulty(warmup, seed)
    if not no_call_every_stage:
        return _cut_thirds(ordered)
    rank = {e.id: i for i, e in enumerate(ordered)}
    no_call = _cut_thirds([e for e in ordered if not e.target])
    calls = _cut_thirds([e for e in ordered if e.target])
    merged = [sorted(a + b, key=lambda e: rank[e.id]) for a, b in zip(no_call, calls)]
    return merged[0], merged[1], merged[2]


def write_parts(parts: dict[str, Iterable[Example]], out_dir: str | os.PathLike) -> dict:
    """Write each part as an ``examples`` Parquet artifact ``out_dir/<name>.parquet``; return name → ArtifactRef."""
    from ..artifacts import write_table
    from ..schemas import EXAMPLES

    out = Path(out_dir)
    return {
        name: write_table([e.to_row() for e in exs], out / f"{name}.parquet", EXAMPLES) for name, exs in parts.items()
    }


def split_and_write(examples: Sequence[Example], cfg: SplitConfig, out_dir: str | os.PathLike) -> dict:
    """Split, cut the curriculum and write ``warmup``, ``pool``, ``easy``, ``medium``, ``hard`` artifacts."""
    warmup, pool = split_pool(examples, cfg)
    easy, medium, hard = curriculum_thirds(warmup, cfg.seed, cfg.no_call_every_stage)
    return write_parts({"warmup": warmup, "pool": pool, "easy": easy, "medium": medium, "hard": hard}, out_dir)
