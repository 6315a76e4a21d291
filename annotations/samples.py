"""Read-only access to a described dataset directory (``samples.parquet``, ``instances.parquet``, PNGs).

The tables stay columnar in memory (pyarrow) and a row is turned into Python objects only when a sample
is opened, so a directory with a hundred thousand tiles and hundreds of masks each stays cheap to serve.
Image files are found by ``tile_id`` through the table, never by a path taken from a request, and a
path in the table that points outside the data directory is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.tables import FLAG_TYPE, INSTANCES_SCHEMA, PHRASE_TYPE, RLE_TYPE, SAMPLES_SCHEMA

SEVERITIES = ("none", "info", "warning", "error")
IMAGE_LAYERS = {"tile": "tile_path", "marks": "marks_path"}

# The describe stage's output contract is defined once, in the pipeline.
MASK_TYPE = RLE_TYPE
__all__ = ["FLAG_TYPE", "INSTANCES_SCHEMA", "MASK_TYPE", "PHRASE_TYPE", "SAMPLES_SCHEMA", "SampleStore"]


@dataclass(frozen=True)
class SampleSummary:
    """What the queue needs to know about a tile: its id, worst flag severity and flag codes."""

    tile_id: str
    max_severity: str
    flag_codes: tuple[str, ...]


class SampleStore:
    """The samples and instances tables of one data directory, indexed by ``tile_id``.

    Args:
        data_dir: directory holding ``samples.parquet`` (required), ``instances.parquet`` (optional, the
            priors shown next to a sample) and the tile/marks PNGs the samples table points to.
    """

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).resolve()
        samples_path = self.data_dir / "samples.parquet"
        if not samples_path.is_file():
            raise FileNotFoundError(f"no samples.parquet in {self.data_dir}")
        self._samples: pa.Table = pq.read_table(samples_path)
        tile_ids = self._samples.column("tile_id").to_pylist()
        self._row_of: dict[str, int] = {}
        for row, tile_id in enumerate(tile_ids):
            if tile_id in self._row_of:
                raise ValueError(f"duplicate tile_id {tile_id!r} in {samples_path}")
            self._row_of[tile_id] = row
        self._tile_ids: list[str] = tile_ids

        self._instances: pa.Table | None = None
        self._instance_rows: dict[str, list[int]] = {}
        instances_path = self.data_dir / "instances.parquet"
        if instances_path.is_file():
            self._instances = pq.read_table(instances_path)
            for row, tile_id in enumerate(self._instances.column("tile_id").to_pylist()):
                self._instance_rows.setdefault(tile_id, []).append(row)

    def __len__(self) -> int:
        return len(self._tile_ids)

    def __contains__(self, tile_id: object) -> bool:
        return isinstance(tile_id, str) and tile_id in self._row_of

    @property
    def tile_ids(self) -> list[str]:
        """All tile ids in table order."""
        return list(self._tile_ids)

    @property
    def samples_schema(self) -> pa.Schema:
        return self._samples.schema

    def summaries(self) -> list[SampleSummary]:
        """One summary per tile, in table order (input to the review queue)."""
        names = self._samples.column_names
        severities = (
            self._samples.column("max_severity").to_pylist()
            if "max_severity" in names
            else ["none"] * len(self._tile_ids)
        )
        flags = self._samples.column("flags").to_pylist() if "flags" in names else [[]] * len(self._tile_ids)
        out = []
        for tile_id, severity, tile_flags in zip(self._tile_ids, severities, flags, strict=True):
            codes = tuple(str(f.get("code", "")) for f in (tile_flags or []))
            # The worst of the stored max_severity and the flags themselves, in case they disagree.
            found = [severity] + [f.get("severity") for f in (tile_flags or [])]
            worst = max((s for s in found if s in SEVERITIES), key=SEVERITIES.index, default="none")
            out.append(SampleSummary(tile_id, worst, codes))
        return out

    def get(self, tile_id: str) -> dict[str, Any] | None:
        """The full samples row of ``tile_id`` as plain Python values, or None when unknown."""
        row = self._row_of.get(tile_id)
        if row is None:
            return None
        record: dict[str, Any] = self._samples.slice(row, 1).to_pylist()[0]
        return record

    def priors(self, tile_id: str) -> list[dict[str, Any]]:
        """The instances rows of ``tile_id`` (empty when there is no instances table)."""
        if self._instances is None:
            return []
        rows = self._instance_rows.get(tile_id, [])
        if not rows:
            return []
        records: list[dict[str, Any]] = self._instances.take(pa.array(rows, type=pa.int64())).to_pylist()
        return records

    def image_path(self, tile_id: str, layer: str = "tile") -> Path | None:
        """The image file of ``tile_id`` (``layer`` is ``tile`` or ``marks``), or None.

        The relative path comes from the samples table; one that resolves outside the data directory (an
        absolute path, ``..``, a symlink leading out) is refused like a missing file.
        """
        column = IMAGE_LAYERS.get(layer)
        row = self._row_of.get(tile_id)
        if column is None or row is None or column not in self._samples.column_names:
            return None
        relative = self._samples.column(column)[row].as_py()
        if not relative:
            return None
        candidate = (self.data_dir / str(relative)).resolve()
        if not candidate.is_relative_to(self.data_dir) or not candidate.is_file():
            return None
        return candidate
