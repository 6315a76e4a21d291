"""The per-sample index of a release (``meta/samples.parquet``): ``id``, ``split``, ``content_sha256``.

Built while scanning an export; the changelog diffs two releases' indexes sample by sample.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.release.checksums import row_hashes
from pipeline.release.errors import ExportError

#: Rows per record batch when hashing sample shards: rows carry their tile PNG, so a batch is a few MB.
HASH_BATCH_ROWS = 32


@dataclass(frozen=True)
class SampleIndex:
    """The sample index table (``id``, ``split``, ``content_sha256``) and the rows of each split."""

    table: pa.Table
    split_rows: dict[str, int]


def build_sample_index(root: Path, shards: Mapping[str, list[str]]) -> SampleIndex:
    """Per-sample ``id``, ``split`` and ``content_sha256`` (see :func:`row_hashes`) plus rows per split.

    Shards are read one row group at a time and hashed ``HASH_BATCH_ROWS`` rows at a time, so memory
    follows one row group (the exporter writes them of at most 64 rows / 32 MB), not the shard; what is kept is the index itself (three short strings per sample).

    Raises :class:`ExportError` on a null or duplicated id, naming the id and the shard.
    """
    ids: list[str] = []
    splits: list[str] = []
    hashes: list[str] = []
    seen: dict[str, str] = {}
    rows: dict[str, int] = {}
    for split, paths in sorted(shards.items()):
        rows[split] = 0
        for rel in paths:
            for batch in _row_batches(root / rel):
                batch_ids = batch.column("id").to_pylist()
                for sample_id in batch_ids:
                    if sample_id is None:
                        raise ExportError(f"{rel}: null sample id")
                    sample_id = str(sample_id)
                    if sample_id in seen:
                        raise ExportError(f"duplicate sample id {sample_id!r} in {seen[sample_id]} and {rel}")
                    seen[sample_id] = rel
                    ids.append(sample_id)
                hashes.extend(row_hashes(batch))
                splits.extend([split] * batch.num_rows)
                rows[split] += batch.num_rows
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "split": pa.array(splits, pa.string()),
            "content_sha256": pa.array(hashes, pa.string()),
        }
    )
    return SampleIndex(table=table, split_rows=rows)


def _row_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """A shard's rows, one row group at a time (``iter_batches`` reads ahead several), in small batches."""
    handle = pq.ParquetFile(path, pre_buffer=False)
    for group in range(handle.num_row_groups):
        yield from handle.read_row_group(group, use_threads=False).to_batches(max_chunksize=HASH_BATCH_ROWS)
