"""Lock-step batched step-level MCTS (§4.3, Eq. 5–9) over many trees at once.

One *round* advances every active tree by one simulation:

1. **select** — each tree descends by PUCT (Eq. 5) to a leaf (``tree.select_leaf``);
2. **expand** — all leaves go to the policy in ONE ``propose`` call, k candidate next steps each (sampled,
   deduplicated by text), with their mean token log-prob → prior ``p = exp(mean log-prob)``;
3. **reward** — O(s) for each new node from the ground truth (``reward.Outcome``), C(s) for ALL new nodes in
   ONE ``confidence`` call (the policy's P("correct") under an evaluation prompt), ``R = O + C``,
   ``r(s,a) = R(s') − R(s)`` (Eq. 6–7);
4. **roll out** — every new non-terminal node is continued to a terminal state in ONE ``rollout`` call; the
   rollout is split into steps and scored with O only (the truth is known; self-evaluating every rollout step
   would double the cost), giving the leaf value ``V(s') = Σ_t γ^t (O(s_{t+1}) − O(s_t))``; a terminal
   node's V is 0 (its ±1 outcome is already in its edge reward);
5. **back up** — Eq. 8–9 from each new node to its root (``tree.backup``).

Every new child is rolled out and backed up, so all siblings get a Q at once and every expanded node can
yield a preference pair.  Batching across trees (as AlphaMath / Super_MARIO do) turns k·T small generate
calls per round into three large ones; MCTS-DPO's one-generate-per-child loop is what ``bench/mcts_speed.py``
compares against (``search_sequential``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..config import MCTSConfig
from .reward import edge_reward, state_reward
from .steps import split_steps
from .tree import Node, Tree, backup, select_leaf


@dataclass(frozen=True)
class Candidate:
    """One proposed next step, as generated."""

    text: str
    token_ids: tuple[int, ...]
    mean_logprob: float
    terminal: bool


@dataclass(frozen=True)
class State:
    """What the policy sees of a node: the tree's prompt and the steps taken so far."""

    tree: Tree
    node: Node

    @property
    def prompt_ids(self) -> list[int]:
        return self.tree.prompt_ids + self.node.answer_ids()

    @property
    def answer_text(self) -> str:
        return self.node.answer_text()


class SearchPolicy(Protocol):
    def propose(self, states: Sequence[State], k: int, seed: int) -> list[list[Candidate]]:
        """k sampled next steps for each state (one batched call)."""

    def rollout(self, states: Sequence[State], seed: int) -> list[str]:
        """A continuation of each state's answer to the end (one batched call)."""

    def confidence(self, states: Sequence[State]) -> list[float]:
        """P(the answer so far is correct) ∈ [0, 1] for each state (one batched forward pass)."""


@dataclass
class SearchStats:
    rounds: int = 0
    propose_calls: int = 0
    confidence_calls: int = 0
    rollout_calls: int = 0
    nodes: int = 0
    generated_tokens: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"propose": 0.0, "confidence": 0.0, "rollout": 0.0})


@dataclass
class SearchItem:
    """A tree plus what scores its states."""

    tree: Tree
    outcome: Callable[[str, bool], float]


def rollout_value(node: Node, continuation: str, outcome: Callable[[str, bool], float], gamma: float) -> float:
    """V(s') from a rollout: Σ_t γ^t (O(s_{t+1}) − O(s_t)), starting from the leaf's own O."""
    prefix = node.answer_text()
    steps = split_steps(continuation, prefix)
    if not steps:  # the policy stopped here: the answer is judged as it stands, as evaluation would
        return outcome(prefix, True) - node.O
    value, prev, text = 0.0, node.O, prefix
    for t, (step, terminal) in enumerate(steps):
        text += step
        o = outcome(text, terminal or t == len(steps) - 1)
        value += gamma**t * (o - prev)
        prev = o
    return value


def _reward(node: Node, p_correct: float, confidence_weight: float) -> None:
    """Set C and R = O + C (Eq. 6–7) of a node whose O is known, from the policy's P("correct")."""
    node.C = confidence_weight * p_correct
    node.R = state_reward(node.O, node.C)


def _expand(
    items: list[SearchItem], leaves: list[tuple[int, Node]], cands: list[list[Candidate]]
) -> list[tuple[int, Node]]:
    new: list[tuple[int, Node]] = []
    for (i, leaf), cs in zip(leaves, cands):
        tree, seen = items[i].tree, set()
        for c in cs:
            if not c.text or c.text in seen:
                continue
            seen.add(c.text)
            child = tree.add_child(leaf, c.text, c.token_ids, math.exp(c.mean_logprob), c.terminal)
            child.O = items[i].outcome(child.answer_text(), child.terminal)
            new.append((i, child))
    return new


def search_lockstep(
    items: list[SearchItem], policy: SearchPolicy, cfg: MCTSConfig, stats: SearchStats | None = None
) -> SearchStats:
    """Run ``cfg.simulations`` lock-step rounds over all trees; the trees are filled in place."""
    stats = stats or SearchStats()

    def timed(kind: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        stats.seconds[kind] += time.perf_counter() - t0
        return out

    roots = [State(it.tree, it.tree.root) for it in items if it.tree.root.N == 0]
    if roots:
        confs = timed("confidence", policy.confidence, roots)
        stats.confidence_calls += 1
        for st, c in zip(roots, confs):
            _reward(st.node, c, cfg.confidence_weight)
    for rnd in range(cfg.simulations):
        leaves: list[tuple[int, Node]] = []
        for i, it in enumerate(items):
            leaf = select_leaf(it.tree.root, cfg.c_puct, cfg.max_depth)
            if leaf.terminal or leaf.depth >= cfg.max_depth:
                backup(leaf, 0.0 if leaf.terminal else leaf.V, cfg.gamma)  # revisit: nothing to expand
                continue
            leaves.append((i, leaf))
        if not leaves:
            break
        seed = cfg.seed * 1_000_003 + rnd
        cands = timed("propose", policy.propose, [State(items[i].tree, n) for i, n in leaves], cfg.k, seed)
        stats.propose_calls += 1
        stats.generated_tokens += sum(len(c.token_ids) for cs in cands for c in cs)
        new = _expand(items, leaves, cands)
        if not new:
            # every sample was empty/duplicate: count the visit so selection moves on
            for _, leaf in leaves:
                backup(leaf, leaf.V, cfg.gamma)
            continue
        confs = timed("confidence", policy.confidence, [State(items[i].tree, n) for i, n in new])
        stats.confidence_calls += 1
        for (_, node), c in zip(new, confs):
            _reward(node, c, cfg.confidence_weight)
            assert node.parent is not None  # a new child of a leaf
            node.r = edge_reward(node.R, node.parent.R)
        open_nodes = [(i, n) for i, n in new if not n.terminal]
        values = {n.id: 0.0 for _, n in new}
        if open_nodes:
            conts = timed("rollout", policy.rollout, [State(items[i].tree, n) for i, n in open_nodes], seed)
            stats.rollout_calls += 1
            for (i, node), cont in zip(open_nodes, conts):
                node.info["rollout"] = cont
                values[node.id] = rollout_value(node, cont, items[i].outcome, cfg.gamma)
        for _, node in new:
            backup(node, values[node.id], cfg.gamma)
        stats.nodes += len(new)
        stats.rounds += 1
    return stats


def search_sequential(items: list[SearchItem], policy: SearchPolicy, cfg: MCTSConfig) -> SearchStats:
    """The MCTS-DPO way: one tree at a time, and one propose / confidence / rollout call per child.

    Same algorithm and seeds as :func:`search_lockstep`; it exists as the baseline of ``bench/mcts_speed.py``.
    """
    stats = SearchStats()

    class OneAtATime:
        def propose(self, states, k, seed):
            out = []
            for st in states:
                cs = []
                for j in range(k):
                    cs += policy.propose([st], 1, seed * 31 + j)[0]
                out.append(cs)
            return out

        def rollout(self, states, seed):
            return [policy.rollout([st], seed)[0] for st in states]

        def confidence(self, states):
            return [policy.confidence([st])[0] for st in states]

    for it in items:
        search_lockstep([it], OneAtATime(), cfg, stats)
    return stats
