"""Step-level MCTS: steps, PUCT, backup arithmetic, pair extraction, and a toy environment with a known optimum."""

import math
import random

import pytest

from itool_core.calls import ToolCall
from itool_core.mcts.pairs import mine_pairs, word_overlap
from itool_core.mcts.reward import Outcome
from itool_core.mcts.search import Candidate, MCTSConfig, SearchItem, rollout_value, search_lockstep, search_sequential
from itool_core.mcts.steps import first_step_end, split_steps
from itool_core.mcts.tree import Tree, backup, puct_score, select_child, select_leaf

# ------------------------------------------------------------------------------------------------ steps


def test_split_steps_at_top_level_commas_between_calls():
    a = "[f(a=1, b='x),y'), g(c=[1, 2], d={'k': (3, 4)}), h()]"
    steps = split_steps(a)
    assert steps == [("[f(a=1, b='x),y'),", False), (" g(c=[1, 2], d={'k': (3, 4)}),", False), (" h()]", True)]
    assert "".join(s for s, _ in steps) == a
    assert split_steps("None of the functions fit. Sorry!") == [
        ("None of the functions fit.", False),
        (" Sorry!", True),
    ]
    assert split_steps("[f(a=1)") == [("[f(a=1)", True)]  # unfinished: generation ended there


def test_first_step_end_with_prefix_and_escapes():
    assert first_step_end(" g(s='a\\'),b')]", "[f(),").index == len(" g(s='a\\'),b')]")
    assert first_step_end(" g(s='a", "[f(),") is None
    assert first_step_end("[f(),").terminal is False


# ------------------------------------------------------------------------------------------ PUCT + backup


def _node(tree, parent, text, prior=0.5, terminal=False):
    return tree.add_child(parent, text, tuple(ord(ch) for ch in text), prior, terminal)


def test_puct_picks_expected_child():
    t = Tree("x", "P", [1])
    root = t.root
    root.N = 10
    a = _node(t, root, "a", prior=0.9)
    b = _node(t, root, "b", prior=0.1)
    a.N, a.Q = 6, 0.1
    b.N, b.Q = 3, 0.3
    # a: 0.1 + 1.0*0.9*sqrt(10)/7 = 0.5066 ; b: 0.3 + 1.0*0.1*sqrt(10)/4 = 0.3791
    assert puct_score(root, a, 1.0) == pytest.approx(0.1 + 0.9 * math.sqrt(10) / 7)
    assert select_child(root, 1.0) is a
    # with little exploration, exploitation wins
    assert select_child(root, 0.1) is b
    # an unvisited child with a decent prior gets tried
    c = _node(t, root, "c", prior=0.5)
    assert select_child(root, 1.0) is c
    assert select_leaf(root, 1.0, max_depth=5) is c


def test_backup_arithmetic_matches_hand_computation():
    gamma = 0.5
    t = Tree("x", "P", [1])
    root = t.root
    a = _node(t, root, "a")
    b = _node(t, root, "b")
    a.r, b.r = 0.4, -0.2
    a1 = _node(t, a, "a1")
    a1.r = 1.0
    # 1) back up b with leaf value 0.6: Q(b) = -0.2 + 0.5*0.6 = 0.1 ; V(root) = 0.1
    backup(b, 0.6, gamma)
    assert (b.N, b.V, b.Q, root.N, root.V) == (1, 0.6, pytest.approx(0.1), 1, pytest.approx(0.1))
    # 2) back up a with leaf value 0.2: Q(a) = 0.4 + 0.1 = 0.5 ; V(root) = (1*0.5 + 1*0.1)/2 = 0.3
    backup(a, 0.2, gamma)
    assert a.Q == pytest.approx(0.5) and root.V == pytest.approx(0.3) and root.N == 2
    # 3) back up a1 (terminal, V=0): Q(a1) = 1.0 ; V(a) = 1.0 (only visited child) ; Q(a) = 0.4 + 0.5*1.0 = 0.9
    #    V(root) = (N(a)=2 * 0.9 + N(b)=1 * 0.1) / 3 = 1.9/3
    backup(a1, 0.0, gamma)
    assert a1.Q == pytest.approx(1.0) and a.V == pytest.approx(1.0) and a.N == 2
    assert a.Q == pytest.approx(0.9)
    assert root.V == pytest.approx((2 * 0.9 + 1 * 0.1) / 3) and root.N == 3


# -------------------------------------------------------------------------------------------------- pairs


def test_pair_extraction_on_hand_built_tree():
    t = Tree("ex1", "PROMPT:", [7, 8])
    root = t.root
    a = _node(t, root, "[f(x=1),")
    b = _node(t, root, "[f(x=2),")
    c = _node(t, root, "[h()]", terminal=True)
    for n, q in ((a, 0.2), (b, 0.9), (c, -0.8)):
        n.N, n.Q = 1, q
    b1 = _node(t, b, " g(y=1)]", terminal=True)
    b2 = _node(t, b, " g(y=1.0)]", terminal=True)  # Q gap below the threshold: no pair
    b1.N, b1.Q, b2.N, b2.Q = 1, 1.0, 1, 0.95
    a1 = _node(t, a, " g(y=0)]", terminal=True)
    a2 = _node(t, a, " g(y=2)]", terminal=True)
    a1.N, a1.Q, a2.N, a2.Q = 1, -0.1, 1, -0.9  # chosen Q below -0.3? no: -0.1 ≥ -0.3 → kept
    _node(t, a, " never visited]", terminal=True)  # N = 0: ignored
    pairs = mine_pairs(t, MCTSConfig())
    got = [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs]
    assert got == [
        ("PROMPT:", "[f(x=2),", "[h()]"),  # gap 1.7
        ("PROMPT:[f(x=1),", " g(y=0)]", " g(y=2)]"),  # gap 0.8
    ]
    first, second = pairs
    assert first["prompt_ids"] == [7, 8] and first["chosen_ids"] == [ord(ch) for ch in "[f(x=2),"]
    assert first["is_final_step"] is False and first["rejected_terminal"] is True
    assert second["prompt_ids"] == [7, 8] + [ord(ch) for ch in "[f(x=1),"] and second["is_final_step"] is True
    assert second["depth"] == 1
    # filters are configurable
    assert len(mine_pairs(t, MCTSConfig(min_q_gap=1.0))) == 1
    assert len(mine_pairs(t, MCTSConfig(min_chosen_q=0.0))) == 1
    assert len(mine_pairs(t, MCTSConfig(max_pairs_per_tree=1))) == 1
    assert word_overlap("a b c", "a b c") == 1.0


# ---------------------------------------------------------------------------------------------- outcome


def test_outcome_partial_credit_and_terminal():
    o = Outcome([ToolCall("f", {"x": 2}), ToolCall("g", {"y": 1})], partial_weight=0.5)
    assert o("", False) == 0.0
    assert o("[g(y=1),", False) == pytest.approx(0.25)  # order-insensitive prefix credit
    assert o("[f(x=1),", False) == -1.0
    assert o("[f(x=2), g(y=1)]", True) == 1.0
    assert o("[f(x=2)]", True) == -1.0
    assert o("No function fits.", True) == -1.0
    assert Outcome([])("No function fits.", True) == 1.0
    assert Outcome([])("[f(x=2)]", True) == -1.0


# ---------------------------------------------------------------------------------------- toy environment

GOLD = [ToolCall("f", {"x": 2}), ToolCall("g", {"y": 1})]
FIRST = {"[f(x=1),": 0.5, "[f(x=2),": 0.2, "[f(x=3),": 0.2, "[h()]": 0.1}
SECOND = {" g(y=0)]": 0.6, " g(y=1)]": 0.3, " g(y=1), h()]": 0.1}


class ToyPolicy:
    """A policy whose priors prefer wrong steps: only the search's values can find the right answer."""

    def __init__(self):
        self.calls = {"propose": 0, "rollout": 0, "confidence": 0}

    def _dist(self, answer):
        return FIRST if not answer else SECOND

    def propose(self, states, k, seed):
        self.calls["propose"] += 1
        out = []
        for j, st in enumerate(states):
            rng = random.Random(seed * 7919 + j)
            dist = self._dist(st.answer_text)
            # weighted sampling without replacement (an engine's k samples after deduplication)
            pool, texts = dict(dist), []
            while pool and len(texts) < k:
                t = rng.choices(list(pool), weights=list(pool.values()))[0]
                texts.append(t)
                del pool[t]
            out.append([Candidate(t, tuple(ord(ch) for ch in t), math.log(dist[t]), t.endswith("]")) for t in texts])
        return out

    def rollout(self, states, seed):
        self.calls["rollout"] += 1
        rng = random.Random(seed)
        return [rng.choices(list(SECOND), weights=list(SECOND.values()))[0] for _ in states]

    def confidence(self, states):
        self.calls["confidence"] += 1
        return [0.5 for _ in states]


def _toy_items(n):
    return [SearchItem(Tree(f"toy{i}", "Q:", [1]), Outcome(GOLD)) for i in range(n)]


def test_toy_environment_search_finds_the_known_optimum():
    items = _toy_items(3)
    policy = ToyPolicy()
    stats = search_lockstep(items, policy, MCTSConfig(simulations=30, k=4, seed=1))
    for it in items:
        root = it.tree.root
        # the priors favour "[f(x=1)," (0.5 vs 0.2), yet the values put the right first call on top
        assert {c.step_text for c in root.children} >= {"[f(x=1),", "[f(x=2),"}
        best = max((c for c in root.children if c.N), key=lambda c: c.Q)
        assert best.step_text == "[f(x=2),"
        assert " g(y=1)]" in {c.step_text for c in best.children}
        best2 = max((c for c in best.children if c.N), key=lambda c: c.Q)
        # Q = r = R(s') − R(s) = (1 + 0.5) − (0.25 + 0.5) for the correct terminal step (V = 0)
        assert best2.step_text == " g(y=1)]" and best2.Q == pytest.approx(0.75)
    # lock-step: one batched call of each kind per round for ALL trees
    assert policy.calls["propose"] == stats.propose_calls <= 30
    assert stats.rounds >= 3  # the toy tree (4 × 3 steps) is exhausted after a few rounds
    pairs = [p for it in items for p in mine_pairs(it.tree, MCTSConfig())]
    assert pairs and all(p["q_chosen"] > p["q_rejected"] for p in pairs)
    root_pairs = [p for p in pairs if p["depth"] == 0]
    assert all(p["chosen"] == "[f(x=2)," for p in root_pairs)


def test_sequential_baseline_builds_the_same_kind_of_tree_with_more_calls():
    items = _toy_items(2)
    policy = ToyPolicy()
    stats = search_sequential(items, policy, MCTSConfig(simulations=10, k=3, seed=1))
    assert policy.calls["propose"] > stats.rounds  # one call per child, not per round
    for it in items:
        best = max((c for c in it.tree.root.children if c.N), key=lambda c: c.Q)
        assert best.step_text == "[f(x=2),"


def test_search_is_deterministic_for_a_seed():
    def run(seed):
        items = _toy_items(2)
        search_lockstep(items, ToyPolicy(), MCTSConfig(simulations=12, k=3, seed=seed))
        return [it.tree.to_json() for it in items]

    assert run(5) == run(5)


def test_rollout_value_discounts_outcome_changes():
    t = Tree("x", "P", [1])
    n = _node(t, t.root, "[f(x=2),")
    o = Outcome(GOLD)
    n.O = o(n.answer_text(), False)  # 0.25
    # rollout finishes correctly in one step: V = γ^0 * (1 - 0.25)
    assert rollout_value(n, " g(y=1)]", o, 0.9) == pytest.approx(0.75)
    # two steps: first adds nothing wrong? " g(y=1)," → 0.5, then " h()]" → -1
    assert rollout_value(n, " g(y=1), h()]", o, 0.9) == pytest.approx((0.5 - 0.25) + 0.9 * (-1 - 0.5))
