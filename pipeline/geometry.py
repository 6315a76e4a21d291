"""Vector instances: repair, clip to a tile, and rasterise to a cropped mask.

Coordinates are image pixels with the origin at the top-left corner of the top-left pixel; pixel
``(row, col)`` covers ``[col, col + 1) × [row, row + 1)`` and is inside a polygon when its centre is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from rasterio import features
from rasterio.transform import Affine
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from .rle import LocalMask


def polygonal(geom: BaseGeometry) -> BaseGeometry | None:
    """The polygonal part of a geometry (Polygon or MultiPolygon), or ``None`` when there is none."""
    if geom.is_empty:
        return None
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon | MultiPolygon) and not g.is_empty]
    if not parts:
        return None
    return shapely.union_all(parts)


def repair(geom: BaseGeometry) -> tuple[BaseGeometry | None, bool]:
    """A valid polygonal geometry and whether it needed repair (``make_valid``)."""
    if geom.is_valid:
        return polygonal(geom), False
    fixed = shapely.make_valid(geom)
    return polygonal(fixed), True


@dataclass
class Clip:
    """An instance geometry clipped to a tile, in tile pixels."""

    geometry: BaseGeometry
    visible_fraction: float
    truncated: bool


def clip_to_window(geom: BaseGeometry, x0: int, y0: int, x1: int, y1: int) -> Clip | None:
    """Intersect with the window and shift into window coordinates; ``None`` if nothing is left."""
    window = box(x0, y0, x1, y1)
    if not geom.intersects(window):
        return None
    inside = geom.within(window)
    part = geom if inside else polygonal(geom.intersection(window))
    if part is None or part.area <= 0:
        return None
    full_area = geom.area
    visible = 1.0 if inside else (part.area / full_area if full_area > 0 else 0.0)
    shifted = shapely.affinity.translate(part, -x0, -y0)
    return Clip(shifted, float(min(1.0, visible)), not inside)


def rasterize_local(geom: BaseGeometry, width: int, height: int) -> LocalMask:
    """Pixels of a window whose centres fall inside ``geom`` (window coordinates), as a cropped mask."""
    minx, miny, maxx, maxy = geom.bounds
    cx0 = max(0, int(np.floor(minx)))
    cy0 = max(0, int(np.floor(miny)))
    cx1 = min(width, int(np.ceil(maxx)))
    cy1 = min(height, int(np.ceil(maxy)))
    if cx1 <= cx0 or cy1 <= cy0:
        return LocalMask(cx0, cy0, np.zeros((0, 0), dtype=bool))
    arr = features.rasterize(
        [(geom, 1)],
        out_shape=(cy1 - cy0, cx1 - cx0),
        transform=Affine.translation(cx0, cy0),
        fill=0,
        dtype="uint8",
    ).astype(bool)
    return LocalMask(cx0, cy0, arr).tight()


def quad(points: list[float]) -> Polygon:
    """A polygon from ``x1 y1 x2 y2 ...`` (an oriented box has 4 corners)."""
    coords = list(zip(points[0::2], points[1::2], strict=True))
    return Polygon(coords)
