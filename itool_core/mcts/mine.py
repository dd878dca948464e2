"""Mining preference pairs from a replay buffer: build trees, search them lock-step, extract pairs, write them.

This is step 4 of the method for one iteration: the hardest α % of the buffer (``data.replay.select_hardest``)
→ one tree per example → :func:`search.search_lockstep` in chunks of ``trees_per_batch`` (all trees of a chunk
advance together; the chunk size bounds memory and engine batch size) → :func:`pairs.mine_pairs` → a PAIRS
Parquet plus one JSON dump per tree for inspection.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..artifacts import ArtifactRef, atomic_write_json, write_table
from ..calls import PromptStyle, render_prompt
from .pairs import PAIRS, mine_pairs
from .policy import EnginePolicy, PolicyConfig
from .reward import Outcome
from .search import MCTSConfig, SearchItem, SearchStats, search_lockstep
from .tree import Tree


@dataclass
class MiningResult:
    pairs: ArtifactRef
    trees_dir: str
    n_trees: int
    n_pairs: int
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)


def _tree_seed(base: int, example_id: str) -> int:
    # a per-example seed independent of chunking/sharding, so shards and runners agree
    return base * 1_000_003 + int(hashlib.sha256(example_id.encode()).hexdigest()[:8], 16)


def build_items(examples: Sequence[Any], tokenizer, style: PromptStyle = PromptStyle(),
                partial_weight: float = 0.5,
                final_check_for: Callable[[Any], Callable | None] | None = None) -> list[SearchItem]:
    items = []
    for ex in examples:
        prompt = render_prompt(tokenizer, ex.tools, ex.messages, style)
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        check = final_check_for(ex) if final_check_for else None
        items.append(SearchItem(Tree(ex.id, prompt, ids), Outcome(ex.target, check, partial_weight)))
    return items


def mine(engine, examples: Sequence[Any], out_dir: str | Path, cfg: MCTSConfig = MCTSConfig(),
         policy_cfg: PolicyConfig = PolicyConfig(), style: PromptStyle = PromptStyle(),
         trees_per_batch: int = 8, final_check_for: Callable[[Any], Callable | None] | None = None,
         callback: Callable[[str, dict], None] | None = None) -> MiningResult:
    out_dir = Path(out_dir)
    trees_dir = out_dir / "trees"
    trees_dir.mkdir(parents=True, exist_ok=True)
    policy = EnginePolicy(engine, {ex.id: ex for ex in examples}, policy_cfg)
    t0 = time.time()
    stats = SearchStats()
    rows: list[dict[str, Any]] = []
    for start in range(0, len(examples), trees_per_batch):
        chunk = list(examples[start:start + trees_per_batch])
        items = build_items(chunk, engine.tokenizer, style, cfg.partial_weight, final_check_for)
        # seeds are per round inside the search; make them depend on the chunk's first example too
        seed = _tree_seed(cfg.seed, chunk[0].id)
        search_lockstep(items, policy, MCTSConfig(**{**asdict(cfg), "seed": seed}), stats)
        for it in items:
            tree_pairs = mine_pairs(it.tree, cfg)
            rows += tree_pairs
            safe = hashlib.sha256(it.tree.example_id.encode()).hexdigest()[:16]
            atomic_write_json(trees_dir / f"{safe}.json", {**it.tree.to_json(), "pairs": len(tree_pairs)})
        if callback:
            callback("mcts_chunk", {"trees_done": start + len(chunk), "pairs": len(rows),
                                    "generated_tokens": stats.generated_tokens, "seconds": time.time() - t0})
    ref = write_table(rows, out_dir / "pairs.parquet", PAIRS)
    seconds = time.time() - t0
    summary = {"rounds": stats.rounds, "nodes": stats.nodes, "generated_tokens": stats.generated_tokens,
               "propose_calls": stats.propose_calls, "confidence_calls": stats.confidence_calls,
               "rollout_calls": stats.rollout_calls, "seconds_by_call": stats.seconds,
               "trees_per_min": 60 * len(examples) / seconds if seconds else 0.0}
    atomic_write_json(out_dir / "mining.json", {"n_trees": len(examples), "n_pairs": len(rows), **summary,
                                                "config": asdict(cfg), "policy": asdict(policy_cfg)})
    return MiningResult(ref, str(trees_dir), len(examples), len(rows), seconds, summary)
