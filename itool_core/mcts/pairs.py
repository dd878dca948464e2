"""Preference pairs from search trees (§4.3, last paragraph).

At every node with at least two visited children, the child with the highest Q is *chosen* and the one with
the lowest Q is *rejected*.  The pair's prompt is the tree's rendered prompt plus the steps so far, kept as
the token ids the search generated: ``prompt_ids + chosen_ids`` is exactly a sequence the policy produced, so
DPO optimises what the search saw (docs/design.md#making-the-search-fast).  The shared prefix stays in the
prompt, never inside chosen/rejected, so SimPO's length normalisation sees only the differing step.

Filters of the authors' release (configurable): drop pairs whose Q gap is below ``min_q_gap``, whose word
overlap exceeds ``max_overlap``, or whose chosen Q is below ``min_chosen_q``; keep at most
``max_pairs_per_tree`` pairs per tree, largest Q gap first.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ..schemas import TableSchema, register
from .search import MCTSConfig
from .tree import Tree

PAIRS = register(
    TableSchema(
        "pairs",
        1,
        pa.schema(
            [
                pa.field("example_id", pa.string(), nullable=False),
                pa.field("tree_id", pa.string(), nullable=False),
                pa.field("prompt", pa.string(), nullable=False),
                pa.field("chosen", pa.string(), nullable=False),
                pa.field("rejected", pa.string(), nullable=False),
                pa.field("prompt_ids", pa.list_(pa.int32()), nullable=False),
                pa.field("chosen_ids", pa.list_(pa.int32()), nullable=False),
                pa.field("rejected_ids", pa.list_(pa.int32()), nullable=False),
                pa.field("q_chosen", pa.float64(), nullable=False),
                pa.field("q_rejected", pa.float64(), nullable=False),
                pa.field("depth", pa.int32(), nullable=False),
                pa.field("chosen_terminal", pa.bool_(), nullable=False),
                pa.field("rejected_terminal", pa.bool_(), nullable=False),
                pa.field("is_final_step", pa.bool_(), nullable=False),
            ]
        ),
        doc="step-level preference pairs mined from MCTS trees",
    )
)


def word_overlap(a: str, b: str) -> float:
    """|words(a) ∩ words(b)| / |words(a) ∪ words(b)| (1.0 for two empty texts)."""
    wa, wb = set(a.split()), set(b.split())
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def mine_pairs(tree: Tree, cfg: MCTSConfig, tree_id: str | None = None) -> list[dict[str, Any]]:
    candidates = []
    for node in tree.nodes():
        visited = [c for c in node.children if c.N > 0]
        if len(visited) < 2:
            continue
        # max/min keep the first of equals: generation order breaks ties deterministically
        best = max(visited, key=lambda c: c.Q)
        worst = min(visited, key=lambda c: c.Q)
        if best is worst:
            continue
        if best.Q - worst.Q < cfg.min_q_gap:
            continue
        if best.Q < cfg.min_chosen_q:
            continue
        if word_overlap(best.step_text, worst.step_text) > cfg.max_overlap:
            continue
        candidates.append((node, best, worst))
    candidates.sort(key=lambda t: (-(t[1].Q - t[2].Q), t[0].depth, t[0].id))
    pairs = []
    for node, best, worst in candidates[: cfg.max_pairs_per_tree]:
        pairs.append(
            {
                "example_id": tree.example_id,
                "tree_id": tree_id or tree.example_id,
                "prompt": tree.prompt + node.answer_text(),
                "chosen": best.step_text,
                "rejected": worst.step_text,
                "prompt_ids": tree.prompt_ids + node.answer_ids(),
                "chosen_ids": list(best.step_ids),
                "rejected_ids": list(worst.step_ids),
                "q_chosen": best.Q,
                "q_rejected": worst.Q,
                "depth": node.depth,
                "chosen_terminal": best.terminal,
                "rejected_terminal": worst.terminal,
                "is_final_step": best.terminal,
            }
        )
    return pairs
