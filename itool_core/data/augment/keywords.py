"""Is a tool related to a question?  Keyword overlap that picks no-call tools and distractors safely.

A tool handed to a question as a "no call" tool or a distractor must not be able to answer it, else the label
is wrong.  Names and descriptions are reduced to content keywords (stopwords dropped, plurals folded,
``camelCase``/``snake_case`` split) and compared with the question and the example's own functions.  The test
is conservative on purpose: a wrongly kept tool makes a wrong label, a wrongly rejected one only costs a
candidate.  Tools that could serve almost any question (:data:`GENERIC_TOOLS`) are never used.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from functools import lru_cache

from ..records import Example
from .common import question_text

#: Tools that can serve almost any question: never a no-call tool (the label would be wrong) nor a distractor.
GENERIC_TOOLS = ("ToolSearcher", "sql.execute")


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
    for name in names:
        out |= _content(_name_tokens(name))
    return out


def _pick_unrelated(
    rng: random.Random, pool: list[dict], ex: Example, k: int, max_shared: int, taken: set[str | None]
) -> list[dict]:
    qwords = _content(_words(question_text(ex)))
    own = _own_keywords(ex)
    cands = [t for t in pool if t["name"] not in taken and _unrelated(t, qwords, own, max_shared)]
    if len(cands) < k:
        return []
    return rng.sample(cands, k)
