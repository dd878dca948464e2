"""``itool mine``: the hardest α of a replay buffer → lock-step MCTS (§4.3) → preference pairs (Parquet + trees).

Every search setting comes from the run config (``--profile`` / ``--config`` / ``--set``); the flags below are
shorthands for its keys, so ``itool mine`` searches exactly as the pipeline's mining stage does unless told.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..artifacts import check_output_path
from ..config import TOOLS_STYLES
from ..registry import ENGINES
from . import checks
from .buffer import add_selection_options, selection_overrides
from .common import add_config_options, resolve_config, tools_overrides


def _cmd_mine(args: argparse.Namespace) -> int:
    from ..data.replay import REPLAY_BUFFER

    checks.table("--buffer", args.buffer, REPLAY_BUFFER)
    checks.model("--model", args.model)
    checks.adapter("--adapter", args.adapter)
    checks.url("--engine-url", args.engine_url)
    check_output_path(args.out)
    import torch

    from ..artifacts import read_table
    from ..calls import PromptStyle
    from ..data.replay import buffer_examples, select_for_search
    from ..engines import closing
    from ..mcts.mine import mine
    from ..registry import ENGINES

    cfg = resolve_config(args, mine_overrides(args))
    torch.set_num_threads(args.threads)
    rows = read_table(args.buffer, REPLAY_BUFFER).to_pylist()
    chosen = select_for_search(rows, cfg.buffer)
    if args.max_trees:
        chosen = chosen[: args.max_trees]
    examples = buffer_examples(chosen)
    # the options the pipeline's mining passes any engine (engines.policy_engine), plus the adapter
    out = Path(args.out)
    engine = ENGINES.load(cfg.engine).build(
        args.model,
        adapter=args.adapter,
        batch_size=args.batch_size,
        num_threads=args.threads,
        reuse_prefixes=True,
        serve=cfg.engine_serve(),
        log_dir=out.parent / (out.stem + "_mining"),
    )
    with closing(engine):  # a served engine's server stops here, also on errors
        res = mine(
            engine,
            examples,
            out.parent / (out.stem + "_mining"),
            cfg.mcts,
            cfg.policy,
            PromptStyle(cfg.sft.tools_style),
            callback=lambda ev, m: print(
                f"[mine] {m['trees_done']}/{len(examples)} trees, {m['pairs']} pairs, {m['seconds']:.0f}s", flush=True
            ),
        )
    # the pairs file lands where the user asked; trees and mining.json stay beside it
    Path(res.pairs.path).replace(out)
    print(
        json.dumps(
            {
                "pairs": str(out),
                "n_pairs": res.n_pairs,
                "n_trees": res.n_trees,
                "trees_dir": res.trees_dir,
                "seconds": round(res.seconds, 1),
                **res.stats,
            },
            default=str,
        )
    )
    return 0


def mine_overrides(args: argparse.Namespace) -> dict:
    """The config keys ``itool mine``'s shorthand flags stand for (None: not given, the config's value)."""
    return {
        **selection_overrides(args),
        "engine": args.engine,
        "serve.url": args.engine_url,
        "mcts.simulations": args.simulations,
        "mcts.k": args.k,
        "mcts.c_puct": args.c_puct,
        "mcts.gamma": args.gamma,
        "mcts.max_depth": args.max_depth,
        "mcts.trees_per_batch": args.trees_per_batch,
        "mcts.seed": args.seed,
        "policy.temperature": args.temperature,
        "policy.max_step_tokens": args.step_tokens,
        "policy.max_rollout_tokens": args.rollout_tokens,
        **tools_overrides(args.tools),
    }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mine",
        help="step-level MCTS on the hardest α of a replay buffer → preference pairs",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("--model", required=True, help="policy: model name, folder or hub id")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder on top of --model")
    p.add_argument("--buffer", required=True, help="replay buffer Parquet (itool buffer refresh)")
    p.add_argument("-o", "--out", required=True)
    add_config_options(p)
    add_selection_options(p)
    p.add_argument("--simulations", type=int, default=None, help="MCTS rounds per tree (mcts.simulations)")
    p.add_argument("--k", type=int, default=None, help="candidate steps per expansion (mcts.k)")
    p.add_argument("--c-puct", type=float, default=None, help="mcts.c_puct")
    p.add_argument("--gamma", type=float, default=None, help="mcts.gamma")
    p.add_argument("--max-depth", type=int, default=None, help="mcts.max_depth")
    p.add_argument("--trees-per-batch", type=int, default=None, help="mcts.trees_per_batch")
    p.add_argument("--seed", type=int, default=None, help="mcts.seed")
    p.add_argument("--temperature", type=float, default=None, help="policy.temperature")
    p.add_argument("--step-tokens", type=int, default=None, help="policy.max_step_tokens")
    p.add_argument("--rollout-tokens", type=int, default=None, help="policy.max_rollout_tokens")
    p.add_argument(
        "--tools",
        default=None,
        choices=TOOLS_STYLES,
        help="tool rendering (sft.tools_style and buffer.tools_style; default: the config's)",
    )
    p.add_argument("--engine", default=None, choices=ENGINES.names(), help="default: the config's engine")
    p.add_argument(
        "--engine-url",
        default=None,
        help="engine openai: a running OpenAI-compatible server (vllm serve, llama-server) instead of starting one",
    )
    p.add_argument("--max-trees", type=int, default=None, help="search at most this many of the selected examples")
    p.add_argument("--batch-size", type=int, default=32, help="engine batch size")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=_cmd_mine)
