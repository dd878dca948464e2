"""``distractors``: copies with 1–3 unrelated tools of the same source inserted (BFCL multiple).

Teaches picking the right tool among several.  The added tools pass the same relatedness test as no-call
tools (:mod:`.keywords`), so a distractor never could have answered the question.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..records import Example
from .common import _new, _rng, _sorted, _tool_pool, approx_chars
from .keywords import GENERIC_TOOLS, _pick_unrelated


@dataclass(frozen=True)
class DistractorParams:
    #: Share of the eligible examples (≥ 1 call) that get one copy with extra tools.
    rate: float = 0.25
    min_add: int = 1
    max_add: int = 3
    #: Never grow a tool list beyond this (BFCL multiple has 2–4 tools).
    max_tools: int = 5
    generic_tools: tuple[str, ...] = GENERIC_TOOLS
    max_shared_keywords: int = 1
    #: Skip a copy longer than this (see :attr:`ParallelParams.max_chars`).
    max_chars: int = 2800


def distractors(
    examples: Sequence[Example], params: DistractorParams = DistractorParams(), seed: int = 0
) -> list[Example]:
    """Copies with 1–3 unrelated tools of the same source inserted at random positions (BFCL "multiple").

    Works on any example with a call (dialogues too: extra tools contradict nothing in the history).
    """
    rng = _rng(seed, "distractors")
    exs = _sorted(examples)
    pool = _tool_pool(exs, params.generic_tools)
    out: list[Example] = []
    for ex in exs:
        if not ex.target or rng.random() >= params.rate:
            continue
        room = params.max_tools - len(ex.tools)
        if room < params.min_add:
            continue
        k = rng.randint(params.min_add, min(params.max_add, room))
        taken = {t.get("name") for t in ex.tools}
        extra = _pick_unrelated(rng, pool.get(ex.source, []), ex, k, params.max_shared_keywords, taken)
        if not extra:
            continue
        tools = list(ex.tools)
        for t in extra:
            tools.insert(rng.randint(0, len(tools)), t)
        if approx_chars(tools, ex.messages, ex.target) > params.max_chars:
            continue
        out.append(
            _new(
                ex,
                "distractors",
                f"aug/distractors/{ex.id}",
                "aug_distractors",
                tools,
                ex.messages,
                ex.target,
                added_tools=[t["name"] for t in extra],
            )
        )
    return out
