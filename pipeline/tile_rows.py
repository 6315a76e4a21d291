"""One tile's instances → instance rows, cluster rows and numbered marks (the per-tile work of prepare).

``process_tile`` filters the tile's clipped instances (``--min-area``, ``--min-visible-fraction``),
measures them (:mod:`pipeline.priors`), groups the cluster categories' objects, places a mark on every
object not described through a cluster (:mod:`pipeline.marks`) and returns the rows of
``instances.parquet`` and ``clusters.parquet`` with the marks to draw. It reads no file and writes none.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import priors
from .config import PrepareConfig, category_name
from .marks import Mark, font_size_for_objects, place_marks
from .records import TileInstance
from .rle import encode_local
from .tiling import Tile


def _reading_order(points: list[tuple[float, float]], height: int) -> list[int]:
    band = max(1.0, height / 10)
    return sorted(range(len(points)), key=lambda i: (int(points[i][1] // band), points[i][0], points[i][1]))


@dataclass
class TileResult:
    """What :func:`process_tile` makes of one tile's instances.

    Attributes:
        instances: ``instances.parquet`` rows (priors, RLE, mark, cluster id).
        clusters: ``clusters.parquet`` rows.
        marks: the numbered marks to draw on the set-of-marks image.
        dropped: instances left out, by reason (``under_min_area``, ``under_min_visible_fraction``).
        font_size: mark digit size in px (shrinks for small, crowded objects).
    """

    instances: list[dict[str, Any]]
    clusters: list[dict[str, Any]]
    marks: list[Mark]
    dropped: Counter[str]
    font_size: int


def process_tile(
    tile: Tile,
    instances: list[TileInstance],
    config: PrepareConfig,
    gsd: float | None,
) -> TileResult:
    """Priors, clusters and marks for one tile's instances → instance rows, cluster rows, marks, drops."""
    w, h = tile.width, tile.height
    dropped: Counter[str] = Counter()
    kept: list[TileInstance] = []
    areas: list[float] = []
    for inst in instances:
        area = inst.mask.area
        if area < config.min_area:
            dropped["under_min_area"] += 1
        elif inst.visible_fraction < config.min_visible_fraction:
            dropped["under_min_visible_fraction"] += 1
        else:
            kept.append(inst)
            areas.append(float(area))
    shapes = priors.measure_all([i.mask for i in kept])
    names = [category_name(i.category) for i in kept]

    # Clusters per cluster category.
    cluster_of: dict[int, str] = {}
    cluster_rows: list[dict[str, Any]] = []
    by_cat: dict[str, list[int]] = {}
    for k, name in enumerate(names):
        if name in config.cluster_categories:
            by_cat.setdefault(name, []).append(k)
    for name in sorted(by_cat):
        idxs = by_cat[name]
        mode = config.cluster_categories[name]
        pts = np.array([[shapes[k].cx, shapes[k].cy] for k in idxs])
        sizes = np.sqrt(np.array([areas[k] for k in idxs]))
        groups = priors.cluster_points(pts, sizes, max(w, h), config.cluster_link)
        groups = sorted(groups, key=lambda g: (min(pts[j][1] for j in g), min(pts[j][0] for j in g)))
        for g in groups:
            if mode == "dense" and len(g) < config.min_cluster_size:
                continue
            members = [idxs[j] for j in g]
            cid = f"{tile.tile_id}#c{len(cluster_rows) + 1}"
            for m in members:
                cluster_of[m] = cid
            gp = pts[g]
            boxes = np.array([kept[m].mask.bbox() for m in members])
            x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
            x1, y1 = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
            cluster_rows.append(
                {
                    "cluster_id": cid,
                    "tile_id": tile.tile_id,
                    "image_id": tile.image_id,
                    "category": kept[members[0]].category,
                    "category_name": name,
                    "instance_ids": [kept[m].instance_id for m in members],
                    "position": priors.cluster_position(gp, w, h),
                    "count": len(members),
                    "count_word": priors.count_word(len(members)),
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                }
            )

    # Marks for every instance not described through a cluster.
    to_mark = [k for k in range(len(kept)) if k not in cluster_of]
    font_size = font_size_for_objects([kept[k].mask for k in to_mark], w, h)
    placements = place_marks([kept[k].mask for k in to_mark], w, h, font_size)
    order = _reading_order([(p[0], p[1]) for p in placements], h)
    marks: list[Mark] = []
    mark_of: dict[int, Mark] = {}
    for number, j in enumerate(order, start=1):
        x, y, box = placements[j]
        placed = Mark(number, x, y, box)
        marks.append(placed)
        mark_of[to_mark[j]] = placed

    rows = []
    for k, inst in enumerate(kept):
        s = shapes[k]
        mk = mark_of.get(k)
        elong = s.elongation if s.width_px > 0 else None
        angle = s.angle_deg if elong is not None and elong >= 1.2 else None
        rows.append(
            {
                "tile_id": tile.tile_id,
                "image_id": tile.image_id,
                "instance_id": inst.instance_id,
                "category": inst.category,
                "category_name": names[k],
                "rle": encode_local(inst.mask, h, w),
                "bbox": list(inst.mask.bbox()),
                "area": areas[k],
                "visible_fraction": round(inst.visible_fraction, 6),
                "truncated": inst.truncated,
                "position": priors.position_word(s.cx, s.cy, w, h),
                "size_class": priors.size_class(areas[k], w, h),
                "centroid_x": s.cx,
                "centroid_y": s.cy,
                "length_px": s.length_px,
                "width_px": s.width_px,
                "length_m": s.length_px * gsd if gsd else None,
                "width_m": s.width_px * gsd if gsd else None,
                "orientation_deg": angle,
                "orientation_word": priors.orientation_word(angle, elong or 0.0),
                "elongation": elong if elong is not None and np.isfinite(elong) else None,
                "mark": mk.number if mk else None,
                "mark_x": mk.x if mk else None,
                "mark_y": mk.y if mk else None,
                "mark_box": list(mk.box) if mk else None,
                "cluster_id": cluster_of.get(k),
                "geometry_kind": inst.geometry_kind,
                "prompt_box": inst.prompt_box,
                "mask_source": inst.mask_source,
                "mask_model": inst.mask_model,
                "mask_score": inst.mask_score,
                "source_ref": inst.source_ref,
                **_sam_columns(inst),
            }
        )
    return TileResult(rows, cluster_rows, marks, dropped, font_size)


# The SAM and naming columns of an instance without SAM extras (what ``pipeline.sam.quality.instance_columns``
# and ``pipeline.sam.naming.naming_columns`` return for empty extras), so label-only runs never import the
# SAM modules (shapely geometry, prompts, the LMM client types).
_NO_SAM_COLUMNS: dict[str, Any] = {
    "sam_predicted_iou": None, "sam_stability": None, "sam_box_iou": None, "sam_box_fill": None,
    "category_source": "annotation", "category_answer": None,
}


def _sam_columns(inst: TileInstance) -> dict[str, Any]:
    if not inst.extras:
        return {**_NO_SAM_COLUMNS, "sam_flags": [], "category_flags": []}
    from .sam.naming import naming_columns
    from .sam.quality import instance_columns

    return {**instance_columns(inst.extras), **naming_columns(inst.extras, inst.mask_source)}
