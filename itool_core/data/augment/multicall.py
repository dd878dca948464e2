"""``parallel``: 2–4 single-call questions of one source joined into one multi-call example (BFCL parallel).

When almost every training target is one call, the model emits one call, and BFCL parallel /
parallel_multiple stay at 0.  The joined user message reads "X. Also, Y.", a numbered list, or plain
sentences; the tools are the union of the members' tools (deduplicated by name); the target is their calls in
question order.  ``same_function`` joins teach BFCL "parallel", ``different_function`` joins
"parallel_multiple".
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ...calls import serialise_calls
from ..records import Example
from .common import _new, _rng, _sorted, approx_chars, is_single_turn, question_text
from .keywords import _words


@dataclass(frozen=True)
class ParallelParams:
    #: How many joined examples to make with the same function ("parallel") and different ones ("parallel_multiple").
    n_same: int = 150
    n_different: int = 150
    min_calls: int = 2
    max_calls: int = 4
    #: Functions never joined: API-Bank's protocol is one ToolSearcher call per turn (its level 2 expects one).
    exclude_functions: tuple[str, ...] = ("ToolSearcher",)
    #: The union of the members' tools is cut to the called tools + seeded others up to this many (BFCL
    #: parallel_multiple offers 2–4 tools; four exec_multiple members would otherwise bring 16).
    max_tools: int = 6
    #: Skip a join longer than this (compact tools + messages + answer, in characters; ≈ 0.25–0.35 tokens per
    #: character here, so 2400 keeps a joined example under 1024 tokens with the ~260-token system prompt).
    max_chars: int = 2400


# Order-free connectors: the joined requests are independent (BFCL parallel is scored without order).
_CONNECTORS = (
    "Also, ",
    "Additionally, ",
    "In addition, ",
    "Separately, ",
    "Besides that, ",
    "On another note, ",
    "As well, ",
)
_INTROS = (
    "Please do the following:",
    "I have several requests:",
    "Can you help me with these?",
    "Handle these tasks for me:",
    "I need a few things:",
)


def _sentence(q: str) -> str:
    q = q.strip()
    return q if q.endswith((".", "?", "!")) else q + "."


def _lower_first(q: str) -> str:
    # "What is ..." → "what is ..." after a connector; keep acronyms ("SQL"), "I", and names that look proper.
    w = q.split(" ", 1)[0]
    if not w or w == "I" or w.startswith("I'") or len(w) > 1 and not w[1:].islower() or not w[0].isupper():
        return q
    return q[0].lower() + q[1:]


def join_questions(questions: Sequence[str], rng: random.Random) -> tuple[str, str]:
    """One user message asking all ``questions``; returns ``(text, style)`` with style connectors|numbered|plain."""
    qs = [_sentence(q) for q in questions]
    style = rng.choice(("connectors", "connectors", "numbered", "plain"))
    if style == "numbered":
        intro = rng.choice(_INTROS)
        return intro + "\n" + "\n".join(f"{i}. {q}" for i, q in enumerate(qs, 1)), style
    if style == "plain":
        return ("\n\n" if rng.random() < 0.5 else " ").join(qs), style
    conns = rng.sample(_CONNECTORS, len(qs) - 1)
    return " ".join([qs[0]] + [c + _lower_first(q) for c, q in zip(conns, qs[1:])]), style


def _tool_key(t: dict) -> str:
    return json.dumps(t, sort_keys=True, ensure_ascii=False)


def _union_tools(members: Sequence[Example]) -> list[dict] | None:
    """Union of the members' tools, deduplicated by name; None if two members disagree on a same-named tool."""
    seen: dict[str, dict] = {}
    for ex in members:
        for t in ex.tools:
            prev = seen.get(t["name"])
            if prev is None:
                seen[t["name"]] = t
            elif _tool_key(prev) != _tool_key(t):
                return None
    return list(seen.values())


def _norm_q(ex: Example) -> str:
    return " ".join(_words(question_text(ex)))


def _join(members: Sequence[Example], rng: random.Random, variant: str, params: ParallelParams) -> Example | None:
    tools = _union_tools(members)
    if tools is None:
        return None
    called = {c.name for ex in members for c in ex.target}
    others = [t["name"] for t in tools if t["name"] not in called]
    if len(tools) > params.max_tools:
        keep = set(rng.sample(others, max(0, params.max_tools - len(called))))
        tools = [t for t in tools if t["name"] in called or t["name"] in keep]
    systems = {json.dumps([m for m in ex.messages if m.get("role") == "system"]) for ex in members}
    if len(systems) != 1:
        return None
    system = [m for m in members[0].messages if m.get("role") == "system"]
    text, style = join_questions([question_text(ex) for ex in members], rng)
    target = [c for ex in members for c in ex.target]
    if approx_chars(tools, system + [{"content": text}], target) > params.max_chars:
        return None
    ids = [ex.id for ex in members]
    category = "aug_parallel" if variant == "same_function" else "aug_parallel_multiple"
    return _new(
        members[0],
        "parallel",
        "aug/parallel/" + "+".join(ids),
        category,
        tools,
        system + [{"role": "user", "content": text}],
        target,
        sources=ids,
        variant=variant,
        join_style=style,
    )


def parallel(examples: Sequence[Example], params: ParallelParams = ParallelParams(), seed: int = 0) -> list[Example]:
    """Join 2–4 single-call single-turn questions of one source into one multi-call example.

    ``same_function`` (BFCL "parallel"): members call the same function with the same schema.
    ``different_function`` (BFCL "parallel_multiple"): members call pairwise different functions.
    Functions are drawn uniformly (not examples), so frequent functions do not dominate the joined sets.
    """
    rng = _rng(seed, "parallel")
    eligible = [
        ex
        for ex in _sorted(examples)
        if is_single_turn(ex) and len(ex.target) == 1 and ex.target[0].name not in params.exclude_functions
    ]
    by_fn: dict[tuple[str, str], list[Example]] = defaultdict(list)  # (source, function) → examples
    by_fn_schema: dict[tuple[str, str, str], list[Example]] = defaultdict(list)
    for ex in eligible:
        name = ex.target[0].name
        tool = next((t for t in ex.tools if t.get("name") == name), None)
        if tool is None:
            continue
        by_fn[(ex.source, name)].append(ex)
        by_fn_schema[(ex.source, name, _tool_key(tool))].append(ex)

    out: list[Example] = []
    used: set[frozenset[str]] = set()

    def distinct(members: list[Example]) -> bool:
        # BFCL's unused sets hold paraphrases of one request ("factorial of 7" twice): joining those would
        # teach duplicate calls, so members need different questions AND different calls.
        qs = {_norm_q(m) for m in members}
        calls = {serialise_calls(m.target) for m in members}
        return len(qs) == len(calls) == len(members) and frozenset(m.id for m in members) not in used

    # same function
    groups = [g for _, g in sorted(by_fn_schema.items()) if len(g) >= params.min_calls]
    made, tries = 0, 0
    while groups and made < params.n_same and tries < 20 * params.n_same:
        tries += 1
        g = rng.choice(groups)
        k = rng.randint(params.min_calls, min(params.max_calls, len(g)))
        members = rng.sample(g, k)
        if not distinct(members):
            continue
        joined = _join(members, rng, "same_function", params)
        if joined is not None:
            used.add(frozenset(m.id for m in members))
            out.append(joined)
            made += 1

    # different functions, same source
    fns_by_source: dict[str, list[str]] = defaultdict(list)
    for src, name in sorted(by_fn):
        fns_by_source[src].append(name)
    sources = [s for s in sorted(fns_by_source) if len(fns_by_source[s]) >= params.min_calls]
    made, tries = 0, 0
    while sources and made < params.n_different and tries < 20 * params.n_different:
        tries += 1
        # weight sources by their number of eligible examples
        src = rng.choices(sources, weights=[sum(len(by_fn[(s, f)]) for f in fns_by_source[s]) for s in sources])[0]
        fns = fns_by_source[src]
        k = rng.randint(params.min_calls, min(params.max_calls, len(fns)))
        members = [rng.choice(by_fn[(src, f)]) for f in rng.sample(fns, k)]
        if not distinct(members):
            continue
        joined = _join(members, rng, "different_function", params)
        if joined is not None:
            used.add(frozenset(m.id for m in members))
            out.append(joined)
            made += 1
    return out
