"""Coordinate reference systems of the geo layers: PROJJSON, file-name slugs and reprojection.

Everything goes through rasterio (GDAL/PROJ), a core dependency, so the core install needs no pyproj.
A ``None`` CRS means a source raster without georeferencing: its layers stay in source-image pixels.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform as warp_transform
from shapely.geometry.base import BaseGeometry

from .errors import GeoError

#: Slug of the group of sources that have no CRS (their layers are in pixel coordinates).
PIXEL_SLUG = "pixel"


def parse_crs(text: str) -> CRS:
    """A CRS from ``EPSG:n``, WKT or a PROJ string; :class:`GeoError` naming the text when invalid."""
    try:
        return CRS.from_user_input(text)
    except (CRSError, ValueError, TypeError) as exc:
        raise GeoError(f"invalid CRS {text!r}: {exc}") from None


def normalise(text: str) -> str:
    """``EPSG:n`` when the CRS has an EPSG code, else its WKT (the form ``tiles.parquet`` records)."""
    crs = parse_crs(text)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def projjson(text: str) -> dict[str, Any]:
    """The CRS as a PROJJSON object (what GeoParquet's ``crs`` field holds)."""
    return dict(parse_crs(text).to_dict(projjson=True))


def slug(text: str | None) -> str:
    """A file-name-safe name for a CRS: ``epsg-32617``, ``pixel`` (no CRS) or ``crs-<sha1[:10]>`` (WKT)."""
    if text is None:
        return PIXEL_SLUG
    match = re.fullmatch(r"EPSG:(\d+)", text.strip(), flags=re.IGNORECASE)
    if match:
        return f"epsg-{match[1]}"
    return "crs-" + hashlib.sha1(text.encode()).hexdigest()[:10]


def reprojector(src: str, dst: str) -> Callable[[BaseGeometry], BaseGeometry]:
    """A function mapping a geometry's coordinates from ``src`` to ``dst`` (x/y order: east, north).

    Longitude/latitude targets come out as x = longitude, y = latitude (GeoParquet's axis order).
    """
    parse_crs(src)
    parse_crs(dst)

    def coords(xy: np.ndarray) -> np.ndarray:
        if len(xy) == 0:
            return xy
        xs, ys = warp_transform(src, dst, xy[:, 0].tolist(), xy[:, 1].tolist())
        return np.column_stack([np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)])

    def apply(geom: BaseGeometry) -> BaseGeometry:
        return shapely.transform(geom, coords)

    return apply
