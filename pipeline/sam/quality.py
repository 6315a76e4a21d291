"""Quality of a SAM mask: SAM's own scores, agreement with the prompt box, and review flags.

Numbers (all in [0, 1]):

* ``sam_predicted_iou``: SAM's IoU head's estimate for the mask.
* ``sam_stability``: IoU between the mask thresholded at logit ``+offset`` and at ``-offset`` (SAM's
  stability score): how much the outline moves with the cutoff.
* ``sam_box_iou``: IoU of the mask's minimum-area rotated rectangle with the prompt box (the oriented box
  for DOTA, the axis-aligned one otherwise), both clipped to the tile.
* ``sam_box_fill``: the share of the prompt box's pixels (pixel centres inside the clipped box) that the
  mask covers.

Flags (codes kept per instance in ``extras["sam_flags"]``; the mask is kept, never dropped):

=========================  ========  =======================================================
code                       severity  when
=========================  ========  =======================================================
``sam_empty``              error     SAM returned no pixel inside the tile (the box mask is kept)
``sam_box_disagreement``   warning   box IoU < ``min_box_iou`` or box fill < ``min_box_fill``
``sam_low_iou``            warning   predicted IoU < ``min_predicted_iou``
``sam_unstable``           info      stability < ``min_stability``
=========================  ========  =======================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPoint, Polygon
from shapely.geometry.base import BaseGeometry

from ..geometry import polygonal, quad, rasterize_local
from ..rle import LocalMask
from .config import QualityThresholds

SAM_EMPTY = "sam_empty"
SAM_BOX_DISAGREEMENT = "sam_box_disagreement"
SAM_LOW_IOU = "sam_low_iou"
SAM_UNSTABLE = "sam_unstable"
FLAG_SEVERITY = {SAM_EMPTY: "error", SAM_BOX_DISAGREEMENT: "warning", SAM_LOW_IOU: "warning", SAM_UNSTABLE: "info"}

#: ``extras`` keys written for every SAM mask, and their column types (for ``instances.parquet``).
EXTRA_KEYS = ("sam_predicted_iou", "sam_stability", "sam_box_iou", "sam_box_fill", "sam_flags")


@dataclass(frozen=True)
class MaskQuality:
    """The quality numbers of one mask (``None`` where there is no prompt box to compare with)."""

    predicted_iou: float
    stability: float
    box_iou: float | None = None
    box_fill: float | None = None
    empty: bool = False

    def flags(self, thresholds: QualityThresholds) -> list[str]:
        """Flag codes, most severe first (see the module table)."""
        out: list[str] = []
        if self.empty:
            out.append(SAM_EMPTY)
        if (self.box_iou is not None and self.box_iou < thresholds.min_box_iou) or (
            self.box_fill is not None and self.box_fill < thresholds.min_box_fill
        ):
            out.append(SAM_BOX_DISAGREEMENT)
        if self.predicted_iou < thresholds.min_predicted_iou:
            out.append(SAM_LOW_IOU)
        if self.stability < thresholds.min_stability:
            out.append(SAM_UNSTABLE)
        return out

    def extras(self, thresholds: QualityThresholds) -> dict[str, Any]:
        """The ``extras`` entries of an instance (keys in :data:`EXTRA_KEYS`)."""
        return {
            "sam_predicted_iou": round(float(self.predicted_iou), 6),
            "sam_stability": round(float(self.stability), 6),
            "sam_box_iou": None if self.box_iou is None else round(float(self.box_iou), 6),
            "sam_box_fill": None if self.box_fill is None else round(float(self.box_fill), 6),
            "sam_flags": self.flags(thresholds),
        }


def stability_score(logits: np.ndarray, mask_threshold: float = 0.0, offset: float = 1.0) -> np.ndarray:
    """SAM's stability score of ``...×H×W`` mask logits: ``|logits > t+o| / |logits > t-o|`` per mask.

    A mask with no pixel above ``t - o`` scores 0.
    """
    inner = (logits > mask_threshold + offset).sum(axis=(-2, -1))
    outer = (logits > mask_threshold - offset).sum(axis=(-2, -1))
    return np.where(outer > 0, inner / np.maximum(outer, 1), 0.0)


def overlap(a: LocalMask, b: LocalMask) -> int:
    """Pixels in both masks (same pixel frame)."""
    x0, y0 = max(a.x0, b.x0), max(a.y0, b.y0)
    x1 = min(a.x0 + a.array.shape[1], b.x0 + b.array.shape[1])
    y1 = min(a.y0 + a.array.shape[0], b.y0 + b.array.shape[0])
    if x1 <= x0 or y1 <= y0:
        return 0
    sa = a.array[y0 - a.y0 : y1 - a.y0, x0 - a.x0 : x1 - a.x0]
    sb = b.array[y0 - b.y0 : y1 - b.y0, x0 - b.x0 : x1 - b.x0]
    return int(np.count_nonzero(sa & sb))


def mask_iou(a: LocalMask, b: LocalMask) -> float:
    """IoU of two masks in the same pixel frame (0 when both are empty)."""
    inter = overlap(a, b)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def prompt_polygon(prompt_box: Sequence[float], width: int, height: int) -> BaseGeometry | None:
    """The prompt box (8 corner coordinates, px) clipped to the ``width × height`` tile, or ``None``."""
    poly = quad(list(prompt_box))
    if not poly.is_valid:
        poly = polygonal(shapely.make_valid(poly)) or Polygon()
    clipped = polygonal(poly.intersection(shapely.box(0, 0, width, height)))
    return clipped if clipped is not None and clipped.area > 0 else None


def prompt_xyxy(prompt_box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float] | None:
    """The axis-aligned box around the prompt's corners, clipped to the tile: SAM's box prompt (px)."""
    xs, ys = np.asarray(prompt_box[0::2], dtype=float), np.asarray(prompt_box[1::2], dtype=float)
    x0, x1 = float(np.clip(xs.min(), 0, width)), float(np.clip(xs.max(), 0, width))
    y0, y1 = float(np.clip(ys.min(), 0, height)), float(np.clip(ys.max(), 0, height))
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return None
    return x0, y0, x1, y1


def min_rotated_rectangle(mask: LocalMask) -> BaseGeometry | None:
    """The minimum-area rotated rectangle around the mask's pixels (pixel corners, tile px).

    Only each row's outermost pixel corners are used: they span the same convex hull as all pixels,
    at a cost that follows the mask's height, not its area or the raggedness of its outline.
    """
    arr = mask.array
    rows = np.flatnonzero(arr.any(axis=1))
    if rows.size == 0:
        return None
    sub = arr[rows]
    first = np.argmax(sub, axis=1)
    last = sub.shape[1] - np.argmax(sub[:, ::-1], axis=1)  # end-exclusive
    ys = np.concatenate([rows, rows + 1, rows, rows + 1]) + mask.y0
    xs = np.concatenate([first, first, last, last]) + mask.x0
    return MultiPoint(np.stack([xs, ys], axis=1).astype(float)).minimum_rotated_rectangle


def box_agreement(mask: LocalMask, prompt_box: Sequence[float], width: int, height: int) -> tuple[float, float]:
    """``(box_iou, box_fill)`` of a mask against its prompt box, both in ``width × height`` tile px."""
    box = prompt_polygon(prompt_box, width, height)
    if box is None:
        return 0.0, 0.0
    rect = min_rotated_rectangle(mask)
    if rect is None:
        return 0.0, 0.0
    union = rect.union(box).area
    box_iou = rect.intersection(box).area / union if union > 0 else 0.0
    box_pixels = rasterize_local(box, width, height)
    fill = overlap(mask, box_pixels) / box_pixels.area if box_pixels.area > 0 else 0.0
    return float(box_iou), float(fill)


def box_quality(
    mask: LocalMask, predicted_iou: float, stability: float, prompt_box: Sequence[float], width: int, height: int
) -> MaskQuality:
    """The full quality record of a box-prompted mask in a ``width × height`` tile."""
    if mask.area == 0:
        return MaskQuality(predicted_iou, stability, 0.0, 0.0, empty=True)
    box_iou, fill = box_agreement(mask, prompt_box, width, height)
    return MaskQuality(predicted_iou, stability, box_iou, fill)


def instance_columns(extras: dict[str, object]) -> dict[str, Any]:
    """The SAM quality columns of an ``instances.parquet`` row (``None``/``[]`` for non-SAM masks)."""
    flags = extras.get("sam_flags")
    return {
        "sam_predicted_iou": extras.get("sam_predicted_iou"),
        "sam_stability": extras.get("sam_stability"),
        "sam_box_iou": extras.get("sam_box_iou"),
        "sam_box_fill": extras.get("sam_box_fill"),
        "sam_flags": list(flags) if isinstance(flags, list | tuple) else [],
    }
