"""``itool buffer refresh | select``: score the reinforcement pool by the perplexity of its targets (Eq. 4), then
write the hardest α of a buffer as an examples table."""

from __future__ import annotations

import argparse
from typing import Any

from ..artifacts import check_output_path
from . import checks
from .common import add_config_options, resolve_config


def fraction(text: str) -> float:
    """argparse type of the selection shares: a fraction, so that a percent (``--alpha 20``) fails with a hint."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a fraction in [0, 1] (20 % is 0.2)")
    return value


def add_selection_options(p: argparse.ArgumentParser) -> None:
    """``--alpha`` / ``--skip-hardest``: fractions, shorthands for ``buffer.alpha`` / ``buffer.skip_hardest``."""
    p.add_argument(
        "--alpha",
        type=fraction,
        default=None,
        help="fraction of the buffer selected, hardest by h first, e.g. 0.2 (buffer.alpha; default: the config's)",
    )
    p.add_argument(
        "--skip-hardest",
        type=fraction,
        default=None,
        help="fraction of the hardest rows passed over before the α are taken, e.g. 0.5 "
        "(buffer.skip_hardest; default: the config's)",
    )


def selection_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"buffer.alpha": args.alpha, "buffer.skip_hardest": args.skip_hardest}


def _format_summary(s: dict[str, Any]) -> str:
    lines = [f"{'':<8} {'n':>5} {'mean':>8} {'min':>8} {'p25':>8} {'median':>8} {'p75':>8} {'p90':>8} {'max':>8}"]
    for name, st in s.items():
        if not st.get("n"):
            lines.append(f"{name:<8} {0:>5}")
            continue
        lines.append(
            f"{name:<8} {st['n']:>5} "
            + " ".join(f"{st[k]:>8.3f}" for k in ("mean", "min", "p25", "median", "p75", "p90", "max"))
        )
    return "\n".join(lines)


def _cmd_refresh(args: argparse.Namespace) -> int:
    from ..schemas import EXAMPLES

    checks.table("--pool", args.pool, EXAMPLES)
    checks.model("--model", args.model)
    checks.adapter("--adapter", args.adapter)
    check_output_path(args.out)
    import time

    import torch

    from ..artifacts import read_table, write_table
    from ..data.records import Example
    from ..data.replay import REPLAY_BUFFER, h_summary, refresh_buffer, selection_counts
    from ..models import load_policy

    cfg = resolve_config(args, {"buffer.batch_size": args.batch_size, "buffer.dtype": args.dtype}).buffer
    torch.set_num_threads(args.threads)
    pool = [Example.from_row(r) for r in read_table(args.pool, EXAMPLES).to_pylist()]
    if args.limit:
        pool = pool[: args.limit]
    model, tok = load_policy(args.model, adapter=args.adapter)
    t0 = time.perf_counter()
    table = refresh_buffer(model, tok, pool, cfg, iteration=args.iteration)
    wall = time.perf_counter() - t0
    ref = write_table(table, args.out, REPLAY_BUFFER)
    print(
        f"[buffer] scored {len(pool)} pool examples in {wall:.1f} s ({wall / max(len(pool), 1):.2f} s/example, "
        f"{cfg.dtype}, batch {cfg.batch_size}) → {ref.path}"
    )
    print(_format_summary(h_summary(table)))
    flags = table.column("is_no_call").to_pylist()
    k_call, k_no = selection_counts(len(flags) - sum(flags), sum(flags), cfg.alpha)
    print(f"[buffer] α = {cfg.alpha:g}: select would take {k_call + k_no} hardest ({k_call} call, {k_no} no-call)")
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from ..artifacts import read_table, write_table
    from ..data.replay import REPLAY_BUFFER, buffer_examples, select_for_search
    from ..schemas import EXAMPLES

    checks.table("buffer", args.buffer, REPLAY_BUFFER)
    check_output_path(args.out)

    cfg = resolve_config(args, selection_overrides(args)).buffer
    rows = select_for_search(read_table(args.buffer, REPLAY_BUFFER), cfg)
    ref = write_table([e.to_row() for e in buffer_examples(rows)], args.out, EXAMPLES)
    n_no = sum(1 for r in rows if r["is_no_call"])
    print(
        f"[buffer] selected {len(rows)} (α = {cfg.alpha:g}, hardest {cfg.skip_hardest:g} skipped; "
        f"{len(rows) - n_no} call, {n_no} no-call; "
        f"h ≥ {min((r['h'] for r in rows), default=float('nan')):.3f}) → {ref.path}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("buffer", help="perplexity replay buffer (Eq. 4): score the pool, select the hardest")
    bsub = p.add_subparsers(dest="buffer_cmd", required=True)
    r = bsub.add_parser(
        "refresh", help="score every pool example by the perplexity of its target; print the h distribution"
    )
    r.add_argument("--model", required=True, help="policy: embedded name, folder (e.g. a merged model) or hub id")
    r.add_argument("--adapter", default=None, help="LoRA adapter folder on top of --model")
    r.add_argument("--pool", required=True, help="examples Parquet (the reinforcement pool)")
    r.add_argument("-o", "--out", required=True, help="replay_buffer Parquet to write")
    r.add_argument("--iteration", type=int, default=0)
    add_config_options(r)
    r.add_argument("--batch-size", type=int, default=None, help="buffer.batch_size")
    r.add_argument("--dtype", default=None, help="buffer.dtype: auto, bfloat16 or float32")
    r.add_argument("--limit", type=int, default=None, help="score only the first N pool examples")
    r.add_argument("--threads", type=int, default=2)
    r.set_defaults(func=_cmd_refresh)
    s = bsub.add_parser("select", help="write the top-α hardest examples of a buffer as an examples table")
    s.add_argument("buffer")
    s.add_argument("-o", "--out", required=True)
    add_selection_options(s)
    add_config_options(s)
    s.set_defaults(func=_cmd_select)
