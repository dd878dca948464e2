"""One entry point over every source loader: ``load(fmt, src, ...)`` → canonical examples + load reports.

=========== ================================================ ===========================================
format      ``src``                                          options
=========== ================================================ ===========================================
``toolace`` JSON/JSONL file or hub id (default Team-ACE)     ``split``
``xlam``    JSON/JSONL file or hub id (default Salesforce)   ``split``
``bfcl``    bfcl-eval data folder (default: installed pkg)   ``categories`` (list or comma string; unused
                                                             sets allowed), ``unused=True`` = exec/sql only
``apibank`` API-Bank folder (default ``default_apibank_dir``) ``level``: 1, 2, "train", a list, or "all"
                                                             (default: levels 1 and 2)
=========== ================================================ ===========================================

The CLI (written elsewhere) calls :func:`load` and writes ``[e.to_row() for e in examples]`` with
``artifacts.write_table(..., schemas.EXAMPLES)``.  Every loader reports per file what it loaded and which
rows it skipped (file, row, field, reason); ``strict=True`` turns the first bad row into an exception.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from .apibank import default_apibank_dir, load_apibank
from .bfcl import load_bfcl, load_bfcl_unused
from .records import BadRow, Example, LoadReport
from .toolace import load_toolace
from .xlam import load_xlam

__all__ = ["FORMATS", "load", "load_default_training_set", "default_apibank_dir", "write_examples"]

FORMATS = ("toolace", "xlam", "bfcl", "apibank")


def _levels(level: Any) -> list[Any]:
    if level is None:
        return [1, 2]
    if isinstance(level, str):
        if level.strip().lower() == "all":
            return [1, 2, "train"]
        return [x.strip() for x in level.split(",") if x.strip()]
    if isinstance(level, Iterable):
        return list(level)
    return [level]


def load(
    fmt: str, src: str | None = None, *, strict: bool = False, **opts: Any
) -> tuple[list[Example], list[LoadReport]]:
    """Load examples of format ``fmt`` (one of :data:`FORMATS`) from ``src``; see the module table."""
    reports: list[LoadReport] = []
    if fmt == "toolace":
        return load_toolace(src, strict=strict, report_list=reports, **opts), reports
    if fmt == "xlam":
        return load_xlam(src, strict=strict, report_list=reports, **opts), reports
    if fmt == "bfcl":
        unused = bool(opts.pop("unused", False))
        categories = opts.pop("categories", None)
        if opts:
            raise TypeError(f"bfcl: unknown options {sorted(opts)}")
        loader = load_bfcl_unused if unused else load_bfcl
        return loader(categories, strict=strict, report_list=reports, data_dir=src), reports
    if fmt == "apibank":
        levels = _levels(opts.pop("level", opts.pop("levels", None)))
        if opts:
            raise TypeError(f"apibank: unknown options {sorted(opts)}")
        out: list[Example] = []
        for lv in levels:
            out.extend(load_apibank(lv, src, strict=strict, report_list=reports))
        return out, reports
    raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def load_default_training_set(
    apibank_dir: str | Path | None = None, *, strict: bool = False
) -> tuple[list[Example], list[LoadReport]]:
    """The project's default training data: BFCL's unused sets (exec_*, sql) + API-Bank ``lv3-api-train.json``.

    Neither overlaps a scored set (``tests/test_leak.py`` checks ids, question text and near-duplicates).
    """
    reports: list[LoadReport] = []
    out = load_bfcl_unused(strict=strict, report_list=reports)
    out += load_apibank("train", apibank_dir, strict=strict, report_list=reports)
    return out, reports


def write_examples(examples: list[Example], out: str | Path, reports: list[LoadReport]):
    """Write loaded examples as the one example table (atomically); an input with no good row is an error
    (:class:`BadRow` naming the source and the count skipped), never an empty table."""
    from ..artifacts import write_table
    from ..schemas import EXAMPLES

    if not examples:
        files = ", ".join(r.file for r in reports) or "the source"
        skipped = [b for r in reports for b in r.skipped]
        first = f"; first: {skipped[0]}" if skipped else ""
        raise BadRow(files, "-", "<file>", f"no good rows ({len(skipped)} skipped{first})")
    return write_table([e.to_row() for e in examples], out, EXAMPLES)
