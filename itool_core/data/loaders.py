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
``examples`` a Parquet table of this project's example schema  —
=========== ================================================ ===========================================

The formats are the names of :data:`itool_core.registry.LOADERS`; each maps to a function
``fn(src, *, strict, report_list, **options) -> list[Example]``, so a new format is one module with such a
function and one registration line.  Every loader reports per file what it loaded and which rows it skipped
(file, row, field, reason); ``strict=True`` turns the first bad row into an exception.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..registry import LOADERS, UnknownName
from .apibank import default_apibank_dir, load_apibank
from .bfcl import load_bfcl_unused
from .records import BadRow, Example, LoadReport

__all__ = [
    "FORMATS",
    "load",
    "load_default_training_set",
    "load_examples_table",
    "default_apibank_dir",
    "write_examples",
]

FORMATS = LOADERS.names()


def load(
    fmt: str, src: str | None = None, *, strict: bool = False, **opts: Any
) -> tuple[list[Example], list[LoadReport]]:
    """Load examples of format ``fmt`` (a name of :data:`~itool_core.registry.LOADERS`) from ``src``."""
    try:
        loader = LOADERS.load(fmt)
    except UnknownName as e:
        raise ValueError(str(e)) from None
    reports: list[LoadReport] = []
    return loader(src, strict=strict, report_list=reports, **opts), reports


def load_examples_table(
    src: str | Path | None, *, strict: bool = False, report_list: list[LoadReport] | None = None
) -> list[Example]:
    """A Parquet table written by this project (schema ``examples``, checked): the rows as they are."""
    from ..artifacts import read_table
    from ..schemas import EXAMPLES

    if src is None:
        raise ValueError("examples: give the Parquet file to read")
    out = [Example.from_row(r) for r in read_table(src, EXAMPLES).to_pylist()]
    if report_list is not None:
        report_list.append(LoadReport(str(src), len(out)))
    return out


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
