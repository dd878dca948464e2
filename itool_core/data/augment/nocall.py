"""``no_call``: questions paired with tools that cannot answer them, target "no call" (BFCL irrelevance).

Without any example whose answer is "no call" a model learns that every prompt is answered with a call, and
BFCL irrelevance collapses.  An example's opening question (system message if any + first user message) gets
1–3 tools of OTHER examples of the same source that share no keywords with it (:mod:`.keywords`); the target
``[]`` renders as :data:`~itool_core.calls.NO_CALL_TEXT`, which BFCL decodes as no call.  Tools come from the
SAME source as the question, so the sources' different tool styles never give away which tool was added.
With ``near_miss`` > 0 that share of the copies gets tools on the question's topic that are still other
functions (BFCL's irrelevance questions are of that kind).

The *missing-parameter* no-call variant is not generated: making a question lack a required value means
editing free text so that the value really disappears (and nothing else), which cannot be done reliably
without a model; BFCL's non-live AST categories do not score it either.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from ..records import Example
from .common import _new, _rng, _sorted, _tool_pool, question_text
from .keywords import (
    GENERIC_TOOLS,
    _content,
    _name_tokens,
    _near_miss,
    _own_keywords,
    _unrelated,
    _words,
    tool_keywords,
)


@dataclass(frozen=True)
class NoCallParams:
    #: Share of the examples with a call that get one no-call copy of their opening question.
    rate: float = 0.2
    min_tools: int = 1
    max_tools: int = 3
    generic_tools: tuple[str, ...] = GENERIC_TOOLS
    #: A candidate tool may share at most this many description keywords with the question / its own function.
    max_shared_keywords: int = 1
    #: Share of the no-call copies whose tools are *near misses* instead of unrelated ones: same source, on
    #: the question's topic (name or description shares >= ``near_min_shared`` keywords with the question), but
    #: a different function (no name keyword in common with the question's own functions).  BFCL's irrelevance
    #: questions are built that way (an assist-average question offered ``player_stats.average_scoring``), and
    #: unrelated tools alone teach only "abstain when the tools are off-topic" (docs/notebook/RESULTS.md, "Abstention").
    #: 0 keeps the output of earlier builds unchanged (the seeded stream draws nothing extra).
    near_miss: float = 0.0
    near_min_shared: int = 1
    #: When set, ``rate`` is replaced per source by the rate that makes the no-call copies this share of the
    #: source's rows in the augmented set (:func:`source_rates`).  The other augmentations multiply some
    #: sources' call examples (BFCL's: parallel joins, renamed copies, distractors), so one global rate gives
    #: BFCL-style prompts a no-call share of ~9 % against ~22 % for API-Bank's, and the model learns the
    #: prompt's style as a cue for abstaining.  Balancing it moved a 135M model's bias on BFCL-style prompts
    #: by ~4 nats, not its ranking (docs/notebook/RESULTS.md, "Abstention IV").  None: one ``rate`` for all.  A mapping
    #: source → share sets only the named sources (the others keep ``rate``): the bias on one source's prompts
    #: can then be moved without changing what the other source teaches.
    #: (Kept as sorted (source, share) pairs so that the config stays hashable; ``shares`` gives it back.)
    source_share: float | Mapping[str, float] | tuple[tuple[str, float], ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.source_share, Mapping):
            object.__setattr__(self, "source_share", tuple(sorted(self.source_share.items())))
        assert not isinstance(self.source_share, Mapping)  # stored as pairs just above
        shares = dict(self.source_share) if isinstance(self.source_share, tuple) else {"": self.source_share}
        for src, share in shares.items():
            if share is not None and not 0.0 < share < 1.0:
                where = f"[{src!r}]" if src else ""
                raise ValueError(f"no_call.source_share{where}: {share!r} must be in (0, 1)")

    @property
    def shares(self) -> float | dict[str, float] | None:
        """``source_share`` as given: one share, a share per source, or None."""
        assert not isinstance(self.source_share, Mapping)  # __post_init__ stores a mapping as pairs
        return dict(self.source_share) if isinstance(self.source_share, tuple) else self.source_share


def _opening(ex: Example) -> list[dict] | None:
    """The messages up to and including the first user message, if no assistant/tool message precedes it."""
    for i, m in enumerate(ex.messages):
        if m.get("role") == "user":
            return ex.messages[: i + 1]
        if m.get("role") != "system":
            return None
    return None


def _question_key(opening: list[dict]) -> str:
    return json.dumps([(m.get("role"), " ".join(_words(str(m.get("content") or "")))) for m in opening])


def source_rates(
    questions_from: Sequence[Example], rows: Sequence[Example], share: float | Mapping[str, float]
) -> dict[str, float]:
    """Per source, the no-call rate under which :func:`no_call` on ``questions_from`` is expected to add
    ``share`` of that source's rows to ``rows`` (the set without no-call copies): ``n / (n + calls) = share``.
    ``share`` is one share for every source or a share per source (sources not named get no rate).

    :func:`no_call` draws once per *example* but copies each distinct question once (an API-Bank dialogue has
    one example per step, all with the same opening), so a question seen in ``m`` examples is copied with
    probability ``1 − (1 − rate)^m``; the rate is solved from the sum of those (bisection), and is 1 when the
    source has too few questions.  Approximate: a question without enough unrelated tools is skipped."""
    calls = Counter(e.source for e in rows if e.target)
    seen: dict[str, Counter] = {}
    for ex in questions_from:
        opening = _opening(ex)
        if opening is not None and ex.target:
            seen.setdefault(ex.source, Counter())[_question_key(opening)] += 1
    rates = {}
    for src, per_question in seen.items():
        target = share.get(src) if isinstance(share, Mapping) else share
        if target is None:
            continue
        want = target / (1.0 - target) * calls[src]
        expected = lambda r, pq=per_question: sum(1.0 - (1.0 - r) ** m for m in pq.values())  # noqa: E731
        if expected(1.0) <= want:
            rates[src] = 1.0
            continue
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if expected(mid) < want else (lo, mid)
        rates[src] = (lo + hi) / 2
    return rates


def no_call(
    examples: Sequence[Example],
    params: NoCallParams = NoCallParams(),
    seed: int = 0,
    rates: Mapping[str, float] | None = None,
) -> list[Example]:
    """Questions paired with tools that cannot answer them → target ``[]`` (rendered as NO_CALL_TEXT).

    Teaches BFCL's relevance rule: when no given function fits, answer text that does not decode as a call.
    The question is the example's opening (system message if any + first user message; a dialogue's later
    turns are dropped, they would refer to calls that no longer exist).  All of the example's tools are
    removed; the new ones come from other examples of the same source and pass :func:`_unrelated` against the
    question and every tool of the example (a dialogue's retrieved APIs are its "own" functions too).
    ``rates``: a rate per source (:func:`source_rates`) instead of ``params.rate``.
    """
    rng = _rng(seed, "no_call")
    exs = _sorted(examples)
    pool = _tool_pool(exs, params.generic_tools)
    out: list[Example] = []
    asked: set[str] = set()
    for ex in exs:
        opening = _opening(ex)
        rate = params.rate if rates is None else rates.get(ex.source, params.rate)
        if opening is None or not ex.target or rng.random() >= rate:
            continue
        key = _question_key(opening)
        if key in asked:  # API-Bank has one example per step of a dialogue: one no-call copy per question
            continue
        asked.add(key)
        k = rng.randint(params.min_tools, params.max_tools)
        own_names = {t.get("name") for t in ex.tools} | {c.name for c in ex.target}
        q = Example(ex.id, ex.source, ex.category, ex.tools, opening, ex.target)
        qwords = _content(_words(question_text(q)))
        own = _own_keywords(q) | set().union(*(set().union(*tool_keywords(t)) for t in ex.tools))
        near = params.near_miss > 0 and rng.random() < params.near_miss
        # A question answered by a generic tool (API-Bank's first step calls ToolSearcher) does not name the
        # function that would serve it, so an on-topic tool could be that very function: unrelated tools only.
        near = near and not any(c.name in params.generic_tools for c in ex.target)
        if near:
            # (a normalised tool's name is a string; t.get's type does not say so)
            own_names_kw = set().union(*(_content(_name_tokens(cast(str, n))) for n in own_names))
            cands = [
                t
                for t in pool.get(ex.source, [])
                if t["name"] not in own_names and _near_miss(t, qwords, own_names_kw, params.near_min_shared)
            ]
            if cands:
                k = min(k, len(cands))
            else:  # nothing on topic in this source: an unrelated copy instead
                near = False
        if not near:
            cands = [
                t
                for t in pool.get(ex.source, [])
                if t["name"] not in own_names and _unrelated(t, qwords, own, params.max_shared_keywords)
            ]
            if len(cands) < k:
                continue
        tools = rng.sample(cands, k)
        extra = {"near_miss": True} if near else {}
        out.append(
            _new(
                ex,
                "no_call",
                f"aug/nocall/{ex.id}",
                "aug_no_call",
                tools,
                opening,
                [],
                original_functions=sorted({c.name for c in ex.target}),
                dialogue_cut=len(opening) < len(ex.messages),
                **extra,
            )
        )
    return out
