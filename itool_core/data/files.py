"""Rows of a source file: a JSON list file, a JSON Lines file, or a Hugging Face hub dataset.

The small reader shared by the file-format loaders (ToolACE, xLAM).  A row that cannot be read is a bad row
(reported with file, row and field by ``records.convert_rows``), not a lost file: JSON Lines are decoded line
by line, and a file that cannot be read at all is one :class:`~itool_core.data.records.BadRow` naming it.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from .records import BadRow, FieldError, check_size

__all__ = ["JsonLine", "decode_row", "read_records", "load_file_records"]


class JsonLine(str):
    """One undecoded line of a JSON Lines file (decoded by the row converter, so a bad line is a bad row).

    ``error`` is set for a line that is not UTF-8 text: that row is reported, the others still load."""

    error: str = ""


def decode_row(raw: Any) -> dict:
    """A row object from :func:`read_records`; a malformed JSON line raises ``FieldError('<line>', ...)``."""
    if isinstance(raw, JsonLine):
        if raw.error:
            raise FieldError("<line>", raw.error)
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise FieldError("<line>", f"malformed JSON: {e}") from None
        except RecursionError:
            raise FieldError("<line>", "JSON nested too deeply") from None
        check_size(raw)
    if not isinstance(raw, dict):
        raise FieldError("<row>", f"expected an object, got {type(raw).__name__}")
    return raw


def _not_utf8(data: bytes, e: UnicodeDecodeError) -> str:
    return f"not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); re-encode the file as UTF-8"


def _jsonl_rows(data: bytes) -> list[tuple[int, Any]]:
    # Decoded line by line, so one line with bad bytes is one bad row, not a lost file.
    rows: list[tuple[int, Any]] = []
    for i, raw in enumerate(data.split(b"\n")):
        if i == 0 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark is not part of the first row
        try:
            line = JsonLine(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            line = JsonLine("")
            line.error = _not_utf8(raw, e)
            rows.append((i, line))
            continue
        if line.strip():
            rows.append((i, line))
    return rows


def read_records(src: str, split: str = "train") -> tuple[str, list[tuple[int, Any]]]:
    """``(label, [(row index, raw row)])`` from a JSON list file, a JSON Lines file, or a Hugging Face hub id.

    Row indices are 0-based positions (for JSON Lines: the 0-based line number).  A UTF-8 byte-order mark is
    skipped.  A hub id (``owner/name`` that is not a local path) is read lazily with
    ``datasets.load_dataset(src, split=split)``.  A file that cannot be read at all (a folder, not UTF-8 JSON,
    an unreachable hub id) is a :class:`BadRow` naming it, with row ``-`` and field ``<file>``/``<source>``.
    """
    if os.path.exists(src):
        if os.path.isdir(src):
            raise BadRow(src, "-", "<file>", "is a folder; expected a JSON list or JSON Lines file")
        try:
            with open(src, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BadRow(src, "-", "<file>", f"cannot be read: {e.strerror or e}") from None
        if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as e:
                raise BadRow(src, "-", "<file>", _not_utf8(data, e)) from None
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as e:
                raise BadRow(src, "-", "<file>", f"not valid JSON: {e}") from None
            except RecursionError:
                raise BadRow(src, "-", "<file>", "not valid JSON: nested too deeply") from None
            if not isinstance(rows, list):  # "[1] x" cannot get here; a top-level list is what "[" opened
                raise BadRow(src, "-", "<file>", f"expected a JSON list, got {type(rows).__name__}")
            return src, list(enumerate(rows))
        return src, _jsonl_rows(data)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", src) and not src.endswith((".json", ".jsonl")):
        try:
            import datasets  # heavy: only when a hub dataset is actually requested
        except ImportError:
            raise BadRow(
                src,
                "-",
                "<source>",
                "a hub dataset id, but the `datasets` package is not installed; pass a local JSON / JSON Lines file",
            ) from None
        try:
            ds = datasets.load_dataset(src, split=split)
        except Exception as e:  # network, offline mode, unknown id, missing split: all "cannot load this source"
            first = (str(e).splitlines() or [""])[0][:300]
            why = f"hub dataset cannot be loaded ({type(e).__name__}: {first}); offline, pass a local JSON file"
            raise BadRow(f"hf://{src}", "-", "<source>", why) from None
        return f"hf://{src}", [(i, dict(row)) for i, row in enumerate(ds)]
    raise FileNotFoundError(f"{src}: no such file, and not a hub dataset id (owner/name)")


def load_file_records(
    src: str, split: str, convert: Any, *, strict: bool = False, report_list: list | None = None
) -> list:
    """The loading skeleton of the file/hub formats (ToolACE, xLAM): read the rows (:func:`read_records`),
    ``convert(decoded row, row index) -> Example | list[Example]`` each through ``records.convert_rows`` (bad
    rows reported with file, row and field, or fatal with ``strict``), append the report to ``report_list``."""
    from .records import LoadReport, convert_rows

    label, rows = read_records(src, split=split)
    report = LoadReport(label)
    out = list(convert_rows(label, rows, lambda raw, rowno: convert(decode_row(raw), rowno), report, strict))
    if report_list is not None:
        report_list.append(report)
    return out
