"""Read-only access to a described dataset directory (``samples.parquet``, ``instances.parquet``, PNGs).

Nothing is loaded up front: the sample index in the review database (``index.py``) says which row
group of ``samples.parquet`` holds a tile, and ``get`` reads that row group in batches of
``batch_rows`` rows until it reaches the tile, so memory is bounded by one batch whatever the size of
the dataset. Priors come from the row groups of ``instances.parquet`` that hold the tile (without the
``rle`` column). Image files are found by ``tile_id`` through the index, never by a path taken from a
request, and a path in the table that points outside the data directory is refused.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.tables import FLAG_TYPE, INSTANCES_SCHEMA, PHRASE_TYPE, RLE_TYPE, SAMPLES_SCHEMA

from .db import instance_groups, sample_index
from .index import SEVERITIES, SampleSummary

IMAGE_LAYERS = {"tile": "tile_path", "marks": "marks_path"}
READ_BUFFER_BYTES = 1 << 20

# The describe stage's output contract is defined once, in the pipeline.
MASK_TYPE = RLE_TYPE
__all__ = [
    "FLAG_TYPE",
    "INSTANCES_SCHEMA",
    "MASK_TYPE",
    "PHRASE_TYPE",
    "SAMPLES_SCHEMA",
    "SEVERITIES",
    "SampleStore",
    "SampleSummary",
    "normalise_flags",
]


def normalise_flags(flags: Any) -> list[dict[str, Any]]:
    """Flags with every field present: ``code, severity, detail`` and the optional ``phrase`` (index
    into the sample's phrases, None for sample-level flags) and ``instance_ids`` (None when the flag is
    not about particular instances). Rows written before those fields existed lack them."""
    out = []
    for flag in flags or []:
        phrase = flag.get("phrase")
        ids = flag.get("instance_ids")
        out.append(
            {
                "code": str(flag.get("code") or ""),
                "severity": str(flag.get("severity") or "info"),
                "detail": str(flag.get("detail") or ""),
                "phrase": int(phrase) if phrase is not None else None,
                "instance_ids": [int(i) for i in ids] if ids is not None else None,
            }
        )
    return out


class SampleStore:
    """The samples and instances tables of one data directory, read one tile at a time.

    Args:
        data_dir: directory holding ``samples.parquet`` (required), ``instances.parquet`` (optional, the
            priors shown next to a sample) and the tile/marks PNGs the samples table points to.
        engine: the review database holding the sample index (``index.ensure_index``).
        batch_rows: rows decoded at a time while looking for a tile in its row group.
    """

    def __init__(self, data_dir: Path | str, engine: Engine, batch_rows: int = 64) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.samples_path = self.data_dir / "samples.parquet"
        if not self.samples_path.is_file():
            raise FileNotFoundError(f"no samples.parquet in {self.data_dir}")
        self.instances_path = self.data_dir / "instances.parquet"
        self.engine = engine
        self.batch_rows = batch_rows
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(sample_index)).scalar_one())

    def __contains__(self, tile_id: object) -> bool:
        return isinstance(tile_id, str) and self.location(tile_id) is not None

    def location(self, tile_id: str) -> dict[str, Any] | None:
        """The sample's index row (row group, row, paths, severity, queue position), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(sample_index).where(sample_index.c.tile_id == tile_id)).first()
        return None if row is None else dict(row._mapping)

    def get(self, tile_id: str) -> dict[str, Any] | None:
        """The full samples row of ``tile_id`` as plain Python values (flags normalised), or None."""
        where = self.location(tile_id)
        if where is None:
            return None
        group, row = int(where["row_group"]), int(where["row_index"])
        with self._lock:
            parquet = pq.ParquetFile(self.samples_path, buffer_size=READ_BUFFER_BYTES)
            seen = 0
            for batch in parquet.iter_batches(batch_size=self.batch_rows, row_groups=[group]):
                if row < seen + batch.num_rows:
                    record: dict[str, Any] = batch.slice(row - seen, 1).to_pylist()[0]
                    break
                seen += batch.num_rows
            else:
                raise ValueError(f"{self.samples_path} changed: row {row} of row group {group} is gone")
        if record.get("tile_id") != tile_id:
            raise ValueError(f"{self.samples_path} changed since it was indexed (expected {tile_id!r})")
        record["flags"] = normalise_flags(record.get("flags"))
        return record

    def priors(self, tile_id: str) -> list[dict[str, Any]]:
        """The instances rows of ``tile_id`` without their masks (empty without an instances table)."""
        if not self.instances_path.is_file():
            return []
        with self.engine.connect() as conn:
            groups = sorted(
                conn.execute(
                    sa.select(instance_groups.c.row_group).where(instance_groups.c.tile_id == tile_id)
                ).scalars()
            )
        if not groups:
            return []
        out: list[dict[str, Any]] = []
        with self._lock:
            parquet = pq.ParquetFile(self.instances_path, buffer_size=READ_BUFFER_BYTES)
            columns = [c for c in parquet.schema_arrow.names if c != "rle"]
            for batch in parquet.iter_batches(batch_size=1024, row_groups=groups, columns=columns):
                picked = batch.filter(pc.equal(batch.column("tile_id"), tile_id))
                if picked.num_rows:
                    out.extend(picked.to_pylist())
        return out

    def image_path(self, tile_id: str, layer: str = "tile") -> Path | None:
        """The image file of ``tile_id`` (``layer`` is ``tile`` or ``marks``), or None.

        The relative path comes from the samples table; one that resolves outside the data directory (an
        absolute path, ``..``, a symlink leading out) is refused like a missing file.
        """
        column = IMAGE_LAYERS.get(layer)
        where = self.location(tile_id) if column else None
        if column is None or where is None:
            return None
        relative = where.get(column)
        if not relative:
            return None
        candidate = (self.data_dir / str(relative)).resolve()
        if not candidate.is_relative_to(self.data_dir) or not candidate.is_file():
            return None
        return candidate
