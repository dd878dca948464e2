"""``itool data import | stats | build``: normalise a source into the example table, describe a table, build the
warm-up training set."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..config import TOOLS_STYLES
from ..registry import LOADERS
from . import checks


def _cmd_import(args: argparse.Namespace) -> int:
    from ..artifacts import check_output_path
    from ..data.loaders import load, write_examples

    check_output_path(args.out)  # before the load, so a bad -o fails at once

    opts = {}
    if args.categories:
        opts["categories"] = args.categories.split(",")
    if args.level:
        opts["level"] = int(args.level) if args.level.isdigit() else args.level
    examples, reports = load(args.format, args.src, strict=args.strict, **opts)
    for r in reports:
        print(r.summary(), file=sys.stderr)
        for bad in r.skipped[: args.show_errors]:
            print(f"  skipped: {bad}", file=sys.stderr)
    ref = write_examples(examples, args.out, reports)
    print(json.dumps(ref.to_dict()))
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from ..artifacts import read_table
    from ..calls import PromptStyle
    from ..data.records import Example, FieldError, check_size
    from ..data.stats import format_stats, table_stats
    from ..schemas import EXAMPLES

    checks.table("file", args.file, EXAMPLES)
    examples, oversized = [], []
    for i, row in enumerate(read_table(args.file, EXAMPLES).to_pylist()):
        try:  # the import limits hold here too, so a table written elsewhere costs time linear in its rows
            check_size(row)
        except FieldError as e:
            oversized.append({"row": i, "id": row.get("id"), "field": e.field, "reason": e.reason})
            continue
        examples.append(Example.from_row(row))
    tok = None
    if not args.no_tokens:
        from ..models import load_tokenizer

        tok = load_tokenizer(args.tokenizer)
    stats = table_stats(examples, tok, PromptStyle(args.tools), args.max_length)
    stats["oversized_rows"] = oversized
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def _source_share(text: str) -> float | dict[str, float]:
    """``0.2`` (every source) or ``bfcl_unused=0.125,apibank=0.2`` (the named sources only)."""
    if "=" not in text:
        return float(text)
    shares = {}
    for part in text.split(","):
        src, sep, value = part.partition("=")
        if not sep or not src.strip():
            raise argparse.ArgumentTypeError(f"{part!r}: expected SOURCE=SHARE")
        shares[src.strip()] = float(value)
    return shares


def _cmd_build(args: argparse.Namespace) -> int:
    from ..config import AUGMENTATIONS, BuildConfig
    from ..data.build import build_training_set, card_markdown, from_config, write_training_set

    # the same knobs as a run config's `build` section, turned into build arguments by the same function
    knobs = {"no_call_rate": args.no_call_rate, "no_call_near_miss": args.no_call_near_miss}
    build = BuildConfig(
        profile=args.profile,
        augmentations=tuple(a for a in AUGMENTATIONS if a not in args.no_augment),
        caps=not args.no_caps,
        max_share=args.max_share,
        max_length=args.max_length,
        **{k: v for k, v in knobs.items() if v is not None},
    )
    kw = from_config(build, args.profile)
    if args.no_call_source_share is not None:
        # a per-source share is the data build's own knob (not a run-config field): set on its config directly
        cfg = kw["augment"]
        kw["augment"] = dataclasses.replace(
            cfg, no_call=dataclasses.replace(cfg.no_call, source_share=args.no_call_source_share)
        )
    examples, card = build_training_set(apibank_dir=args.apibank_dir, seed=args.seed, **kw)
    ref = write_training_set(examples, card, args.out)
    stem = Path(args.out).with_suffix("")
    print(card_markdown(card))
    print(json.dumps({**ref.to_dict(), "card": f"{stem}.card.json"}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="import, inspect and build tool-use data").add_subparsers(
        dest="data_cmd", required=True
    )
    imp = data.add_parser("import", help="normalise a source file into the one example schema (Parquet)")
    # "examples" is the output table itself: importing one would only copy it
    imp.add_argument("--format", required=True, choices=[n for n in LOADERS.names() if n != "examples"])
    imp.add_argument(
        "src",
        nargs="?",
        default=None,
        help="file, folder or hub id (bfcl: installed package data; apibank: data folder)",
    )
    imp.add_argument("-o", "--out", required=True)
    imp.add_argument("--strict", action="store_true", help="any bad row is fatal")
    imp.add_argument("--categories", help="bfcl: comma-separated categories (default: all v3 categories)")
    imp.add_argument("--level", help="apibank: 1, 2 or train")
    imp.add_argument("--show-errors", type=int, default=10, help="print this many skipped rows")
    imp.set_defaults(func=_cmd_import)

    st = data.add_parser("stats", help="counts, difficulty features and token lengths of an example table")
    st.add_argument("file")
    st.add_argument("--tokenizer", default="smollm2-135m-instruct")
    st.add_argument("--no-tokens", action="store_true", help="skip token lengths (no tokenizer needed)")
    st.add_argument("--tools", default="json", choices=TOOLS_STYLES, help="tool rendering for lengths")
    st.add_argument("--max-length", type=int, default=None)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_cmd_stats)

    from ..data import augment as aug
    from ..data.build import DEFAULT_OUT
    from ..data.build import PROFILES as BUILD_PROFILES

    b = data.add_parser(
        "build", help="build the warm-up training set (sources → caps → augmentations → length fit) + card"
    )
    b.add_argument(
        "--profile",
        default="quick",
        choices=sorted(BUILD_PROFILES),
        help="quick: compact tools, 1024 tokens (SmolLM2 on CPU); paper: JSON tools, 4096 tokens",
    )
    b.add_argument(
        "--no-augment",
        nargs="+",
        default=[],
        choices=list(aug.AUGMENTATIONS),
        metavar="NAME",
        help=f"switch augmentations off (ablation): {', '.join(aug.AUGMENTATIONS)}",
    )
    b.add_argument("--no-caps", action="store_true", help="do not cap over-represented functions")
    b.add_argument(
        "--no-call-rate",
        type=float,
        default=None,
        help=f"share of call examples that get a no-call copy (default {aug.NoCallParams().rate}); "
        "raise it when a trained model stops abstaining (BFCL irrelevance)",
    )
    b.add_argument(
        "--no-call-near-miss",
        type=float,
        default=None,
        help="share of the no-call copies offered tools on the question's topic that are other functions "
        f"(default {aug.NoCallParams().near_miss}; BFCL irrelevance is built that way)",
    )
    b.add_argument(
        "--no-call-source-share",
        type=_source_share,
        default=None,
        metavar="S | SOURCE=S,...",
        help="make no-call copies this share of every source's rows (replaces --no-call-rate per "
        "source), so that the prompt's style is no cue for abstaining; SOURCE=S[,SOURCE=S] sets "
        "only the named sources (e.g. bfcl_unused=0.125); default: one rate for all. The length "
        "fit and caps run afterwards and can raise the realised share by ~2 points; the card "
        "prints it",
    )
    b.add_argument(
        "--max-share",
        type=float,
        default=aug.CapParams().max_share,
        help="largest share of the target calls one function may hold",
    )
    b.add_argument(
        "--max-length", type=int, default=None, help="token limit (default: the profile's; 0 = no length fit)"
    )
    b.add_argument("--apibank-dir", default=None)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("-o", "--out", default=DEFAULT_OUT)
    b.set_defaults(func=_cmd_build)
