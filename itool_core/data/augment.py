"""Training-data augmentations that teach what the benchmarks test: abstention, parallel calls, reading the schema.

Why (measured, DESIGN.md "What SFT on the embedded data does"): warm-up SFT of SmolLM2-135M on BFCL's unused
exec+sql sets lifted simple 0 → 40 % and multiple 0 → 32 %, but

* **irrelevance fell from 100 % to 24 %** — no training example ever says "no call", so the model learns that
  every prompt is answered with a call;
* **parallel / parallel_multiple stayed at 0 %** — almost every training target is one call, so the model
  emits one call;
* the sets call only **52 distinct functions** and ``sql.execute`` is 30 % of them (API-Bank's training set
  adds 364 APIs but ``ToolSearcher`` is 37 % of *its* targets) — a small model memorises names instead of
  reading them from the tool list.

Each augmentation is a pure, seeded function ``(examples, params, seed) -> new examples``.  Inputs are never
mutated; outputs are deterministic for a seed and independent of the input order (inputs are sorted by id
first).  Every output keeps its sources' ``source``, gets an id derived from its sources
(``aug/nocall/<source id>``, ``aug/renamed/<source id>``, ``aug/parallel/<id>+<id>+...``), a category ``aug_<kind>`` (never a BFCL
category name, so nothing can mistake it for a scored item) and ``meta["augmentation"]`` naming it, with
``meta["sources"]`` listing the ids it came from.

The four augmentations, what each makes and which benchmark behaviour it targets:

``no_call`` → BFCL irrelevance / live_irrelevance
    An example's opening question (system message if any + first user message) paired with 1–3 tools of
    OTHER examples of the same source whose names and descriptions do not overlap the question or its own
    functions; target ``[]``, rendered as :data:`~itool_core.calls.NO_CALL_TEXT`, which BFCL decodes as no
    call.  Teaches abstention when no tool fits.  With ``near_miss`` > 0 that share of the copies gets tools
    on the question's topic that are still other functions (BFCL's irrelevance questions are of that kind).
``parallel`` → BFCL parallel (same function) and parallel_multiple (different functions)
    2–4 single-call single-turn questions of one source joined into one user message ("X. Also, Y.", a
    numbered list, or plain sentences) with the union of their tools (deduplicated by name); target = their
    calls in question order.  Teaches emitting ALL the calls a request needs.
``renamed`` → simple / multiple / live_*
    A copy whose function and parameter names are rewritten consistently in the tools, the ``required`` lists
    and the target (synonyms, namespace prefixes, camelCase ↔ snake_case ↔ PascalCase); the question text is
    unchanged.  Teaches copying names from the schema instead of recalling memorised ones.
``distractors`` → BFCL multiple
    A copy with 1–3 unrelated tools of the same source inserted at random positions.  Teaches picking the
    right tool among several.

:func:`cap_functions` (the "source caps") runs before them: no single function may hold more than a configurable
share (default 5 %) of the set's target calls; seeded drops of examples of over-represented functions
(``ToolSearcher``, ``sql.execute``).  The *missing-parameter* no-call variant is not generated: making a question
lack a required value means editing free text so that the value really disappears (and nothing else), which
cannot be done reliably without a model; BFCL's non-live AST categories do not score it either.

Validity: every produced target parses, serialises back to itself, has the argument types its schema declares
and passes bfcl-eval's own ``ast_checker`` against the example's own tools with a possible answer built from the
target (:func:`possible_answer`, :func:`check_example`); ``tests/test_augment.py`` runs that over the whole
generated default set.  Tools for
``no_call``/``distractors`` come from the SAME source as the question, so the two sources' different tool
styles (BFCL appends " Note that the provided function is in Python 3 syntax.") never give away which tool is
the added one.  "Generic" tools that could answer almost any question (``ToolSearcher``, ``sql.execute``) are
never used as no-call or distractor tools: with them, "no call" would be a wrong label.
"""

from __future__ import annotations

import copy
import json
import keyword
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..calls import (
    PromptStyle,
    ToolCall,
    calls_match,
    decode_answer,
    parse_calls,
    render_target,
    render_tools,
    serialise_calls,
)
from .records import Example

__all__ = [
    "AUGMENTATIONS",
    "CapParams",
    "NoCallParams",
    "ParallelParams",
    "RenameParams",
    "DistractorParams",
    "AugmentConfig",
    "cap_functions",
    "no_call",
    "parallel",
    "renamed",
    "unrename",
    "distractors",
    "augment",
    "is_single_turn",
    "approx_chars",
    "join_questions",
    "question_text",
    "tool_keywords",
    "possible_answer",
    "checker_category",
    "check_example",
]

#: Names of the augmentations, in the order :func:`augment` runs them (the CLI's ``--no-augment`` choices).
AUGMENTATIONS = ("no_call", "parallel", "renamed", "distractors")

#: Tools that can serve almost any question: never a no-call tool (the label would be wrong) nor a distractor.
GENERIC_TOOLS = ("ToolSearcher", "sql.execute")


# ------------------------------------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class CapParams:
    """Source caps: no function above ``max_share`` of all target calls (``overrides``: per-function shares)."""

    max_share: float = 0.05
    #: ``(("ToolSearcher", 0.1), ...)``: a different share for named functions.
    overrides: tuple[tuple[str, float], ...] = ()
    #: A function is never cut below this many calls (keeps tiny sets from being emptied).
    min_calls: int = 1


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
        shares = dict(self.source_share) if isinstance(self.source_share, tuple) else {"": self.source_share}
        for src, share in shares.items():
            if share is not None and not 0.0 < share < 1.0:
                where = f"[{src!r}]" if src else ""
                raise ValueError(f"no_call.source_share{where}: {share!r} must be in (0, 1)")

    @property
    def shares(self) -> float | dict[str, float] | None:
        """``source_share`` as given: one share, a share per source, or None."""
        return dict(self.source_share) if isinstance(self.source_share, tuple) else self.source_share


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


@dataclass(frozen=True)
class RenameParams:
    #: Share of the eligible examples that get one renamed copy.
    rate: float = 0.4
    #: Probability that a given parameter is renamed (the function name always is).
    param_prob: float = 0.7
    #: Skip sources longer than this (see :attr:`ParallelParams.max_chars`): a copy of an example that does not
    #: fit the length budget would only be dropped again.
    max_chars: int = 2400


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

    def without(self, *names: str) -> "AugmentConfig":
        for n in names:
            if n not in AUGMENTATIONS:
                raise ValueError(f"unknown augmentation {n!r}; known: {list(AUGMENTATIONS)}")
        return replace(self, enabled=tuple(a for a in self.enabled if a not in names))

    @classmethod
    def none(cls) -> "AugmentConfig":
        return cls(enabled=())


# --------------------------------------------------------------------------------------------------- helpers


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


_STOP = frozenset(
    """a an the of to in on for with by from at as and or is are be this that these those it its into using use
    used given provided function python syntax note specific specified based which will can should would must
    any all value values number numbers list type types get set data info information api tool returns return
    whether if two one such e g i e default optional required parameter parameters name names""".split()
)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _stem(w: str) -> str:
    # Crude plural folding, enough to see "prices" ~ "price" between a question and a tool.
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


def _name_tokens(name: str) -> list[str]:
    """``get_stockPrice.v2`` → ``["get", "stock", "price", "v2"]``."""
    parts = re.split(r"[._\-\s]+", name)
    out: list[str] = []
    for p in parts:
        out += [t.lower() for t in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", p)]
    return [t for t in out if t]


def _content(words: Iterable[str]) -> set[str]:
    return {_stem(w) for w in words if w not in _STOP and len(w) > 2 and not w.isdigit()}


def tool_keywords(tool: dict) -> tuple[frozenset[str], frozenset[str]]:
    """``(name keywords, description keywords)`` of a tool: content words, stopwords dropped, plurals folded."""
    return _keywords(str(tool.get("name", "")), str(tool.get("description", "")))


@lru_cache(maxsize=65536)
def _keywords(name: str, description: str) -> tuple[frozenset[str], frozenset[str]]:
    # cached: the same few hundred tools are compared against every question
    return frozenset(_content(_name_tokens(name))), frozenset(_content(_words(description)))


def _unrelated(tool: dict, question_words: set[str], own: set[str], max_shared: int) -> bool:
    """Is ``tool`` unable to answer a question about ``own`` (keywords of its own functions)?

    Its name keywords must not occur in the question nor in the question's own function; its description may
    share at most ``max_shared`` keywords with them.  Conservative by design: a wrongly kept tool makes a
    wrong "no call" label, a wrongly rejected one only costs a candidate.
    """
    name_kw, desc_kw = tool_keywords(tool)
    if name_kw & (question_words | own):
        return False
    return len(desc_kw & (question_words | own)) <= max_shared


def _near_miss(tool: dict, question_words: set[str], own_names_kw: set[str], min_shared: int) -> bool:
    """Is ``tool`` on the question's topic but not a version of its own function?  Its name keywords share
    nothing with the names of the question's functions (so ``get_stock_history`` is no near miss for a
    ``get_stock_price`` question: it might answer it); name + description share >= ``min_shared`` keywords
    with the question.  Less conservative than :func:`_unrelated` by nature — a differently named tool on the
    same topic can occasionally still serve the question; the build's card counts these copies."""
    name_kw, desc_kw = tool_keywords(tool)
    if name_kw & own_names_kw:
        return False
    return len((name_kw | desc_kw) & question_words) >= min_shared


def _own_keywords(ex: Example) -> set[str]:
    names = {c.name for c in ex.target}
    out: set[str] = set()
    for t in ex.tools:
        if t.get("name") in names or not names:
            n, d = tool_keywords(t)
            out |= n | d
    for n in names:
        out |= _content(_name_tokens(n))
    return out


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
    return (len(render_tools(tools, PromptStyle("compact"))) + sum(len(str(m.get("content") or "")) for m in messages)
            + len(render_target(target)))


def _new(src: Example, aug: str, id_: str, category: str, tools: list[dict], messages: list[dict],
         target: list[ToolCall], **meta: Any) -> Example:
    m = {"augmentation": aug, "sources": meta.pop("sources", [src.id])}
    m.update(meta)
    return Example(id_, src.source, category, copy.deepcopy(tools), copy.deepcopy(messages),
                   [ToolCall(c.name, copy.deepcopy(c.arguments)) for c in target], m)


def _pick_unrelated(rng: random.Random, pool: list[dict], ex: Example, k: int, max_shared: int,
                    taken: set[str]) -> list[dict]:
    qwords = _content(_words(question_text(ex)))
    own = _own_keywords(ex)
    cands = [t for t in pool if t["name"] not in taken and _unrelated(t, qwords, own, max_shared)]
    if len(cands) < k:
        return []
    return rng.sample(cands, k)


# ------------------------------------------------------------------------------------------------------ caps


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
        excess = {
            f: n - max(overrides.get(f, params.max_share) * total, params.min_calls) for f, n in counts.items()
        }
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


# --------------------------------------------------------------------------------------------------- no_call


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


def source_rates(questions_from: Sequence[Example], rows: Sequence[Example],
                 share: float | Mapping[str, float]) -> dict[str, float]:
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
        expected = lambda r: sum(1.0 - (1.0 - r) ** m for m in per_question.values())  # noqa: E731
        if expected(1.0) <= want:
            rates[src] = 1.0
            continue
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if expected(mid) < want else (lo, mid)
        rates[src] = (lo + hi) / 2
    return rates


def no_call(examples: Sequence[Example], params: NoCallParams = NoCallParams(), seed: int = 0,
            rates: Mapping[str, float] | None = None) -> list[Example]:
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
            own_names_kw = set().union(*(_content(_name_tokens(n)) for n in own_names))
            cands = [t for t in pool.get(ex.source, [])
                     if t["name"] not in own_names and _near_miss(t, qwords, own_names_kw, params.near_min_shared)]
            if cands:
                k = min(k, len(cands))
            else:  # nothing on topic in this source: an unrelated copy instead
                near = False
        if not near:
            cands = [t for t in pool.get(ex.source, [])
                     if t["name"] not in own_names and _unrelated(t, qwords, own, params.max_shared_keywords)]
            if len(cands) < k:
                continue
        tools = rng.sample(cands, k)
        extra = {"near_miss": True} if near else {}
        out.append(_new(ex, "no_call", f"aug/nocall/{ex.id}", "aug_no_call", tools, opening, [],
                        original_functions=sorted({c.name for c in ex.target}),
                        dialogue_cut=len(opening) < len(ex.messages), **extra))
    return out


# -------------------------------------------------------------------------------------------------- parallel

# Order-free connectors: the joined requests are independent (BFCL parallel is scored without order).
_CONNECTORS = ("Also, ", "Additionally, ", "In addition, ", "Separately, ", "Besides that, ", "On another note, ",
               "As well, ")
_INTROS = ("Please do the following:", "I have several requests:", "Can you help me with these?",
           "Handle these tasks for me:", "I need a few things:")


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
    return _new(members[0], "parallel", "aug/parallel/" + "+".join(ids), category, tools,
                system + [{"role": "user", "content": text}], target,
                sources=ids, variant=variant, join_style=style)


def parallel(examples: Sequence[Example], params: ParallelParams = ParallelParams(), seed: int = 0) -> list[Example]:
    """Join 2–4 single-call single-turn questions of one source into one multi-call example.

    ``same_function`` (BFCL "parallel"): members call the same function with the same schema.
    ``different_function`` (BFCL "parallel_multiple"): members call pairwise different functions.
    Functions are drawn uniformly (not examples), so frequent functions do not dominate the joined sets.
    """
    rng = _rng(seed, "parallel")
    eligible = [
        ex for ex in _sorted(examples)
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
        ex = _join(members, rng, "same_function", params)
        if ex is not None:
            used.add(frozenset(m.id for m in members))
            out.append(ex)
            made += 1

    # different functions, same source
    fns_by_source: dict[str, list[str]] = defaultdict(list)
    for (src, name) in sorted(by_fn):
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
        ex = _join(members, rng, "different_function", params)
        if ex is not None:
            used.add(frozenset(m.id for m in members))
            out.append(ex)
            made += 1
    return out


# --------------------------------------------------------------------------------------------------- renamed

# A small vocabulary of plausible API-name synonyms.  Both directions are listed where both are natural.
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "get": ("fetch", "retrieve", "obtain", "lookup", "query", "read"),
    "fetch": ("get", "retrieve", "load"),
    "retrieve": ("get", "fetch", "obtain"),
    "calculate": ("compute", "calc", "evaluate", "determine"),
    "calc": ("compute", "calculate"),
    "compute": ("calculate", "calc", "evaluate"),
    "find": ("search", "locate", "lookup", "discover"),
    "search": ("find", "lookup", "query", "seek"),
    "create": ("make", "new", "add", "build"),
    "add": ("insert", "append", "create", "register"),
    "delete": ("remove", "erase", "drop"),
    "remove": ("delete", "erase", "drop"),
    "update": ("modify", "edit", "change", "patch"),
    "book": ("reserve", "schedule"),
    "check": ("verify", "inspect", "validate"),
    "convert": ("transform", "translate"),
    "send": ("post", "dispatch", "submit", "deliver"),
    "order": ("purchase", "request"),
    "estimate": ("approximate", "predict", "forecast"),
    "schedule": ("plan", "arrange", "book"),
    "record": ("log", "save", "store"),
    "query": ("request", "lookup", "search"),
    "number": ("num", "count"),
    "num": ("number", "count"),
    "temperature": ("temp",),
    "information": ("info", "details"),
    "info": ("details", "information"),
    "details": ("info", "data"),
    "maximum": ("max", "upper"),
    "max": ("maximum", "upper"),
    "minimum": ("min", "lower"),
    "min": ("minimum", "lower"),
    "quantity": ("qty", "amount", "count"),
    "amount": ("amt", "sum", "quantity"),
    "price": ("cost", "rate"),
    "cost": ("price", "expense"),
    "name": ("title", "label"),
    "id": ("identifier", "key", "uid"),
    "date": ("day", "when"),
    "time": ("duration", "period"),
    "location": ("place", "loc", "site"),
    "city": ("town", "municipality"),
    "country": ("nation", "region"),
    "value": ("val", "amount"),
    "initial": ("init", "start", "starting"),
    "final": ("end", "last"),
    "start": ("begin", "initial", "first"),
    "end": ("stop", "final", "last"),
    "user": ("customer", "account", "person"),
    "customer": ("client", "user", "buyer"),
    "type": ("kind", "category"),
    "category": ("kind", "group"),
    "rate": ("ratio", "pct"),
    "description": ("desc", "summary"),
    "message": ("msg", "text"),
    "address": ("addr",),
    "duration": ("length", "period"),
    "year": ("yr",),
    "years": ("yrs", "period"),
    "stock": ("ticker", "equity", "share"),
    "weather": ("forecast", "climate"),
    "distance": ("dist", "length"),
    "area": ("surface", "size"),
    "radius": ("rad", "r"),
    "total": ("sum", "overall"),
    "list": ("items", "collection"),
    "table": ("tbl", "relation"),
    "columns": ("cols", "fields"),
    "conditions": ("filters", "where_clauses"),
    "keywords": ("terms", "query"),
    "patient": ("person", "subject"),
    "doctor": ("physician", "clinician"),
    "appointment": ("booking", "visit"),
    "product": ("item", "goods"),
    "email": ("mail", "email_address"),
    "phone": ("telephone", "mobile"),
    "password": ("passwd", "secret"),
    "username": ("user_name", "login"),
    "movie": ("film",),
    "food": ("meal", "dish"),
    "restaurant": ("eatery", "diner"),
    "hotel": ("lodging", "accommodation"),
    "flight": ("plane", "air_trip"),
    "event": ("occasion", "happening"),
    "status": ("state", "condition"),
    "score": ("rating", "points"),
    "speed": ("velocity", "pace"),
    "velocity": ("speed",),
    "acceleration": ("accel",),
    "function": ("func", "fn"),
    "limit": ("cap", "max_items"),
    "currency": ("money", "denomination"),
    "source": ("src", "origin"),
    "target": ("dest", "destination"),
    "destination": ("dest", "target"),
    "origin": ("src", "from_place"),
    "latitude": ("lat",),
    "longitude": ("lon", "lng"),
    "coordinates": ("coords", "position"),
}
_PREFIXES = ("api", "svc", "tools", "util", "app", "lib", "service", "core", "ext")
_VERB_PREFIXES = ("do", "run", "perform", "request")


def _style(tokens: Sequence[str], style: str) -> str:
    tokens = [t for t in tokens if t]
    if style == "camel":
        return tokens[0] + "".join(t[:1].upper() + t[1:] for t in tokens[1:])
    if style == "pascal":
        return "".join(t[:1].upper() + t[1:] for t in tokens)
    return "_".join(tokens)


def _ident_ok(s: str) -> bool:
    return s.isidentifier() and not keyword.iskeyword(s) and s not in ("True", "False", "None")


def _rename_tokens(tokens: list[str], rng: random.Random, prob: float) -> list[str]:
    out = []
    for t in tokens:
        syn = _SYNONYMS.get(t)
        if syn and rng.random() < prob:
            out += rng.choice(syn).split("_")
        else:
            out.append(t)
    return out


def _new_function_name(name: str, rng: random.Random, style: str) -> str:
    """A plausible different name: synonyms, namespace prefix changes, another case convention."""
    module, _, base = name.rpartition(".")
    tokens = _name_tokens(base) or ["fn"]
    tokens = _rename_tokens(tokens, rng, 0.6)
    r = rng.random()
    if module and r < 0.4:
        # fold the namespace into the name: math.factorial → math_factorial / mathFactorial
        tokens = _name_tokens(module) + tokens
        module = ""
    elif not module and r < 0.3:
        module = rng.choice(_PREFIXES)
    elif r < 0.4 and tokens[0] not in _SYNONYMS:
        tokens = [rng.choice(_VERB_PREFIXES)] + tokens
    base_new = _style(tokens, style)
    if not _ident_ok(base_new):
        base_new = "fn_" + "_".join(tokens)
    return f"{module}.{base_new}" if module else base_new


_PARAM_PREFIXES = ("input", "target", "given", "the")
_PARAM_SUFFIXES = ("value", "val", "param", "arg", "input")


def _new_param_name(name: str, rng: random.Random, style: str) -> str:
    orig = _name_tokens(name) or ["arg"]
    tokens = _rename_tokens(orig, rng, 0.7)
    if tokens == orig and (len(tokens) == 1 or style == "snake"):
        # no synonym and no visible case change: add an affix, as real APIs do (n → n_value, city → target_city)
        if rng.random() < 0.5:
            tokens = [rng.choice(_PARAM_PREFIXES)] + tokens
        else:
            tokens = tokens + [rng.choice(_PARAM_SUFFIXES)]
    new = _style(tokens, style)
    return new if _ident_ok(new) else "arg_" + "_".join(tokens)


def _mentioned(name: str, text: str) -> bool:
    return re.search(r"(?<![\w.])" + re.escape(name) + r"(?![\w])", text) is not None


def _rename_example(ex: Example, fmap: dict[str, str], pmap: dict[str, dict[str, str]]) -> tuple[list[dict], list[ToolCall]]:
    """Apply a function map and per-(old)function parameter maps to the tools and target."""
    tools = []
    for t in ex.tools:
        t2 = copy.deepcopy(t)
        old = t["name"]
        t2["name"] = fmap.get(old, old)
        pm = pmap.get(old, {})
        params = t2.get("parameters")
        if pm and isinstance(params, dict):
            props = params.get("properties") or {}
            params["properties"] = {pm.get(k, k): v for k, v in props.items()}
            if isinstance(params.get("required"), list):
                params["required"] = [pm.get(k, k) for k in params["required"]]
        tools.append(t2)
    target = [
        ToolCall(fmap.get(c.name, c.name), {pmap.get(c.name, {}).get(k, k): copy.deepcopy(v) for k, v in c.arguments.items()})
        for c in ex.target
    ]
    return tools, target


def renamed(examples: Sequence[Example], params: RenameParams = RenameParams(), seed: int = 0) -> list[Example]:
    """Copies with function and parameter names rewritten consistently (tools, ``required``, target).

    The question text is unchanged, so the only way to answer is to copy the names from the schema.  One
    naming convention (snake/camel/pascal) is drawn per example, as a real API has one.  Names that appear in
    any message (the question, a dialogue's earlier calls or tool results) are left alone: renaming them would
    contradict the text.  Nested (dict) property names are unchanged.  ``meta["rename"]`` holds the forward
    maps; :func:`unrename` inverts them.
    """
    rng = _rng(seed, "renamed")
    out: list[Example] = []
    for ex in _sorted(examples):
        if not ex.target or rng.random() >= params.rate:
            continue
        if approx_chars(ex.tools, ex.messages, ex.target) > params.max_chars:
            continue
        text = "\n".join(str(m.get("content") or "") for m in ex.messages)
        names = [t["name"] for t in ex.tools]
        if any(_mentioned(c.name, text) for c in ex.target):
            continue
        fstyle = rng.choice(("snake", "snake", "camel", "pascal"))
        pstyle = rng.choice(("snake", "snake", "camel"))
        fmap: dict[str, str] = {}
        taken = set(names)
        for n in names:
            if _mentioned(n, text):
                continue
            for _ in range(8):
                new = _new_function_name(n, rng, fstyle)
                if new != n and new not in taken:
                    fmap[n] = new
                    taken.add(new)
                    break
        if not any(c.name in fmap for c in ex.target):
            continue
        pmap: dict[str, dict[str, str]] = {}
        for t in ex.tools:
            props = ((t.get("parameters") or {}).get("properties") or {})
            ptaken = set(props)
            m: dict[str, str] = {}
            for p in props:
                if rng.random() >= params.param_prob or _mentioned(p, text) and not is_single_turn(ex):
                    continue
                for _ in range(4):
                    new = _new_param_name(p, rng, pstyle)
                    if new != p and new not in ptaken:
                        m[p] = new
                        ptaken.add(new)
                        break
            if m:
                pmap[t["name"]] = m
        tools, target = _rename_example(ex, fmap, pmap)
        out.append(_new(ex, "renamed", f"aug/renamed/{ex.id}", "aug_renamed", tools, ex.messages, target,
                        rename={"functions": fmap, "parameters": pmap}))
    return out


def unrename(ex: Example) -> Example:
    """Invert :func:`renamed` (tools and target back to the original names); used by the consistency test."""
    r = ex.meta["rename"]
    fmap = {new: old for old, new in r["functions"].items()}
    pmap = {r["functions"].get(f, f): {new: old for old, new in m.items()} for f, m in r["parameters"].items()}
    tools, target = _rename_example(ex, {}, pmap)
    tools, target = _rename_example(Example(ex.id, ex.source, ex.category, tools, ex.messages, target), fmap, {})
    meta = {k: v for k, v in ex.meta.items() if k != "rename"}
    return Example(ex.id, ex.source, ex.category, tools, copy.deepcopy(ex.messages), target, meta)


# ----------------------------------------------------------------------------------------------- distractors


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
        out.append(_new(ex, "distractors", f"aug/distractors/{ex.id}", "aug_distractors", tools, ex.messages,
                        ex.target, added_tools=[t["name"] for t in extra]))
    return out


# ------------------------------------------------------------------------------------------------- together

_FUNCS = {"no_call": no_call, "parallel": parallel, "renamed": renamed, "distractors": distractors}


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
    out = {name: _FUNCS[name](examples, getattr(cfg, name), seed)
           for name in AUGMENTATIONS if name in cfg.enabled and name != "no_call"}
    if "no_call" in cfg.enabled:
        src = no_call_sources if no_call_sources is not None else examples
        rates = None
        share = cfg.no_call.shares
        if share is not None:
            if isinstance(share, Mapping) and (unknown := sorted(set(share) - {e.source for e in src})):
                raise ValueError(f"no_call.source_share names {unknown}, not a source of the set "
                                 f"(its sources: {sorted({e.source for e in src})})")
            rates = source_rates(src, [*examples, *(e for v in out.values() for e in v)], share)
        out["no_call"] = no_call(src, cfg.no_call, seed, rates)
    return {name: out[name] for name in AUGMENTATIONS if name in out}


# -------------------------------------------------------------------------------------------------- checking


def _pa_value(v: Any, schema: dict | None) -> Any:
    """A value in bfcl's possible-answer form: dict params hold a list of possible values per key."""
    t = (schema or {}).get("type")
    if t == "dict" and isinstance(v, dict):
        return {k: [x] for k, x in v.items()}
    if t in ("array", "tuple") and ((schema or {}).get("items") or {}).get("type") == "dict" and isinstance(v, list):
        return [{k: [x] for k, x in d.items()} if isinstance(d, dict) else d for d in v]
    return v


def possible_answer(ex: Example) -> list[dict]:
    """bfcl's possible-answer list for ``ex.target``: ``[{func: {arg: [value]}}]`` (one accepted value each)."""
    by_name = {t.get("name"): t for t in ex.tools}
    out = []
    for c in ex.target:
        props = ((by_name.get(c.name) or {}).get("parameters") or {}).get("properties") or {}
        out.append({c.name: {k: [_pa_value(v, props.get(k))] for k, v in c.arguments.items()}})
    return out


def checker_category(ex: Example) -> str:
    """The category to hand bfcl's ``ast_checker`` (it dispatches on "parallel" / "multiple" substrings)."""
    if not ex.target:
        return "irrelevance"
    if len(ex.target) > 1:
        return "parallel" if len({c.name for c in ex.target}) == 1 else "parallel_multiple"
    return "simple" if len(ex.tools) == 1 else "multiple"


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "float": (float, int), "boolean": (bool,),
    "array": (list,), "tuple": (list,), "dict": (dict,), "any": (object,),
}


def _type_error(value: Any, schema: dict, where: str) -> str | None:
    """The declared type (one level of ``items`` deep, as bfcl checks) that ``value`` does not have, if any."""
    t = schema.get("type") if isinstance(schema, dict) else None
    want = _PY_TYPES.get(t or "")
    if want is None:
        return f"{where}: type {t!r} unknown to bfcl's checker"
    if isinstance(value, bool) and t in ("integer", "float"):
        return f"{where}: boolean for a {t}"
    if not isinstance(value, want):
        return f"{where}: {type(value).__name__} for a {t}"
    if t in ("array", "tuple"):
        items = schema.get("items")
        if not isinstance(items, dict) or "type" not in items:
            return f"{where}: array without an items type"
        for i, v in enumerate(value):
            if isinstance(v, (list, dict)):
                continue  # bfcl checks one level deep
            err = _type_error(v, items, f"{where}[{i}]")
            if err:
                return err
    return None


def check_example(ex: Example) -> tuple[bool, str]:
    """Does the rendered target round-trip through our parser and pass bfcl's checker against its own tools?

    bfcl's checker takes a value whose type differs from the schema's as a "variable" when the possible answer
    has that same type — and our possible answer is built from the target — so every argument's type is
    first checked against its schema here (what the checker does with a benchmark's own possible answers).
    A no-call target must render as text that BFCL decodes to no call.
    """
    text = render_target(ex.target)
    if not ex.target:
        return (decode_answer(text) == [], "" if decode_answer(text) == [] else "no-call text decodes to a call")
    try:
        parsed = parse_calls(text)
    except Exception as e:  # noqa: BLE001 - report, do not raise
        return False, f"target does not parse: {e}"
    if not calls_match(parsed, ex.target, ordered=True) or serialise_calls(parsed) != text:
        return False, "target does not round-trip through parse/serialise"
    by_name = {t.get("name"): t for t in ex.tools}
    for c in ex.target:
        props = (((by_name.get(c.name) or {}).get("parameters") or {}).get("properties")) or {}
        for k, v in c.arguments.items():
            if k in props:
                err = _type_error(v, props[k], f"{c.name}.{k}")
                if err:
                    return False, f"type: {err}"
    from ..eval.bfcl import ast_checker  # lazy: installs the model-config stand-in before importing bfcl_eval

    checker, Language = ast_checker()
    try:
        res = checker(ex.tools, [c.to_bfcl() for c in ex.target], possible_answer(ex), Language.PYTHON,
                      checker_category(ex), "itool-prompt")
    except Exception as e:  # noqa: BLE001 - a schema the checker cannot read is this example's failure
        return False, f"checker raised {type(e).__name__}: {e}"
    if res.get("valid"):
        return True, ""
    err = res.get("error")
    return False, f"{res.get('error_type', '')}: {err if isinstance(err, str) else json.dumps(err, default=str)[:300]}"
