"""Facts about the samples of an export, read one column at a time: review counts, provenance, geo.

Each function reads only the column it needs from every shard, in batches of ``COLUMN_BATCH_ROWS``, and
falls back on what ``export.json`` says when the shards lack the column.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: Rows per batch when reading one small column (review status, CRS, GSD, ...).
COLUMN_BATCH_ROWS = 65536


def review_stats(
    root: Path, shards: Mapping[str, list[str]], export_meta: Mapping[str, Any]
) -> dict[str, Any]:
    """``{"source": "review_status", "total": {status: n}, "by_split": {split: {status: n}}}``.

    Without a ``review_status`` column: ``export.json``'s ``review`` counts (``source: export.json``) or ``{}``.
    """
    total: Counter[str] = Counter()
    by_split: dict[str, Counter[str]] = {}
    found = False
    for split, values in _iter_column(root, shards, "review_status"):
        found = True
        counts = Counter("none" if v is None else str(v) for v in values.to_pylist())
        total.update(counts)
        by_split.setdefault(split, Counter()).update(counts)
    if not found:
        fallback = export_meta.get("review")
        return {"source": "export.json", "total": dict(fallback)} if isinstance(fallback, dict) else {}
    return {
        "source": "review_status",
        "total": dict(sorted(total.items())),
        "by_split": {s: dict(sorted(c.items())) for s, c in sorted(by_split.items())},
    }


def distinct_values(root: Path, shards: Mapping[str, list[str]], column: str, extra: Any) -> list[str]:
    """The distinct non-null values of ``column`` as strings, sorted, plus ``extra`` if it is a list."""
    values: set[str] = {str(v) for v in extra} if isinstance(extra, list) else set()
    for _, array in _iter_column(root, shards, column):
        values.update(str(v) for v in pc.unique(array).to_pylist() if v is not None)
    return sorted(values)


def geo_summary(
    root: Path, shards: Mapping[str, list[str]], export_meta: Mapping[str, Any]
) -> dict[str, Any]:
    """``{"crs": [...], "gsd_m": [min, max] | None, "bbox_wgs84": [minx, miny, maxx, maxy] | None}``."""
    crs = set(distinct_values(root, shards, "crs", export_meta.get("crs")))
    listed = export_meta.get("gsd")
    gsd: list[float] = [float(g) for g in listed if _finite(g)] if isinstance(listed, list) else []
    for _, array in _iter_column(root, shards, "gsd"):
        if pa.types.is_floating(array.type) or pa.types.is_integer(array.type):
            finite = [float(v) for v in array.to_pylist() if _finite(v)]
            gsd = [min([*gsd, *finite]), max([*gsd, *finite])] if gsd or finite else []  # a running range
    bbox = export_meta.get("bbox_wgs84")
    valid_bbox = isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)
    return {
        "crs": sorted(crs),
        "gsd_m": [min(gsd), max(gsd)] if gsd else None,
        "bbox_wgs84": [float(v) for v in bbox] if isinstance(bbox, list) and valid_bbox else None,
    }


def _iter_column(root: Path, shards: Mapping[str, list[str]], column: str) -> Iterator[tuple[str, pa.Array]]:
    """``(split, values)`` of one column of every shard, in batches (only that column is read)."""
    for split, paths in shards.items():
        for rel in paths:
            handle = pq.ParquetFile(root / rel)
            if column in handle.schema_arrow.names:
                for batch in handle.iter_batches(batch_size=COLUMN_BATCH_ROWS, columns=[column]):
                    yield split, batch.column(0)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
