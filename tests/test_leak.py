"""No training data leaks into what is scored.

Training: BFCL's unused sets (exec_*, sql) and the API-Bank training set (``load_default_training_set``).
Scored: every BFCL v3 category and API-Bank levels 1 and 2.  Checked: ids (ours and BFCL's own), exact
question text (user messages, whitespace/case/punctuation normalised) and near-duplicates (Jaccard
similarity of word 3-gram sets of the whole user text of an example, via an inverted index over 3-grams).
A failure lists the offending pairs: overlap is to be reported and handled, never hidden.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest

from itool_core.data.apibank import default_apibank_dir, load_apibank
from itool_core.data.bfcl import load_bfcl
from itool_core.data.loaders import load_default_training_set

pytestmark = pytest.mark.skipif(
    not (default_apibank_dir() / "lv3-api-train.json").exists(), reason="API-Bank data not found"
)

NEAR_DUPLICATE = 0.8


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _user_texts(e) -> list[str]:
    if "turns" in e.meta:  # multi-turn: the user messages of every turn
        return [m["content"] for turn in e.meta["turns"] for m in turn if m.get("role") == "user"]
    return [m["content"] for m in e.messages if m.get("role") == "user"]


def _question(e) -> str:
    return _norm(" ".join(_user_texts(e)))


def _grams(text: str) -> set[tuple[str, ...]]:
    w = text.split()
    if len(w) < 3:
        return {tuple(w)} if w else set()
    return {tuple(w[i : i + 3]) for i in range(len(w) - 2)}


@pytest.fixture(scope="module")
def sets():
    train, _ = load_default_training_set()
    scored = load_bfcl() + load_apibank(1) + load_apibank(2)
    assert train and scored
    return train, scored


def test_no_shared_ids(sets):
    train, scored = sets
    assert not {e.id for e in train} & {e.id for e in scored}
    bfcl_train = {e.meta["bfcl_id"] for e in train if "bfcl_id" in e.meta}
    bfcl_scored = {e.meta["bfcl_id"] for e in scored if "bfcl_id" in e.meta}
    assert bfcl_train and not bfcl_train & bfcl_scored


def test_no_shared_question_text(sets):
    train, scored = sets
    scored_msgs = defaultdict(set)
    for e in scored:
        for u in _user_texts(e):
            if _norm(u):
                scored_msgs[_norm(u)].add(e.id)
    shared = Counter()
    for e in train:
        for u in _user_texts(e):
            if _norm(u) in scored_msgs:
                shared[(e.id, _norm(u)[:80])] += 1
    assert not shared, f"training user messages found in scored sets: {list(shared)[:10]}"
    scored_q = {_question(e) for e in scored}
    assert not [e.id for e in train if _question(e) in scored_q]


def test_no_near_duplicates(sets):
    train, scored = sets
    index: dict[tuple, list[int]] = defaultdict(list)
    scored_grams = []
    for j, e in enumerate(scored):
        g = _grams(_question(e))
        scored_grams.append(g)
        for x in g:
            index[x].append(j)
    best = (0.0, "", "")
    offenders = []
    for e in train:
        g = _grams(_question(e))
        if not g:
            continue
        shared = Counter(j for x in g for j in index.get(x, ()))
        for j, inter in shared.items():
            jac = inter / (len(g) + len(scored_grams[j]) - inter)
            if jac > best[0]:
                best = (jac, e.id, scored[j].id)
            if jac >= NEAR_DUPLICATE:
                offenders.append((round(jac, 3), e.id, scored[j].id))
    print(f"max word-3-gram Jaccard training vs scored: {best[0]:.3f} ({best[1]} ~ {best[2]})")
    assert not offenders, sorted(offenders, reverse=True)[:20]
