"""Each equation of the paper is one named function; here each is checked against values computed by hand.

difficulty score (§4.2) · perplexity h (Eq. 4) · PUCT (Eq. 5) · O, C and R = O + C (Eq. 6–7) · the edge
reward r = R(s') − R(s) · Q = r + γV (Eq. 8) · V = ΣN·Q / ΣN (Eq. 9).  The preference loss (Eq. 10) is tested
with the trainer (tests/test_preference.py).
"""

import math

import pytest

from itool_core.calls import ToolCall
from itool_core.data.records import Example
from itool_core.data.replay import perplexity
from itool_core.data.split import difficulty_score, difficulty_scores, percentile_ranks
from itool_core.mcts.reward import Outcome, edge_reward, self_evaluation, state_reward
from itool_core.mcts.search import MCTSConfig, SearchItem, search_lockstep
from itool_core.mcts.tree import Tree, backup, puct_score, q_value, state_value

# ------------------------------------------------------------------------------------ difficulty (§4.2)


def test_difficulty_score_is_the_mean_of_the_three_percentiles():
    assert difficulty_score([0.25, 0.5, 0.75]) == pytest.approx(0.5)
    assert difficulty_score([1 / 6, 0.5, 5 / 6]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        difficulty_score([0.5, 0.5])


def _ex(i: str, n_tools: int, n_calls: int) -> Example:
    tools = [
        {"name": f"f{k}", "description": "", "parameters": {"type": "dict", "properties": {}}} for k in range(n_tools)
    ]
    return Example(i, "s", "c", tools, [{"role": "user", "content": "q"}], [ToolCall("f0")] * n_calls)


def test_difficulty_scores_by_hand_on_three_examples():
    # n_tools 1, 2, 2 → mid-rank percentiles (1 − .5)/3, (2.5 − .5)/3, (2.5 − .5)/3 = 1/6, 2/3, 2/3;
    # tools_chars grows with n_tools (same ties); n_calls 0, 1, 2 → 1/6, 1/2, 5/6.
    exs = [_ex("a", 1, 0), _ex("b", 2, 1), _ex("c", 2, 2)]
    assert percentile_ranks([1, 2, 2]) == pytest.approx([1 / 6, 2 / 3, 2 / 3])
    assert difficulty_scores(exs) == pytest.approx(
        [(1 / 6 + 1 / 6 + 1 / 6) / 3, (2 / 3 + 2 / 3 + 1 / 2) / 3, (2 / 3 + 2 / 3 + 5 / 6) / 3]
    )


# ---------------------------------------------------------------------------------- perplexity (Eq. 4)


def test_perplexity_is_the_inverse_geometric_mean_token_probability():
    # P(y) = 0.5 · 0.25 = 1/8 over n = 2 tokens → h = (1/8)^(−1/2) = √8
    assert perplexity([math.log(0.5), math.log(0.25)]) == pytest.approx(math.sqrt(8))
    assert perplexity([0.0, 0.0, 0.0]) == 1.0  # every token certain
    with pytest.raises(ValueError):
        perplexity([])


def test_perplexity_of_a_tensor_equals_that_of_its_floats():
    torch = pytest.importorskip("torch")
    lps = [math.log(0.9), math.log(0.3), math.log(0.6)]
    assert perplexity(torch.tensor(lps)) == pytest.approx(perplexity(lps), rel=1e-6)
    assert perplexity(lps) == pytest.approx((0.9 * 0.3 * 0.6) ** (-1 / 3))


# ---------------------------------------------------------------------------------------- PUCT (Eq. 5)


def test_puct_score_by_hand():
    t = Tree("x", "P", [1])
    t.root.N = 4
    child = t.add_child(t.root, "a", (1,), prior=0.5, terminal=False)
    child.N, child.Q = 1, 0.5
    # 0.5 + 2 · 0.5 · √4 / (1 + 1) = 1.5
    assert puct_score(t.root, child, 2.0) == pytest.approx(1.5)
    child.N = 0  # unvisited: the whole exploration bonus 2 · 0.5 · 2 / 1 = 2
    assert puct_score(t.root, child, 2.0) == pytest.approx(2.5)


# ------------------------------------------------------------------------------------ O, C, R (Eq. 6–7)


def test_outcome_by_hand():
    gold = [ToolCall("f", {"a": 1}), ToolCall("g", {"b": 2})]
    o = Outcome(gold, partial_weight=0.5)
    assert o("", False) == 0.0
    assert o("[f(a=1),", False) == pytest.approx(0.25)  # 0.5 · 1 correct / 2 gold
    assert o("[g(b=2), f(a=1)]", True) == 1.0  # order-insensitive at the end
    assert o("[f(a=2),", False) == -1.0  # a wrong call cannot be undone
    assert o("[f(a=1)]", True) == -1.0  # closed too early
    assert o("No function fits.", True) == -1.0  # abstained, but a call was right
    abstain = Outcome([], partial_weight=0.5)
    assert abstain("No function fits.", True) == 1.0
    assert abstain("No function", False) == 0.5


def test_self_evaluation_normalises_over_the_two_answer_tokens():
    assert self_evaluation(math.log(0.2), math.log(0.6)) == pytest.approx(0.75)  # 0.6 / (0.2 + 0.6)
    assert self_evaluation(math.log(0.3), math.log(0.3)) == pytest.approx(0.5)
    assert self_evaluation(-1e6, -1e6) == 0.5  # both underflow: no opinion


def test_state_and_edge_reward_by_hand():
    assert state_reward(0.25, 0.75) == 1.0  # R = O + C
    assert state_reward(-1.0, 0.3) == pytest.approx(-0.7)
    assert edge_reward(1.0, 0.4) == pytest.approx(0.6)  # r = R(s') − R(s)
    assert edge_reward(-0.7, 0.4) == pytest.approx(-1.1)


# ------------------------------------------------------------------------------------ Q and V (Eq. 8–9)


def test_q_value_and_state_value_by_hand():
    assert q_value(0.6, 0.5, 0.9) == pytest.approx(1.05)  # 0.6 + 0.9 · 0.5
    t = Tree("x", "P", [1])
    a, b, c = (t.add_child(t.root, s, (1,), 1.0, False) for s in "abc")
    (a.N, a.Q), (b.N, b.Q), (c.N, c.Q) = (1, 1.0), (3, 0.2), (0, 99.0)
    assert state_value(t.root.children) == pytest.approx((1 * 1.0 + 3 * 0.2) / 4)  # unvisited c not counted


def test_backup_applies_eq_8_and_9():
    t = Tree("x", "P", [1])
    a = t.add_child(t.root, "a", (1,), 1.0, False)
    b = t.add_child(t.root, "b", (2,), 1.0, False)
    a.r, b.r = 0.5, -0.5
    backup(a, 1.0, 0.5)  # Q(a) = 0.5 + 0.5 · 1.0 = 1.0 ; V(root) = 1.0
    backup(b, 0.0, 0.5)  # Q(b) = −0.5 ; V(root) = (1 · 1.0 + 1 · −0.5) / 2
    assert (a.Q, b.Q) == (pytest.approx(1.0), pytest.approx(-0.5))
    assert t.root.V == pytest.approx(0.25) and t.root.N == 2


# ------------------------------------------------------------------------------ the search uses them all


class _OneStep:
    """A policy proposing one terminal step with a fixed P("correct")."""

    def propose(self, states, k, seed):
        from itool_core.mcts.search import Candidate

        return [[Candidate("[f(a=1)]", (1,), math.log(0.5), True)] for _ in states]

    def rollout(self, states, seed):
        return ["" for _ in states]

    def confidence(self, states):
        return [0.25 for _ in states]


def test_search_rewards_are_the_equation_functions():
    tree = Tree("x", "P", [1])
    item = SearchItem(tree, Outcome([ToolCall("f", {"a": 1})]))
    search_lockstep([item], _OneStep(), MCTSConfig(simulations=1, k=1, confidence_weight=2.0, gamma=0.9))
    (child,) = tree.root.children
    assert tree.root.C == pytest.approx(0.5) and tree.root.R == pytest.approx(state_reward(0.0, 0.5))
    assert child.O == 1.0 and child.C == pytest.approx(2.0 * 0.25)
    assert child.R == pytest.approx(state_reward(1.0, 0.5))
    assert child.r == pytest.approx(edge_reward(child.R, tree.root.R))
    assert child.prior == pytest.approx(0.5)
    assert child.Q == pytest.approx(q_value(child.r, 0.0, 0.9))  # a terminal's V is 0
