"""Search tree, PUCT selection (Eq. 5) and the backup of Eq. 8–9.

Notation of the paper (§4.3):

* a node is a state s = (prompt, steps so far); the edge (s, a) into a child s' carries the step a;
* ``R(s) = O(s) + C(s)``: outcome correctness + self-evaluation confidence of the state (Eq. 6–7);
  the edge reward is ``r(s, a) = R(s') − R(s)`` so a step is credited with the change it makes;
* selection by PUCT (Eq. 5): ``Q(s,a) + c · p(a|s) · sqrt(N(s)) / (1 + N(s'))``, with the prior
  ``p(a|s) = exp(mean log-prob of the step's tokens)`` (length-normalised, so long calls are not penalised);
* backup (Eq. 8–9): ``Q(s,a) ← r(s,a) + γ · V(s')`` and ``V(s) ← Σ_a N(s') Q(s,a) / Σ_a N(s')``
  over the visited children; a leaf's V comes from its rollout (see ``search.py``), a terminal's V is 0.

Nodes keep the step's token ids exactly as generated, so a preference pair mined from the tree is exactly
what the search saw (docs/design.md#making-the-search-fast).

Each equation is one function: :func:`puct_score` (Eq. 5), :func:`q_value` (Eq. 8), :func:`state_value`
(Eq. 9); R, C and r are in ``reward.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    id: int
    parent: Node | None
    step_text: str = ""
    step_ids: tuple[int, ...] = ()
    prior: float = 1.0  # p(a|s)
    terminal: bool = False
    depth: int = 0
    R: float = 0.0  # state reward O + C
    O: float = 0.0  # noqa: E741  (the paper's name) outcome part
    C: float = 0.0  # self-evaluation part
    r: float = 0.0  # edge reward R(s') − R(s)
    N: int = 0
    Q: float = 0.0
    V: float = 0.0
    children: list[Node] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def expanded(self) -> bool:
        return bool(self.children)

    def path(self) -> list[Node]:
        """Root … self."""
        out: list[Node] = []
        n: Node | None = self
        while n is not None:
            out.append(n)
            n = n.parent
        return out[::-1]

    def answer_text(self) -> str:
        return "".join(n.step_text for n in self.path()[1:])

    def answer_ids(self) -> list[int]:
        return [t for n in self.path()[1:] for t in n.step_ids]

    def walk(self) -> Iterator[Node]:
        yield self
        for c in self.children:
            yield from c.walk()


class Tree:
    """One search tree over the answer to one example."""

    def __init__(self, example_id: str, prompt: str, prompt_ids: list[int], root_reward: float = 0.0):
        self.example_id = example_id
        self.prompt = prompt
        self.prompt_ids = list(prompt_ids)
        self._next_id = 1
        self.root = Node(0, None, R=root_reward)

    def add_child(
        self, parent: Node, step_text: str, step_ids: tuple[int, ...] | list[int], prior: float, terminal: bool
    ) -> Node:
        child = Node(self._next_id, parent, step_text, tuple(step_ids), prior, terminal, parent.depth + 1)
        self._next_id += 1
        parent.children.append(child)
        return child

    def nodes(self) -> Iterator[Node]:
        return self.root.walk()

    def to_json(self) -> dict[str, Any]:
        def node(n: Node) -> dict[str, Any]:
            return {
                "id": n.id,
                "step": n.step_text,
                "prior": round(n.prior, 6),
                "terminal": n.terminal,
                "R": round(n.R, 6),
                "O": round(n.O, 6),
                "C": round(n.C, 6),
                "r": round(n.r, 6),
                "N": n.N,
                "Q": round(n.Q, 6),
                "V": round(n.V, 6),
                **({"info": n.info} if n.info else {}),
                "children": [node(c) for c in n.children],
            }

        return {"example_id": self.example_id, "prompt": self.prompt, "root": node(self.root)}


def puct_score(parent: Node, child: Node, c_puct: float) -> float:
    """Eq. 5: ``Q(s,a) + c · p(a|s) · sqrt(N(s)) / (1 + N(s'))`` — the selection score of the edge into ``child``.

    The first term exploits what the backups found; the second explores, in proportion to the policy's prior
    for the step and shrinking as the child is visited, so an unvisited child with a high prior is tried early."""
    return child.Q + c_puct * child.prior * math.sqrt(parent.N) / (1 + child.N)


def select_child(parent: Node, c_puct: float) -> Node:
    # max() keeps the first of equal scores: ties go to the earlier (generation-order) child, deterministically
    return max(parent.children, key=lambda ch: puct_score(parent, ch, c_puct))


def select_leaf(root: Node, c_puct: float, max_depth: int) -> Node:
    """Descend by PUCT until a node that is unexpanded, terminal, or at the depth limit."""
    node = root
    while node.expanded and not node.terminal and node.depth < max_depth:
        node = select_child(node, c_puct)
    return node


def q_value(edge_reward: float, child_value: float, gamma: float) -> float:
    """Eq. 8: ``Q(s,a) = r(s,a) + γ · V(s')`` — the step's own reward plus the discounted value of where it leads.

    The edge reward is the change of the state reward (``reward.edge_reward``), so a step is credited with what
    it adds, and the discount makes a correct answer reached in fewer steps worth more."""
    return edge_reward + gamma * child_value


def state_value(children: Iterable[Node]) -> float:
    """Eq. 9: ``V(s) = Σ N(s') · Q(s,a) / Σ N(s')`` over the visited children (the visit-weighted mean of their Q).

    Weighting by visits makes V follow the children PUCT keeps choosing, i.e. the value of the best line of
    play as the search sees it, rather than the plain mean over everything tried (the authors' release sums
    rewards up the path instead; docs/design.md#the-authors-release-differs-from-the-paper)."""
    visited = [c for c in children if c.N > 0]
    total = sum(c.N for c in visited)
    return sum(c.N * c.Q for c in visited) / total


def backup(leaf: Node, leaf_value: float, gamma: float) -> None:
    """Eq. 8–9 along the path from ``leaf`` to the root.

    The leaf gets one more visit and ``V = leaf_value`` (a running mean over its visits); then for each
    ancestor s with child s' on the path: :func:`q_value` for the edge into s', one more visit of s, and
    :func:`state_value` of s.
    """
    leaf.N += 1
    leaf.V = leaf_value if leaf.N == 1 else leaf.V + (leaf_value - leaf.V) / leaf.N
    child = leaf
    node = leaf.parent
    while node is not None:
        child.Q = q_value(child.r, child.V, gamma)
        node.N += 1
        node.V = state_value(node.children)
        child = node
        node = node.parent
