"""Table schemas and atomic writes: flags carry their phrase, old files without it still read."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.tables import FLAG_TYPE, SAMPLES_SCHEMA, write_table


def test_flags_name_their_phrase_and_old_flags_read_as_null(tmp_path: Path) -> None:
    flags = [
        {"code": "mark_leak", "severity": "warning", "detail": "x", "phrase": 2, "instance_ids": [7]},
        {"code": "no_grounding", "severity": "info", "detail": "y"},  # sample-level: no phrase
    ]
    arr = pa.array([flags], type=pa.list_(FLAG_TYPE))
    [[a, b]] = arr.to_pylist()
    assert a["phrase"] == 2 and a["instance_ids"] == [7]
    assert b["phrase"] is None and b["instance_ids"] is None
    old = pa.table({"flags": pa.array([[{"code": "c", "severity": "info", "detail": "d"}]])})
    pq.write_table(old, tmp_path / "old.parquet")
    read = pq.read_table(tmp_path / "old.parquet").column("flags").to_pylist()
    assert read == [[{"code": "c", "severity": "info", "detail": "d"}]]  # readers use .get("phrase")


def test_write_table_is_atomic(tmp_path: Path) -> None:
    out = tmp_path / "samples.parquet"
    write_table([], SAMPLES_SCHEMA, out)
    assert pq.read_table(out).num_rows == 0 and not list(tmp_path.glob("*.tmp"))
    assert pq.read_schema(out).field("flags").type == pa.list_(FLAG_TYPE)
