"""What every augmentation shares: its seeded stream, input order, the question of an example, the new example.

Each augmentation is a pure, seeded function ``(examples, params, seed) -> new examples``: inputs are never
mutated, outputs are deterministic for a seed and independent of the input order (inputs are sorted by id
first).  :func:`_new` gives every output the provenance the build and its card rely on: the sources' ``source``,
an id derived from the source ids, a category ``aug_<kind>`` (never a BFCL category name, so nothing can
mistake it for a scored item), ``meta["augmentation"]`` and ``meta["sources"]``.
"""

from __future__ import annotations

import copy
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from ...calls import PromptStyle, ToolCall, render_target, render_tools
from ..records import Example


def _rng(seed: int, name: str) -> random.Random:
    # One stream per augmentation: switching one off (an ablation row) leaves the others' output unchanged.
    return random.Random(f"itool-augment/{name}/{seed}")


def _sorted(examples: Iterable[Example]) -> list[Example]:
    return sorted(examples, key=lambda e: e.id)


def is_single_turn(ex: Example) -> bool:
    """One user message, optionally after a system message: a question that can be joined or re-tooled."""
    roles = [m.get("role") for m in ex.messages]
    return roles in (["user"], ["system", "user"])


def question_text(ex: Example) -> str:
    """All user text of the example (what the question asks)."""
    return " ".join(m.get("content") or "" for m in ex.messages if m.get("role") == "user")


def _tool_pool(examples: Sequence[Example], exclude: Iterable[str]) -> dict[str, list[dict]]:
    """Distinct tools (first by id order) per source, generic ones left out."""
    exclude = set(exclude)
    pool: dict[str, dict[str, dict]] = defaultdict(dict)
    for ex in examples:
        for t in ex.tools:
            n = t.get("name")
            if isinstance(n, str) and n not in exclude and n not in pool[ex.source]:
                pool[ex.source][n] = t
    return {s: [d[k] for k in sorted(d)] for s, d in pool.items()}


def approx_chars(tools: list[dict], messages: list[dict], target: Sequence[ToolCall]) -> int:
    """Characters of what the model reads and writes beyond the fixed system text (compact tools): a cheap
    length proxy for augmentations, which run without a tokenizer (the build measures exact tokens)."""
    return (
        len(render_tools(tools, PromptStyle("compact")))
        + sum(len(str(m.get("content") or "")) for m in messages)
        + len(render_target(target))
    )


def _new(
    src: Example,
    aug: str,
    id_: str,
    category: str,
    tools: list[dict],
    messages: list[dict],
    target: list[ToolCall],
    **meta: Any,
) -> Example:
    m = {"augmentation": aug, "sources": meta.pop("sources", [src.id])}
    m.update(meta)
    return Example(
        id_,
        src.source,
        category,
        copy.deepcopy(tools),
        copy.deepcopy(messages),
        [ToolCall(c.name, copy.deepcopy(c.arguments)) for c in target],
        m,
    )
