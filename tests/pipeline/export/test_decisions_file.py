"""A review decisions Parquet file that cannot be used is an error naming the file and the problem,
whether it is indexed (``ReviewDecisions.from_file``) or streamed (``iter_file_decisions``)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.export.decisions import DecisionsError, ReviewDecisions, iter_file_decisions


def test_junk_and_incomplete_files_are_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    partial = tmp_path / "partial.parquet"
    pq.write_table(pa.Table.from_pylist([{"tile_id": "t1", "reviewer": "alice"}]), partial)
    for read in (ReviewDecisions.from_file, lambda p: list(iter_file_decisions(p))):
        with pytest.raises(DecisionsError, match=r"junk\.parquet: not a readable decisions Parquet file"):
            read(junk)
        with pytest.raises(DecisionsError, match=r"partial\.parquet: decisions file lacks column\(s\) review_status"):
            read(partial)


def test_optional_columns_may_be_missing(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"tile_id": "t1", "review_status": "accepted"}]), path)
    (row,) = iter_file_decisions(path)
    assert row["tile_id"] == "t1" and row["review_status"] == "accepted" and row["reviewer"] is None
    assert ReviewDecisions.from_file(path).source == str(path)
