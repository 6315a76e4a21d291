"""Masks → polygons: the pixel-edge outline of a COCO RLE mask, mapped through an affine transform.

A mask is traced along pixel edges (``rasterio.features.shapes``, 8-connected parts), so the polygon covers
exactly the mask's pixels: rasterising it back at pixel centres on the same grid gives the mask again.
Holes are kept. The affine maps tile pixels (column, row; the corner of pixel (0, 0) at (0, 0)) to the
output coordinates: the tile's transform for georeferenced tiles, a translation by the tile's offset in the
source image for tiles without a CRS.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from rasterio.features import shapes
from rasterio.transform import Affine
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

from ..rle import decode

POLYGONAL = ("Polygon", "MultiPolygon")


def tile_affine(tile: dict[str, Any], georeferenced: bool) -> Affine:
    """Tile pixels → output coordinates: the tile's recorded transform, or its pixel offset in the image."""
    if georeferenced and tile.get("transform"):
        a, b, c, d, e, f = tile["transform"][:6]
        return Affine(a, b, c, d, e, f)
    return Affine.translation(float(tile["x0"]), float(tile["y0"]))


def _shifted(affine: Affine, dx: float, dy: float) -> Affine:
    """``affine`` applied after a shift by (dx, dy) pixels (the grid of a crop starting there)."""
    a, b, c, d, e, f = affine.a, affine.b, affine.c, affine.d, affine.e, affine.f
    return Affine(a, b, a * dx + b * dy + c, d, e, d * dx + e * dy + f)


def mask_outline(rle: dict[str, Any], affine: Affine) -> BaseGeometry | None:
    """The outline of an RLE mask (tile pixels) mapped by ``affine``; ``None`` for an empty mask."""
    mask = decode(rle)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = np.ascontiguousarray(mask[r0:r1, c0:c1]).astype(np.uint8)
    crop_affine = _shifted(affine, c0, r0)
    parts = [shape(g) for g, v in shapes(crop, mask=crop.astype(bool), connectivity=8, transform=crop_affine) if v]
    polys: list[Polygon] = []
    for p in parts:
        polys.extend(p.geoms if isinstance(p, MultiPolygon) else [p])
    if not polys:
        return None
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def footprint(width: int, height: int, affine: Affine, densify: int = 8) -> Polygon:
    """The tile's outline (its four corners, each side cut into ``densify`` segments for reprojection)."""
    xs = np.linspace(0, width, densify + 1)
    ys = np.linspace(0, height, densify + 1)
    ring = (
        [(x, 0.0) for x in xs[:-1]]
        + [(float(width), y) for y in ys[:-1]]
        + [(x, float(height)) for x in xs[::-1][:-1]]
        + [(0.0, y) for y in ys[::-1][:-1]]
    )
    a, b, c, d, e, f = affine.a, affine.b, affine.c, affine.d, affine.e, affine.f
    return Polygon([(a * x + b * y + c, d * x + e * y + f) for x, y in ring])


def clean(geom: BaseGeometry | None) -> tuple[BaseGeometry | None, str | None]:
    """A polygonal, valid, non-empty geometry, or ``None`` and why not.

    Returns ``(geometry, note)``: note ``repaired`` when ``make_valid`` was needed and kept an area,
    ``empty`` / ``degenerate`` (no area left: a line, a point) when the geometry is dropped.
    """
    if geom is None or geom.is_empty:
        return None, "empty"
    note = None
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
        note = "repaired"
    if geom.geom_type == "GeometryCollection":
        polys = [g for g in getattr(geom, "geoms", []) if g.geom_type in POLYGONAL and not g.is_empty]
        geom = shapely.unary_union(polys) if polys else None
    if geom is None or geom.is_empty or geom.geom_type not in POLYGONAL or not geom.area > 0:
        return None, "degenerate"
    return geom, note
