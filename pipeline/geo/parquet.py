"""GeoParquet 1.1 files written with pyarrow and shapely alone (no geopandas needed to write).

:class:`GeoParquetWriter` streams rows into a ``ParquetWriter`` under a temporary name (one row group per
:meth:`~GeoParquetWriter.write`), keeps the running bounding box and geometry types, and on
:meth:`~GeoParquetWriter.close` adds the ``geo`` metadata and renames the file into place:

* ``geometry``: WKB (``encoding: WKB``), the primary column; polygons and multipolygons only;
* ``bbox``: a ``struct<xmin, ymin, xmax, ymax>`` per row, declared as the 1.1 bbox ``covering`` so readers
  can skip row groups by their statistics;
* ``crs``: PROJJSON, or explicitly ``null`` for layers in source-image pixels (no CRS; ``geopixeld`` key
  says so);
* the file-level ``bbox`` and the ``geometry_types`` actually written.

The Arrow schema is not stored in the file (``store_schema=False``) so the footer's key/value metadata,
completed at close, is what readers see as the schema metadata.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from shapely.geometry.base import BaseGeometry

GEOPARQUET_VERSION = "1.1.0"
GEOMETRY_COLUMN = "geometry"
BBOX_COLUMN = "bbox"
BBOX_TYPE = pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])
#: Key of this project's own file metadata (coordinates, merge key, dropped counts).
PROJECT_KEY = "geopixeld"


def geo_schema(attributes: pa.Schema) -> pa.Schema:
    """The file schema: the attribute columns, then ``bbox`` and ``geometry``."""
    return pa.schema([*attributes, pa.field(BBOX_COLUMN, BBOX_TYPE), pa.field(GEOMETRY_COLUMN, pa.binary())])


class GeoParquetWriter:
    """Write one GeoParquet file incrementally (see the module docstring).

    Args:
        path: final file path; data goes to ``path + '.tmp'`` until :meth:`close`.
        attributes: schema of the non-geometry columns.
        crs: PROJJSON of the coordinates, or ``None`` for pixel coordinates without a CRS.
        project: extra metadata stored under the ``geopixeld`` key (JSON).
    """

    def __init__(
        self, path: Path, attributes: pa.Schema, crs: dict[str, Any] | None, project: dict[str, Any]
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.attributes = attributes
        self.schema = geo_schema(attributes)
        self.crs = crs
        self.project = dict(project)
        self.rows = 0
        self.types: set[str] = set()
        self.bounds = [math.inf, math.inf, -math.inf, -math.inf]
        self._writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd", store_schema=False)

    def write(self, rows: list[dict[str, Any]], geometries: list[BaseGeometry]) -> None:
        """Append rows (dicts keyed by attribute column) with their geometries, as one row group."""
        if not rows:
            return
        if len(rows) != len(geometries):
            raise ValueError(f"{len(rows)} rows but {len(geometries)} geometries")
        geoms = np.asarray(geometries, dtype=object)
        bounds = shapely.bounds(geoms)
        table = pa.Table.from_pylist(rows, schema=self.attributes)
        bbox = pa.StructArray.from_arrays(
            [pa.array(bounds[:, i], pa.float64()) for i in range(4)], fields=list(BBOX_TYPE)
        )
        table = table.append_column(self.schema.field(BBOX_COLUMN), bbox)
        table = table.append_column(self.schema.field(GEOMETRY_COLUMN), pa.array(shapely.to_wkb(geoms), pa.binary()))
        self._writer.write_table(table, row_group_size=len(rows))
        self.rows += len(rows)
        self.types.update(g.geom_type for g in geometries)
        self.bounds = [
            min(self.bounds[0], float(bounds[:, 0].min())),
            min(self.bounds[1], float(bounds[:, 1].min())),
            max(self.bounds[2], float(bounds[:, 2].max())),
            max(self.bounds[3], float(bounds[:, 3].max())),
        ]

    def metadata(self) -> dict[str, Any]:
        """The ``geo`` metadata object for what has been written so far."""
        column: dict[str, Any] = {
            "encoding": "WKB",
            "geometry_types": sorted(self.types),
            "crs": self.crs,
            "edges": "planar",
            "covering": {"bbox": {k: [BBOX_COLUMN, k] for k in ("xmin", "ymin", "xmax", "ymax")}},
        }
        if self.rows:
            column["bbox"] = self.bounds
        return {"version": GEOPARQUET_VERSION, "primary_column": GEOMETRY_COLUMN, "columns": {GEOMETRY_COLUMN: column}}

    def close(self) -> Path:
        """Add the metadata, close and rename into place; returns the final path."""
        self._writer.add_key_value_metadata(
            {"geo": json.dumps(self.metadata()), PROJECT_KEY: json.dumps(self.project, default=str)}
        )
        self._writer.close()
        self.tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file (nothing appears under the final name)."""
        try:
            self._writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> GeoParquetWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def read_geo_metadata(path: str | Path) -> dict[str, Any]:
    """The parsed ``geo`` and ``geopixeld`` metadata of a GeoParquet file: ``{"geo": ..., "geopixeld": ...}``."""
    meta = pq.ParquetFile(path).metadata.metadata or {}
    return {
        key: json.loads(meta[key.encode()]) if key.encode() in meta else None
        for key in ("geo", PROJECT_KEY)
    }
