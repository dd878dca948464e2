"""``itool config``: print (or write) the resolved run config, every field of every stage, as YAML."""

from __future__ import annotations

import argparse

from .common import add_config_options, resolve_config


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from ..config import dump_config, to_dict

    cfg = resolve_config(args)
    if args.output:
        dump_config(cfg, args.output)
    else:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False), end="")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the resolved experiment config (YAML, every field of every stage)")
    add_config_options(p)
    p.add_argument("-o", "--output", help="write it here (atomically) instead of printing")
    p.set_defaults(func=_cmd_config)
