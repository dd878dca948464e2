"""``itool warmup``: split the data, then the curriculum LoRA SFT of §4.2 (easy → medium → hard, or mixed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import SFTConfig
from . import checks
from .common import add_config_options, literal_choices, resolve_config


def _summary_line(m: dict) -> str:
    first = "-" if m["first_loss"] is None else f"{m['first_loss']:.3f}"
    last = "-" if m["last_loss"] is None else f"{m['last_loss']:.3f}"
    return (
        f"[warmup] stage {m['index']} {m['name']:<7} n={m['n_examples']:<5} dropped={m['n_dropped_too_long']:<3} "
        f"steps={m['steps']:<4} loss {first} → {last} (mean {m['train_loss']:.3f})  "
        f"{m['tokens_per_s']:.0f} tok/s  {m['s_per_step']:.1f} s/step  {m['wall_s']:.0f} s  "
        f"peak {m['peak_rss_mb'] / 1024:.1f} GB  → {m['adapter_dir']}"
        + ("  (resumed)" if m.get("resumed") else "")
        + (f"  (continued from step {m['resumed_at_step']})" if m.get("resumed_at_step") else "")
    )


def _cmd_warmup(args: argparse.Namespace) -> int:
    from ..schemas import EXAMPLES

    if args.data != "default":
        checks.table("--data", args.data, EXAMPLES)
    cfg = resolve_config(
        args,
        {
            "model": args.model,
            "sft.mode": args.mode,
            "sft.max_steps_per_stage": args.max_steps,
            "sft.loss_normalisation": args.loss_normalisation,
            "sft.decision_weight": args.decision_weight,
            "sft.checkpoint_steps": args.checkpoint_every,
        },
    )
    checks.model("--model" if args.model is not None else "model (from the config)", cfg.model)
    import torch

    from ..artifacts import read_table
    from ..data.records import Example
    from ..data.split import curriculum_thirds, split_pool, write_parts
    from ..train.sft import train_sft

    torch.set_num_threads(args.threads)
    if args.data == "default":
        from ..data.loaders import load_default_training_set

        examples, _ = load_default_training_set()
    else:
        examples = [Example.from_row(r) for r in read_table(args.data, EXAMPLES).to_pylist()]
    warmup, pool = split_pool(examples, cfg.split)
    easy, medium, hard = curriculum_thirds(warmup, cfg.split.seed, cfg.split.no_call_every_stage)
    out = Path(args.out)
    refs = write_parts({"warmup": warmup, "pool": pool, "easy": easy, "medium": medium, "hard": hard}, out / "data")
    print(
        f"[warmup] {len(examples)} examples → warm-up {len(warmup)} (easy {len(easy)} / medium {len(medium)} / "
        f"hard {len(hard)}), pool {len(pool)} → {refs['pool'].path}"
    )

    planned: dict[str, int] = {}

    def on_event(event: str, m: dict) -> None:
        if event == "stage_start":
            planned[m["stage"]] = m["steps"]
        elif event == "log" and m.get("loss") is not None:
            # a stage takes minutes to an hour on CPU: show that it moves
            print(
                f"[warmup]   {m['stage']} step {m['stage_step']}/{planned.get(m['stage'], '?')} loss {m['loss']:.3f}",
                flush=True,
            )
        elif event == "stage_end":
            print(_summary_line(m), flush=True)

    result = train_sft(
        cfg.model, [("easy", easy), ("medium", medium), ("hard", hard)], cfg.sft, out, on_event, resume=args.resume
    )
    print(
        f"[warmup] {result.mode} done in {result.wall_s:.0f} s; adapter {result.adapter_dir}; "
        f"merged {result.merged_dir}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "warmup", help="split the data, then LoRA SFT easy → medium → hard (or mixed); save adapters + merged model"
    )
    p.add_argument(
        "--data",
        required=True,
        help="examples Parquet file (itool data import), or 'default' for the embedded training set",
    )
    p.add_argument("--model", default=None, help="base model: embedded name, folder or hub id (default: config's)")
    p.add_argument("--out", default="runs/warmup", help="output folder (data/, stage_*/, merged/)")
    add_config_options(p)
    p.add_argument(
        "--mode",
        choices=literal_choices(SFTConfig, "mode"),
        default=None,
        help="sft.mode (default: the config's, curriculum)",
    )
    p.add_argument(
        "--max-steps", type=int, default=None, help="cap on optimiser steps per stage (sft.max_steps_per_stage)"
    )
    p.add_argument(
        "--loss-normalisation",
        choices=literal_choices(SFTConfig, "loss_normalisation"),
        default=None,
        help="average the answer loss per token (trl's default) or per example (sft.loss_normalisation)",
    )
    p.add_argument(
        "--decision-weight",
        type=float,
        default=None,
        help="weight of each answer's first token, the call / no-call decision (sft.decision_weight)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse stages an interrupted run into the same --out finished with the same model, config "
        "and data (checked by fingerprint); continue an unfinished stage from its last checkpoint",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="save a resumable checkpoint every N steps of a stage (0: off; sft.checkpoint_steps)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=_cmd_warmup)
