"""The records every annotation adapter produces, whatever the source format.

``SourceInstance`` is one object in a source image; ``TileInstance`` is its visible part inside one
tile. The fields anticipate later stages: ``geometry_kind`` says whether the mask is a real outline
(``mask``, ``polygon``) or only a box (``box``, ``obb``) that SAM can turn into a mask, and
``prompt_box`` keeps the box for that. ``mask_source`` records who made the mask (``annotation`` now;
``sam`` later, with the checkpoint's hash in ``mask_model``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shapely.geometry.base import BaseGeometry

from .rle import LocalMask

GEOMETRY_KINDS = ("mask", "polygon", "box", "obb", "none")


@dataclass
class SourceInstance:
    """One annotated object in image pixel coordinates.

    Attributes:
        instance_id: stable id from the source (iSAID id value, COCO annotation id, 1-based label line
            or row or feature number).
        category: the source's label (e.g. ``Small_Vehicle``, ``small-vehicle``, ``Tree``).
        geometry: the outline (Polygon/MultiPolygon) in image pixels.
        geometry_kind: ``polygon``, ``box`` or ``obb`` for vector sources.
        source_ref: where it came from, e.g. ``labelTxt/P1888.txt:7``.
        prompt_box: box corners ``[x1, y1, ..., x4, y4]`` in image pixels for box sources.
    """

    instance_id: int
    category: str
    geometry: BaseGeometry
    geometry_kind: str
    source_ref: str
    prompt_box: list[float] | None = None
    where: str = ""  # full path and locator for messages, e.g. /data/labelTxt/P1888.txt:7


@dataclass
class TileInstance:
    """The visible part of one instance inside one tile (tile pixel coordinates)."""

    instance_id: int
    category: str
    mask: LocalMask
    visible_fraction: float
    truncated: bool
    geometry_kind: str
    source_ref: str
    prompt_box: list[float] | None = None
    mask_source: str = "annotation"
    mask_model: str | None = None
    mask_score: float | None = None
    # Filled by priors/marks.
    extras: dict[str, object] = field(default_factory=dict)
