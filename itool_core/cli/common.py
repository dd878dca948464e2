"""What every command shares: the run-settings options (``--profile`` | ``--config``, ``--set key=value``), their
resolution into one :class:`~itool_core.config.RunConfig`, and argparse value types.

A command that uses run settings adds them with :func:`add_config_options` and gets its config from
:func:`resolve_config`; its own specific flags (``--simulations 4``) are shorthands for config keys, handed to
:func:`resolve_config` as ``{"mcts.simulations": args.simulations}``.  Shorthands apply first, then the ``--set``
items in the order given; both go through :func:`itool_core.config.with_overrides`, the one merge of the project.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from ..config import PROFILES, RunConfig, load_config, profile, validate_paths, with_overrides

__all__ = [
    "add_config_options",
    "set_item",
    "leaves",
    "overrides_of",
    "resolve_config",
    "comma_list",
    "literal_choices",
    "tools_overrides",
]


def set_item(text: str) -> tuple[str, Any]:
    """``key=value`` → ``(key, value)``, the value parsed as YAML (``2``, ``true``, ``[a, b]``, ``null``)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. mcts.simulations=4), got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise argparse.ArgumentTypeError(f"{key.strip()}: the value {value!r} is not YAML ({e})") from None


def add_config_options(p: argparse.ArgumentParser, default_profile: str = "quick") -> None:
    """``--profile NAME`` | ``--config FILE`` (one or the other) and repeatable ``--set KEY=VALUE``."""
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--profile",
        default=default_profile,
        choices=sorted(PROFILES),
        help=f"settings preset (default {default_profile})",
    )
    src.add_argument("--config", help="YAML experiment file (its profile + its keys)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        type=set_item,
        metavar="KEY=VALUE",
        help="config override in the YAML shape, e.g. mcts.simulations=4 or sft.mode=mixed "
        "(value parsed as YAML; repeatable; applied after the command's own flags)",
    )


def leaves(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A YAML-shaped mapping as dotted keys (``{"mcts": {"k": 2}}`` → ``{"mcts.k": 2}``; lists are values).

    Overrides kept this way can be combined with a plain ``dict.update``: two keys either name the same value
    (the later wins) or different ones, never a section and one of its keys."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, Mapping):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def overrides_of(args: argparse.Namespace, shorthands: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The dotted-key overrides of a command: its shorthand flags that were given (not None), then ``--set``."""
    out = leaves({k: v for k, v in (shorthands or {}).items() if v is not None})
    for key, value in getattr(args, "set", None) or []:
        out.update(leaves({key: value}))
    return out


def resolve_config(args: argparse.Namespace, shorthands: Mapping[str, Any] | None = None) -> RunConfig:
    """The run config of a command: ``--config`` file or ``--profile`` preset, then :func:`overrides_of`."""
    base = load_config(args.config) if getattr(args, "config", None) else profile(getattr(args, "profile", "quick"))
    over = overrides_of(args, shorthands)
    cfg = with_overrides(base, over)
    if any(k.split(".")[0] in ("model", "data") for k in over):
        validate_paths(cfg)  # load_config checked the file's paths; an overridden one is checked here
    return cfg


def tools_overrides(style: str | None) -> dict[str, Any]:
    """``--tools STYLE``: the prompt rendering of training and of the buffer's perplexity, which must agree."""
    return {} if style is None else {"sft.tools_style": style, "buffer.tools_style": style}


def comma_list(choices: Iterable[str]):
    """argparse type: ``a,b`` → ``["a", "b"]``, each one of ``choices``."""
    known = tuple(choices)

    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in known]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{(bad or [text])[0]!r}: expected a comma-separated list of {', '.join(known)}"
            )
        return items

    return parse


def literal_choices(cls: type, name: str) -> list[Any]:
    """The allowed values of a ``Literal[...]`` field of a config dataclass (its flag's choices)."""
    return list(typing.get_args(typing.get_type_hints(cls)[name]))
