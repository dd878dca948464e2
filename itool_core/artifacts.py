"""Atomic, schema-checked Parquet artifacts and the references stages exchange.

A stage returns an :class:`ArtifactRef` (path + sha256 + schema tag + row count) instead of an object, so the
orchestration layer can key caches on content and a test can prove what a stage consumed.  Every write goes
to a temporary file in the destination folder and is renamed into place only when complete (``os.replace``
is atomic on POSIX), so a killed run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.parquet as pq

from .schemas import ALL, SCHEMA_KEY, TableSchema


class SchemaMismatch(ValueError):
    """A table does not have the columns/types/version its reader expects."""


class OutputPathError(OSError):
    """An output path that cannot be written (under an existing file, in a read-only folder, a folder)."""


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`Path` if a file can be created there; :class:`OutputPathError` naming it if not.

    Call it before the work whose result goes there, so a bad ``-o`` fails in a second, not after the run.
    (A superuser passes the permission check on a read-only folder; the write itself then still fails as
    :class:`OutputPathError` through :func:`atomic_path`.)"""
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{path}: is a folder; give a file name")
    anc = p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise OutputPathError(f"{path}: cannot be created: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputPathError(f"{path}: cannot be created: folder {anc} is not writable")
    return p


@dataclass(frozen=True)
class ArtifactRef:
    path: str
    sha256: str
    schema: str = ""
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArtifactRef:
        return cls(**d)

    def verify(self) -> None:
        actual = sha256_file(self.path)
        if actual != self.sha256:
            raise ValueError(f"{self.path}: content changed (sha256 {actual[:12]}… != {self.sha256[:12]}…)")


@dataclass(frozen=True)
class ContentRef:
    """A file or folder named by its content: a model folder (merged policy), a data source file.

    ``sha256`` is the content hash (:func:`sha256_file` / :func:`sha256_tree`), or — for a hub id that is not on
    disk — a :func:`fingerprint` of the name (hashing an 8B checkpoint on every run would cost minutes)."""

    path: str
    sha256: str

    @classmethod
    def of(cls, path: str | os.PathLike) -> ContentRef:
        p = Path(path)
        return cls(str(p), sha256_tree(p) if p.is_dir() else sha256_file(p))

    @classmethod
    def named(cls, name: str, path: str | None = None) -> ContentRef:
        """A model known by name (embedded or hub id): keyed by the name, not by hashing its weights."""
        return cls(str(path or name), fingerprint("model", name))


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and x.is_integer() and abs(x) < 2**53:
        # 5 and 5.0 are one value: a record read back through a float annotation must hash as it did
        return int(x)
    if is_dataclass(x):
        # is_dataclass also admits a dataclass *class*; asdict raises TypeError for one, as it always did
        return {k: _jsonable(v) for k, v in asdict(cast(Any, x)).items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, Path):
        return str(x)
    return x


#: Plain JSON values of dataclasses, paths and nested containers (what :func:`fingerprint` hashes).
jsonable = _jsonable


def fingerprint(*parts: Any) -> str:
    """A short, stable hash of JSON-able parts (dataclasses, paths, nested lists): the key a finished stage is
    recorded under, so a re-run can tell whether its inputs changed."""
    return hashlib.sha256(json.dumps(_jsonable(parts), sort_keys=True, default=str).encode()).hexdigest()[:20]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def sha256_tree(root: str | os.PathLike) -> str:
    """Content hash of a folder (e.g. a LoRA adapter or merged model): relative paths + file hashes."""
    h = hashlib.sha256()
    root = Path(root)
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # read-only folder, a file where a folder must be: say which path, not a traceback
        raise OutputPathError(f"{path}: cannot be written: {e.strerror or e}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the final file the permissions a plain open() would (umask applies)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_marker(path: str | os.PathLike, fp: str, **fields: Any) -> None:
    """Record that the work behind ``path`` finished from inputs with fingerprint ``fp`` (atomically: a marker
    is whole or absent).  Written last, after the work's own files are in place."""
    atomic_write_json(path, {"fingerprint": fp, **fields})


def read_marker(path: str | os.PathLike, fp: str) -> dict[str, Any] | None:
    """The fields of a :func:`write_marker` marker recorded under fingerprint ``fp``; None when there is no
    marker, it is unreadable, or the inputs changed since (another fingerprint) — then the work is redone."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and saved.get("fingerprint") == fp else None


def _as_table(data: pa.Table | Iterable[Mapping[str, Any]] | Any, schema: TableSchema) -> pa.Table:
    if isinstance(data, pa.Table):
        table = data
    elif hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas DataFrame
        table = pa.Table.from_pandas(data, preserve_index=False)
    else:
        table = pa.Table.from_pylist(list(data), schema=schema.schema)
    missing = [f.name for f in schema.schema if f.name not in table.column_names]
    if missing:
        raise SchemaMismatch(f"{schema.tag}: missing columns {missing}")
    table = table.select([f.name for f in schema.schema])
    try:
        table = table.cast(schema.schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as e:
        raise SchemaMismatch(f"{schema.tag}: {e}") from None
    return table.replace_schema_metadata({SCHEMA_KEY: schema.tag.encode()})


def write_table(data: Any, path: str | os.PathLike, schema: TableSchema) -> ArtifactRef:
    """Validate ``data`` against ``schema`` and write it atomically as Parquet; return its reference."""
    table = _as_table(data, schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return ArtifactRef(str(Path(path)), sha256_file(path), schema.tag, table.num_rows)


def _checked_schema(path: str, found: pa.Schema, schema: TableSchema | None) -> TableSchema:
    """The expected schema of a table at ``path`` whose Arrow schema is ``found``; :class:`SchemaMismatch` if
    its tag, columns or types do not match."""
    tag = (found.metadata or {}).get(SCHEMA_KEY, b"").decode()
    if schema is None:
        name = tag.split("/")[0]
        if name not in ALL:
            raise SchemaMismatch(f"{path}: no known itool schema tag (found {tag!r})")
        schema = ALL[name]
    if tag != schema.tag:
        raise SchemaMismatch(f"{path}: schema tag {tag!r}, expected {schema.tag!r}")
    for f in schema.schema:
        if f.name not in found.names:
            raise SchemaMismatch(f"{path}: missing column {f.name!r}")
        actual = found.field(f.name).type
        if actual != f.type:
            raise SchemaMismatch(f"{path}: column {f.name!r} has type {actual}, expected {f.type}")
    return schema


def check_table_file(path: str | os.PathLike, schema: TableSchema | None = None) -> TableSchema:
    """Check a Parquet artifact's schema from its footer alone (no rows read): :class:`SchemaMismatch` naming
    the file for a file that is not Parquet or not of ``schema``, ``FileNotFoundError`` for a missing one."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no such file" if not p.exists() else f"{path}: is a folder, not a file")
    try:
        found = pq.read_schema(p)
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaMismatch(f"{path}: not a Parquet file ({str(e).splitlines()[0][:120]})") from None
    return _checked_schema(str(path), found, schema)


def read_table(src: str | os.PathLike | ArtifactRef, schema: TableSchema | None = None) -> pa.Table:
    """Read a Parquet artifact and check its schema tag, columns and types (and content hash for a ref)."""
    if isinstance(src, ArtifactRef):
        src.verify()
        path = src.path
    else:
        path = str(src)
    table = pq.read_table(path)
    schema = _checked_schema(path, table.schema, schema)
    return table.select([f.name for f in schema.schema])


def ref_for(path: str | os.PathLike, schema: TableSchema | None = None) -> ArtifactRef:
    table = read_table(path, schema)
    tag = (table.schema.metadata or {}).get(SCHEMA_KEY, b"").decode()
    return ArtifactRef(str(path), sha256_file(path), tag, table.num_rows)
