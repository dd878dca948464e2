"""Versioned pyarrow schemas for every artifact table of the pipeline.

Every Parquet file the pipeline writes carries its schema name and version in the file metadata
(``itool.schema = "<name>/<version>"``) and is validated against it when read back (see ``artifacts.py``), so
a stage never silently consumes a table written by another version of the code.

``examples`` is the one record schema for tool-use data (§4.1 of the paper: the training set D of
(question q, tools T, answer y) triples).  ``tools``, ``messages``, ``target`` and ``meta`` are JSON text: the
nested shapes differ between sources and Parquet nested types would make schema evolution painful.  The three
difficulty features of §4.2 (number of candidate tools, string length of the tool set, number of calls) are
plain columns so that splitting and statistics never re-parse JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SCHEMA_KEY = b"itool.schema"


@dataclass(frozen=True)
class TableSchema:
    name: str
    version: int
    schema: pa.Schema
    doc: str = ""

    @property
    def tag(self) -> str:
        return f"{self.name}/{self.version}"

    def with_metadata(self) -> pa.Schema:
        return self.schema.with_metadata({SCHEMA_KEY: self.tag.encode()})


EXAMPLES = TableSchema(
    "examples",
    1,
    pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),  # bfcl | bfcl_unused | apibank | toolace | xlam | ...
            pa.field("category", pa.string(), nullable=False),  # e.g. simple_python, exec_simple, apibank_level1
            pa.field("tools", pa.string(), nullable=False),  # JSON list of function schemas (BFCL/OpenAI style)
            pa.field("messages", pa.string(), nullable=False),  # JSON chat [{role, content}] up to the call
            pa.field("target", pa.string(), nullable=False),  # JSON [{name, arguments}]; [] = no call is correct
            pa.field("meta", pa.string(), nullable=False),  # JSON object, source-specific (ground truth, turns...)
            pa.field("n_tools", pa.int32(), nullable=False),
            pa.field("tools_chars", pa.int32(), nullable=False),
            pa.field("n_calls", pa.int32(), nullable=False),
        ]
    ),
    doc="tool-use examples in the one canonical form",
)

ALL = {s.name: s for s in (EXAMPLES,)}


def register(schema: TableSchema) -> TableSchema:
    """Add a stage's schema (pairs, eval samples, buffers...) to the registry used when reading by tag."""
    ALL[schema.name] = schema
    return schema
