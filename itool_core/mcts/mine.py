"""Mining preference pairs from a replay buffer: build trees, search them lock-step, extract pairs, write them.

This is step 4 of the method for one iteration: the hardest α % of the buffer (``data.replay.select_hardest``)
→ one tree per example → :func:`search.search_lockstep` in chunks of ``trees_per_batch`` (all trees of a chunk
advance together; the chunk size bounds memory and engine batch size) → :func:`pairs.mine_pairs` → a PAIRS
Parquet plus one JSON dump per tree for inspection.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts import ArtifactRef, atomic_write_json, write_table
from ..calls import PromptStyle, render_prompt
from ..config import MCTSConfig, PolicyConfig
from .pairs import PAIRS, mine_pairs
from .policy import EnginePolicy
from .reward import Outcome
from .search import SearchItem, SearchStats, search_lockstep
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


def build_items(
    examples: Sequence[Any],
    tokenizer,
    style: PromptStyle = PromptStyle(),
    partial_weight: float = 0.5,
    final_check_for: Callable[[Any], Callable | None] | None = None,
) -> list[SearchItem]:
    items = []
    for ex in examples:
        prompt = render_prompt(tokenizer, ex.tools, ex.messages, style)
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        check = final_check_for(ex) if final_check_for else None
        items.append(SearchItem(Tree(ex.id, prompt, ids), Outcome(ex.target, check, partial_weight)))
    return items


def mine(
    engine,
    examples: Sequence[Any],
    out_dir: str | Path,
    cfg: MCTSConfig = MCTSConfig(),
    policy_cfg: PolicyConfig = PolicyConfig(),
    style: PromptStyle = PromptStyle(),
    trees_per_batch: int | None = None,
    final_check_for: Callable[[Any], Callable | None] | None = None,
    callback: Callable[[str, dict], None] | None = None,
) -> MiningResult:
    """Search one tree per example (lock-step, ``trees_per_batch`` at a time; default ``cfg.trees_per_batch``)
    and write ``out_dir/pairs.parquet``, ``out_dir/trees/*.json`` and ``out_dir/mining.json``."""
    trees_per_batch = trees_per_batch or cfg.trees_per_batch
    out_dir = Path(out_dir)
    trees_dir = out_dir / "trees"
    trees_dir.mkdir(parents=True, exist_ok=True)
    policy = EnginePolicy(engine, {ex.id: ex for ex in examples}, policy_cfg)
    t0 = time.time()
    stats = SearchStats()
    rows: list[dict[str, Any]] = []
    for start in range(0, len(examples), trees_per_batch):
        chunk = list(examples[start : start + trees_per_batch])
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
            callback(
                "mcts_chunk",
                {
                    "trees_done": start + len(chunk),
                    "pairs": len(rows),
                    "generated_tokens": stats.generated_tokens,
                    "seconds": time.time() - t0,
                },
            )
    ref = write_table(rows, out_dir / "pairs.parquet", PAIRS)
    seconds = time.time() - t0
    summary = {
        "rounds": stats.rounds,
        "nodes": stats.nodes,
        "generated_tokens": stats.generated_tokens,
        "propose_calls": stats.propose_calls,
        "confidence_calls": stats.confidence_calls,
        "rollout_calls": stats.rollout_calls,
        "seconds_by_call": stats.seconds,
        "trees_per_min": 60 * len(examples) / seconds if seconds else 0.0,
    }
    atomic_write_json(
        out_dir / "mining.json",
        {
            "n_trees": len(examples),
            "n_pairs": len(rows),
            **summary,
            "config": asdict(cfg),
            "policy": asdict(policy_cfg),
        },
    )
    return MiningResult(ref, str(trees_dir), len(examples), len(rows), seconds, summary)


# ------------------------------------------------------------------------------------------------- shards


def shard_examples(examples: Sequence[Any], n_shards: int) -> list[list[Any]]:
    """Round-robin ``n_shards`` shards (the input is hardest-first, so every shard gets a share of the hardest);
    empty shards are dropped.  The shards fix the sampling seeds (:func:`mine`), so a runner that mines the same
    shards — threads, Dask workers, or one after the other — gets the same pairs."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    shards = [list(examples[i::n_shards]) for i in range(n_shards)]
    return [s for s in shards if s]


def merge_mined(pair_files: Sequence[str | Path], out_path: str | Path) -> ArtifactRef:
    """Concatenate the shards' pair tables, in shard order, into one PAIRS Parquet (written atomically)."""
    from ..artifacts import read_table

    rows: list[dict[str, Any]] = []
    for path in pair_files:
        rows += read_table(path, PAIRS).to_pylist()
    return write_table(rows, out_path, PAIRS)


def mine_sharded(
    engine,
    examples: Sequence[Any],
    out_dir: str | Path,
    cfg: MCTSConfig = MCTSConfig(),
    policy_cfg: PolicyConfig = PolicyConfig(),
    style: PromptStyle = PromptStyle(),
    callback: Callable[[str, dict], None] | None = None,
) -> MiningResult:
    """:func:`mine` on each of ``cfg.shards`` shards in turn (``out_dir/shard_<i>``), then the merged
    ``out_dir/pairs.parquet`` — the same pairs the flows get by mining the shards as parallel tasks."""
    out_dir = Path(out_dir)
    t0 = time.time()
    results = [
        mine(engine, shard, out_dir / f"shard_{i}", cfg, policy_cfg, style, callback=callback)
        for i, shard in enumerate(shard_examples(examples, cfg.shards))
    ]
    ref = merge_mined([r.pairs.path for r in results], out_dir / "pairs.parquet")
    stats = sum_stats([r.stats for r in results])
    return MiningResult(ref, str(out_dir), sum(r.n_trees for r in results), ref.rows, time.time() - t0, stats)


def sum_stats(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Add the numeric counters of several shards' mining summaries (rates are recomputed by the caller)."""
    out: dict[str, Any] = {}
    for st in stats:
        for k, v in st.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "trees_per_min":
                out[k] = out.get(k, 0) + v
    return out
