"""The core's command line, all of it: ``data import|stats|build``, ``inspect``, ``config``, ``eval``, ``warmup``,
``buffer refresh|select``, ``mine`` and ``serve build|gguf|which|start``.

The library modules hold no command-line code: each command here parses its flags, resolves its run config
through :mod:`itool_core.cli.common` (``--profile`` | ``--config``, ``--set key=value``: one surface for every
command) and calls the library.  Choices of formats, engines, losses and benchmarks come from
:mod:`itool_core.registry`.  The installed ``itool`` command is ``flows.cli:main``: these commands plus
``itool run`` / ``itool demo``, which run the Prefect flow (core never imports the orchestration layer) and
hand their extra sub-commands to :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable

from . import buffer, config, data, eval, inspect, mine, serve, train

__all__ = ["build_parser", "main", "run"]

#: The command modules, in the order ``itool --help`` lists them; each has ``register(subparsers)``.
COMMANDS = (data, inspect, config, eval, train, buffer, mine, serve)


def build_parser(extra: Iterable[Callable[[argparse._SubParsersAction], None]] = ()) -> argparse.ArgumentParser:
    """The ``itool`` parser: the core's commands, then those ``extra`` adds (``register(subparsers)`` each)."""
    p = argparse.ArgumentParser(prog="itool", description="iTool: iterative reinforced fine-tuning for tool use")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    for register in [m.register for m in COMMANDS] + list(extra):
        register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` with ``parser`` and run the chosen command; bad input ends in one line, exit 2."""
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from ..artifacts import OutputPathError, SchemaMismatch
    from ..config import ConfigError
    from ..data.records import BadRow
    from ..registry import UnknownName
    from .checks import InputError

    try:
        return int(args.func(args) or 0)
    except (BadRow, SchemaMismatch, ConfigError, UnknownName, FileNotFoundError, OutputPathError, InputError) as e:
        # bad input is the user's to fix: one clear line naming the file/row/field, no traceback
        print(f"itool: error: {e}", file=sys.stderr)
        return 2
