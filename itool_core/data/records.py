"""The canonical example record, its difficulty features, and bad-row reporting shared by every loader.

Difficulty features are the three criteria of §4.2 of the paper: number of candidate tools, string length of
the tool set, and number of calls in the target.  They are computed here, once, from the canonical form, so
every source gets them the same way.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..calls import ToolCall, calls_from_json


@dataclass
class Example:
    id: str
    source: str
    category: str
    tools: list[dict]
    messages: list[dict]
    target: list[ToolCall]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        tools_json = json.dumps(self.tools, ensure_ascii=False)
        return {
            "id": self.id,
            "source": self.source,
            "category": self.category,
            "tools": tools_json,
            "messages": json.dumps(self.messages, ensure_ascii=False),
            "target": json.dumps([c.to_json() for c in self.target], ensure_ascii=False),
            "meta": json.dumps(self.meta, ensure_ascii=False, default=str),
            "n_tools": len(self.tools),
            "tools_chars": len(tools_json),
            "n_calls": len(self.target),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Example:
        return cls(
            id=row["id"],
            source=row["source"],
            category=row["category"],
            tools=json.loads(row["tools"]),
            messages=json.loads(row["messages"]),
            target=calls_from_json(row["target"]),
            meta=json.loads(row["meta"]),
        )


#: Input size limits, in characters: one string field, and all strings of a row together.  A row past either
#: is skipped (reported with its file, row and field), the others load: real tool-use rows are under 100 k
#: characters, and one 50 MB field would otherwise cost every later stage (tokenising, stats) minutes.
MAX_FIELD_CHARS = 1_000_000
MAX_ROW_CHARS = 4_000_000


def check_size(raw: Any) -> None:
    """:class:`FieldError` naming the string field over :data:`MAX_FIELD_CHARS` (its path, e.g.
    ``conversations[3].value``), or ``<row>`` when the row's strings together pass :data:`MAX_ROW_CHARS`; an
    undecoded line (a string) is measured as a whole.  One pass, no recursion."""
    if isinstance(raw, (str, bytes)):
        if len(raw) > MAX_ROW_CHARS:
            raise FieldError("<row>", f"{len(raw):,} characters, over the row limit of {MAX_ROW_CHARS:,}")
        return
    total = 0
    stack: list[tuple[str, Any]] = [("", raw)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            if len(v) > MAX_FIELD_CHARS:
                raise FieldError(path or "<row>", f"{len(v):,} characters, over the field limit of {MAX_FIELD_CHARS:,}")
            total += len(v)
            if total > MAX_ROW_CHARS:
                raise FieldError("<row>", f"over {MAX_ROW_CHARS:,} characters of text, the row limit")
        elif isinstance(v, dict):
            stack.extend((f"{path}.{k}" if path else str(k), x) for k, x in reversed(list(v.items())))
        elif isinstance(v, (list, tuple)):
            stack.extend((f"{path}[{i}]", x) for i, x in reversed(list(enumerate(v))))


class BadRow(ValueError):
    """One input row that cannot be normalised; names the file, the row and the field."""

    def __init__(self, file: str, row: int | str, field_name: str, reason: str):
        self.file, self.row, self.field, self.reason = str(file), row, field_name, reason
        super().__init__(f"{file}: row {row}: field {field_name!r}: {reason}")


class FieldError(ValueError):
    """Raised inside a row converter; the loader turns it into a :class:`BadRow` with file and row."""

    def __init__(self, field_name: str, reason: str):
        self.field, self.reason = field_name, reason
        super().__init__(f"field {field_name!r}: {reason}")


@dataclass
class LoadReport:
    file: str
    loaded: int = 0
    skipped: list[BadRow] = field(default_factory=list)
    #: Rows that are well formed but give no example (a ToolACE dialogue whose assistant turns are all text).
    no_example: list[int | str] = field(default_factory=list)

    def summary(self) -> str:
        empty = ""
        if self.no_example:
            shown = ", ".join(map(str, self.no_example[:10])) + (", ..." if len(self.no_example) > 10 else "")
            empty = f"\n  {len(self.no_example)} row(s) gave no example (nothing to learn from): rows {shown}"
        if not self.skipped:
            return f"{self.file}: {self.loaded} rows loaded, none skipped{empty}"
        reasons = Counter(f"{b.field}: {b.reason.split(':')[0]}" for b in self.skipped)
        lines = [f"{self.file}: {self.loaded} rows loaded, {len(self.skipped)} skipped"]
        lines += [f"  {n} × {r}" for r, n in reasons.most_common()]
        return "\n".join(lines) + empty


#: A row's number: its index in the file, or its id where the source has one.
_RowNo = TypeVar("_RowNo", bound=int | str)


def convert_rows(
    file: str,
    rows: Iterable[tuple[_RowNo, Any]],
    convert: Callable[[Any, _RowNo], Example | list[Example] | None],
    report: LoadReport,
    strict: bool = False,
) -> Iterator[Example]:
    """Run ``convert`` over numbered raw rows, collecting bad ones (or raising the first if ``strict``)."""
    for rowno, raw in rows:
        try:
            check_size(raw)
            out = convert(raw, rowno)
        except FieldError as e:
            bad = BadRow(file, rowno, e.field, e.reason)
            if strict:
                raise bad from None
            report.skipped.append(bad)
            continue
        except BadRow as row_error:
            if strict:
                raise
            report.skipped.append(row_error)
            continue
        except (ValueError, TypeError, OverflowError, RecursionError) as e:
            # A row the converter did not anticipate (a value no check foresaw) is that row's failure: name it
            # and go on, rather than abort the whole file with a traceback and no row.
            bad = BadRow(file, rowno, "<row>", f"{type(e).__name__}: {str(e)[:300]}")
            if strict:
                raise bad from e
            report.skipped.append(bad)
            continue
        if out is None:
            continue
        if isinstance(out, list) and not out:
            report.no_example.append(rowno)
            continue
        for ex in out if isinstance(out, list) else [out]:
            report.loaded += 1
            yield ex
