"""``itool mine``: the hardest α % of a replay buffer → lock-step MCTS → preference pairs (Parquet + trees)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cmd_mine(args: argparse.Namespace) -> int:
    import torch

    from ..artifacts import read_table
    from ..calls import PromptStyle
    from ..data.replay import REPLAY_BUFFER, buffer_examples, select_hardest
    from ..engines import make_engine
    from .mine import mine
    from .policy import PolicyConfig
    from .search import MCTSConfig

    torch.set_num_threads(args.threads)
    rows = read_table(args.buffer, REPLAY_BUFFER).to_pylist()
    chosen = select_hardest(rows, args.alpha / 100.0, skip_hardest=args.skip_hardest / 100.0)
    if args.max_trees:
        chosen = chosen[: args.max_trees]
    examples = buffer_examples(chosen)
    engine = make_engine(args.engine, model=args.model, adapter=args.adapter, batch_size=args.batch_size)
    cfg = MCTSConfig(simulations=args.simulations, k=args.k, c_puct=args.c_puct, gamma=args.gamma,
                     max_depth=args.max_depth, seed=args.seed)
    pcfg = PolicyConfig(max_step_tokens=args.step_tokens, max_rollout_tokens=args.rollout_tokens,
                        temperature=args.temperature)
    out = Path(args.out)
    res = mine(engine, examples, out.parent / (out.stem + "_mining"), cfg, pcfg, PromptStyle(args.tools),
               trees_per_batch=args.trees_per_batch,
               callback=lambda ev, m: print(f"[mine] {m['trees_done']}/{len(examples)} trees, {m['pairs']} pairs, "
                                            f"{m['seconds']:.0f}s", flush=True))
    # the pairs file lands where the user asked; trees and mining.json stay beside it
    Path(res.pairs.path).replace(out)
    print(json.dumps({"pairs": str(out), "n_pairs": res.n_pairs, "n_trees": res.n_trees,
                      "trees_dir": res.trees_dir, "seconds": round(res.seconds, 1), **res.stats}, default=str))
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("mine", help="step-level MCTS on the hardest α%% of a replay buffer → preference pairs")
    p.add_argument("--model", required=True, help="policy: model name, folder or hub id")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder on top of --model")
    p.add_argument("--buffer", required=True, help="replay buffer Parquet (itool buffer refresh)")
    p.add_argument("--alpha", type=float, default=20.0, help="percent of the buffer to search (hardest by h)")
    p.add_argument("--skip-hardest", type=float, default=0.0,
                   help="percent of the hardest rows passed over before the α are taken (a band of h)")
    p.add_argument("--simulations", type=int, default=8)
    p.add_argument("--k", type=int, default=3, help="candidate steps per expansion")
    p.add_argument("--c-puct", type=float, default=1.0)
    p.add_argument("--gamma", type=float, default=0.9)
    p.add_argument("--max-depth", type=int, default=6)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--step-tokens", type=int, default=96)
    p.add_argument("--rollout-tokens", type=int, default=192)
    p.add_argument("--trees-per-batch", type=int, default=8)
    p.add_argument("--max-trees", type=int, default=None)
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tools", default="compact", choices=["json", "compact"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", required=True)
    p.set_defaults(func=_cmd_mine)
