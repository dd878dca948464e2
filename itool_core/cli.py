"""The core's command line: data import/stats, ``inspect``, ``config`` and each stage's own sub-command.

Stage modules contribute their own sub-commands through a ``register_cli(subparsers)`` function so the CLI
stays a thin dispatcher and each stage documents its flags next to its code.  The installed ``itool`` command
is ``flows.cli:main``: these commands plus ``itool run`` / ``itool demo``, which run the Prefect flow (core
never imports the orchestration layer).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time

# Modules that add sub-commands; absent ones (not yet built in this checkout) are skipped.
_STAGE_MODULES = [
    "itool_core.eval.runner",
    "itool_core.data.build",
    "itool_core.train.sft",
    "itool_core.data.replay",
    "itool_core.mcts.cli",
]


def _cmd_import(args: argparse.Namespace) -> int:
    from .artifacts import check_output_path
    from .data.loaders import load, write_examples

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
    from .artifacts import read_table
    from .calls import PromptStyle
    from .data.records import Example
    from .data.stats import format_stats, table_stats
    from .schemas import EXAMPLES

    examples = [Example.from_row(r) for r in read_table(args.file, EXAMPLES).to_pylist()]
    tok = None
    if not args.no_tokens:
        from .models import load_tokenizer

        tok = load_tokenizer(args.tokenizer)
    stats = table_stats(examples, tok, PromptStyle(args.tools), args.max_length)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    """A first look without training: model, data statistics, one BFCL answer of the base model."""
    import torch

    from .calls import render_prompt, try_parse_calls
    from .data.loaders import load, load_default_training_set
    from .data.stats import format_stats, table_stats
    from .models import load_policy

    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, tok = load_policy(args.model)
    print(f"[inspect] model {args.model} loaded in {time.time() - t0:.1f}s "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters)")

    train, reports = load_default_training_set(args.apibank_dir)
    for r in reports:
        print("[inspect] " + r.summary())
    print("[inspect] default training set (BFCL unused sets + API-Bank training set):")
    print(format_stats(table_stats(train, tok, max_length=tok.model_max_length)))

    bfcl, _ = load("bfcl")
    print("[inspect] BFCL evaluation set:")
    print(format_stats(table_stats(bfcl)))
    for level in (1, 2):
        ab, _ = load("apibank", args.apibank_dir, level=level)
        print(f"[inspect] API-Bank level-{level}: {len(ab)} items")

    ex = next(e for e in bfcl if e.category == "simple_python")
    prompt = render_prompt(tok, ex.tools, ex.messages)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    t0 = time.time()
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=args.max_new_tokens, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    calls, err = try_parse_calls(answer)
    print(f"[inspect] BFCL {ex.id}: {ex.messages[-1]['content']}")
    print(f"[inspect] answer ({time.time() - t0:.1f}s): {answer!r}")
    print(f"[inspect] parsed calls: {[str(c) for c in calls] if calls is not None else 'none (' + err + ')'}")
    print(f"[inspect] expected:     {[str(c) for c in ex.target]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="itool", description="iTool: iterative reinforced fine-tuning for tool use")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="import and inspect tool-use data").add_subparsers(dest="data_cmd", required=True)
    imp = data.add_parser("import", help="normalise a source file into the one example schema (Parquet)")
    imp.add_argument("--format", required=True, choices=["toolace", "xlam", "bfcl", "apibank"])
    imp.add_argument("src", nargs="?", default=None,
                     help="file, folder or hub id (bfcl: installed package data; apibank: data folder)")
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
    st.add_argument("--tools", default="json", choices=["json", "compact"], help="tool rendering for lengths")
    st.add_argument("--max-length", type=int, default=None)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_cmd_stats)

    ins = sub.add_parser("inspect", help="load the embedded model and data, print statistics, answer one BFCL question")
    ins.add_argument("--model", default="smollm2-135m-instruct")
    ins.add_argument("--apibank-dir", default=None)
    ins.add_argument("--max-new-tokens", type=int, default=48)
    ins.add_argument("--threads", type=int, default=2)
    ins.set_defaults(func=_cmd_inspect)

    cf = sub.add_parser("config", help="print the resolved experiment config (YAML, every field of every stage)")
    src = cf.add_mutually_exclusive_group()
    from .config import PROFILES

    src.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    src.add_argument("--config", help="a YAML file (its profile + its keys)")
    cf.add_argument("-o", "--output", help="write it here (atomically) instead of printing")
    cf.set_defaults(func=_cmd_config)

    for mod in _STAGE_MODULES:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):
                continue
            raise
        if hasattr(m, "register_cli"):
            m.register_cli(sub)
    return p


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from .config import dump_config, load_config, profile, to_dict

    cfg = load_config(args.config) if args.config else profile(args.profile)
    if args.output:
        dump_config(cfg, args.output)
    else:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` with ``parser`` and run the chosen command; bad input ends in one line, exit 2."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .artifacts import OutputPathError, SchemaMismatch
    from .config import ConfigError
    from .data.records import BadRow

    try:
        return int(args.func(args) or 0)
    except (BadRow, SchemaMismatch, ConfigError, FileNotFoundError, OutputPathError) as e:
        # bad input is the user's to fix: one clear line naming the file/row/field, no traceback
        print(f"itool: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
