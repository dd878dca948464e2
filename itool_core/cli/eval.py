"""``itool eval``: BFCL v3 and API-Bank L1/L2 on any model, with the pipeline's evaluation settings by default."""

from __future__ import annotations

import argparse
import time

from ..config import APIBANK_PROMPTS, TOOLS_STYLES, benchmark_categories
from ..registry import BENCHMARKS, ENGINES
from . import checks
from .common import add_config_options, comma_list, resolve_config


def _cmd_eval(args: argparse.Namespace) -> int:
    checks.model("--model", args.model)
    checks.adapter("--adapter", args.adapter)
    checks.folder("--apibank-dir", args.apibank_dir)
    checks.url("--engine-url", args.engine_url)
    import dataclasses

    import torch

    from ..eval.runner import evaluate

    # The defaults are the pipeline's evaluation settings (the profile's ``evaluation`` section and its tool
    # rendering), so a number from ``itool eval`` compares with the pipeline's number for the same model.
    cfg = resolve_config(
        args,
        {
            "engine": args.engine,
            "serve.url": args.engine_url,
            "evaluation.categories": [c.strip() for c in args.categories.split(",") if c.strip()]
            if args.categories is not None
            else None,
            "evaluation.limit": args.limit,
            "evaluation.seed": args.seed,
            "evaluation.batch_size": args.batch_size,
            "evaluation.max_new_tokens": args.max_new_tokens,
            "evaluation.max_steps": args.max_steps,
            "evaluation.apibank_prompt": args.apibank_prompt,
            "evaluation.tools_style": args.tools,
        },
    )
    spec = cfg.evaluation_config()
    if args.full:
        spec = dataclasses.replace(spec, limit=None)
    if set(args.benchmarks) != set(BENCHMARKS.names()):
        keep = {c for b in args.benchmarks for c in benchmark_categories(b)}
        spec = dataclasses.replace(spec, categories=tuple(c for c in spec.categories if c in keep))
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or f"runs/eval/{time.strftime('%Y%m%d-%H%M%S')}"
    summary = evaluate(
        args.model,
        spec,
        adapter=args.adapter,
        engine=cfg.engine,
        serve=cfg.engine_serve(),
        out_dir=out,
        num_threads=args.threads,
        data_dirs={"apibank": args.apibank_dir},
        label=args.model + (f" + {args.adapter}" if args.adapter else ""),
    )
    print(f"samples and summary.json written to {out}")
    return 0 if summary.get("n_items") else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on BFCL v3 and API-Bank L1/L2",
        description="Defaults: the evaluation settings of --profile (or --config), the "
        "same the pipeline evaluates its stages with.",
    )
    p.add_argument("--model", default="smollm2-135m-instruct", help="model name, folder or hub id")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder")
    add_config_options(p)
    p.add_argument(
        "--benchmarks",
        type=comma_list(BENCHMARKS.names()),
        default=list(BENCHMARKS.names()),
        help=f"comma-separated: {', '.join(BENCHMARKS.names())}",
    )
    p.add_argument(
        "--categories",
        default=None,
        help="comma-separated BFCL categories and/or apibank_level1, apibank_level2 "
        "(evaluation.categories; default: the profile's)",
    )
    p.add_argument(
        "--limit", type=int, default=None, help="at most N items per category (seeded, stable subset; evaluation.limit)"
    )
    p.add_argument("--full", action="store_true", help="full categories (no subset)")
    p.add_argument("--seed", type=int, default=None, help="evaluation.seed")
    p.add_argument("--out", default=None, help="output folder (default runs/eval/<time>)")
    p.add_argument("--batch-size", type=int, default=None, help="evaluation.batch_size")
    p.add_argument("--max-new-tokens", type=int, default=None, help="evaluation.max_new_tokens")
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="multi-turn: executing steps per turn (evaluation.max_steps; bfcl-eval's 20)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--engine", default=None, choices=ENGINES.names(), help="default: the profile's engine")
    p.add_argument(
        "--engine-url",
        default=None,
        help="engine openai: a running OpenAI-compatible server (vllm serve, llama-server) instead of starting one",
    )
    p.add_argument(
        "--tools",
        default=None,
        choices=TOOLS_STYLES,
        help="tool rendering in the prompt (evaluation.tools_style; default: the policy's sft.tools_style)",
    )
    p.add_argument("--apibank-prompt", default=None, choices=APIBANK_PROMPTS, help="evaluation.apibank_prompt")
    p.add_argument("--apibank-dir", default=None)
    p.set_defaults(func=_cmd_eval)
