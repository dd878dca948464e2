"""Schema-checked atomic Parquet artifacts."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

from itool_core.artifacts import (
    SchemaMismatch,
    atomic_write_json,
    read_marker,
    read_table,
    ref_for,
    sha256_file,
    write_marker,
    write_table,
)
from itool_core.calls import ToolCall
from itool_core.data.records import Example
from itool_core.schemas import EXAMPLES


def _examples(n=3):
    return [
        Example(
            id=f"t/{i}",
            source="test",
            category="simple",
            tools=[{"name": "f", "description": "d", "parameters": {"type": "dict", "properties": {}}}] * (i + 1),
            messages=[{"role": "user", "content": f"question {i} — ünïcode"}],
            target=[ToolCall("f", {"a": i, "b": [1.5, None, {"k": "v"}]})] * i,
            meta={"i": i},
        )
        for i in range(n)
    ]


def test_schema_round_trip(tmp_path):
    exs = _examples()
    ref = write_table([e.to_row() for e in exs], tmp_path / "x.parquet", EXAMPLES)
    assert ref.rows == 3 and ref.schema == "examples/1" and ref.sha256 == sha256_file(ref.path)
    back = [Example.from_row(r) for r in read_table(ref, EXAMPLES).to_pylist()]
    assert back == exs
    rows = read_table(ref).to_pylist()
    assert [r["n_tools"] for r in rows] == [1, 2, 3] and [r["n_calls"] for r in rows] == [0, 1, 2]
    assert ref_for(ref.path) == ref


def test_schema_violations_are_refused(tmp_path):
    rows = [e.to_row() for e in _examples(1)]
    del rows[0]["target"]
    with pytest.raises(SchemaMismatch, match="target"):
        write_table(pa.Table.from_pylist(rows), tmp_path / "bad.parquet", EXAMPLES)
    assert not (tmp_path / "bad.parquet").exists()
    # a plain Parquet file without our schema tag is refused on read
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["x"]}), tmp_path / "foreign.parquet")
    with pytest.raises(SchemaMismatch, match="schema tag"):
        read_table(tmp_path / "foreign.parquet", EXAMPLES)


def test_tampered_artifact_is_detected(tmp_path):
    ref = write_table([e.to_row() for e in _examples(2)], tmp_path / "x.parquet", EXAMPLES)
    write_table([e.to_row() for e in _examples(3)], tmp_path / "x.parquet", EXAMPLES)
    with pytest.raises(ValueError, match="content changed"):
        read_table(ref)


def test_writer_killed_midway_leaves_no_file(tmp_path):
    """SIGKILL a process while it is inside write_table: nothing appears under the final name."""
    final = tmp_path / "out.parquet"
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import time, pathlib
        import pyarrow.parquet as pq
        from itool_core import artifacts
        from itool_core.schemas import EXAMPLES
        real = pq.write_table
        def slow_write(table, where, **kw):
            real(table, where, **kw)          # the bytes are on disk (under the temp name) ...
            pathlib.Path({str(ready)!r}).touch()
            time.sleep(60)                    # ... and the writer dies before the rename
        artifacts.pq.write_table = slow_write
        rows = [dict(id=str(i), source='s', category='c', tools='[]', messages='[]', target='[]', meta='{{}}',
                     n_tools=0, tools_chars=2, n_calls=0) for i in range(1000)]
        artifacts.write_table(rows, {str(final)!r}, EXAMPLES)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 120
        while not ready.exists():
            assert proc.poll() is None, "writer exited early"
            assert time.time() < deadline, "writer never reached the write"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not final.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("ready",)]
    assert all(name.startswith(".out.parquet.") and name.endswith(".tmp") for name in leftovers)


def test_atomic_json_replaces_whole_file(tmp_path):
    p = tmp_path / "s.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"b": 2})
    assert p.read_text().strip() == '{\n  "b": 2\n}'
    assert [x.name for x in tmp_path.iterdir()] == ["s.json"]


def test_marker_is_read_back_only_under_its_fingerprint(tmp_path):
    p = tmp_path / "done.json"
    assert read_marker(p, "abc") is None  # nothing finished yet
    write_marker(p, "abc", outputs={"x": 1}, seconds=2.5)
    assert read_marker(p, "abc") == {"fingerprint": "abc", "outputs": {"x": 1}, "seconds": 2.5}
    assert read_marker(p, "abd") is None  # the inputs changed: redo the work
    p.write_text('{"fingerprint": "abc", "outp')  # a marker cut by a foreign writer reads as absent
    assert read_marker(p, "abc") is None
    p.write_text('["abc"]')
    assert read_marker(p, "abc") is None
