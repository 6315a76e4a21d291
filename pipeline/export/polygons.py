"""Masks ↔ GeoPixel polygons.

GeoPixel's loader fills each ``[SEG]``'s list of polygons (``[x, y]`` integer points, tile pixels)
together into one mask, OpenCV style (``cv2.fillPoly``: a pixel is in when it lies inside or on the
outline through pixel centres). We trace outer contours through boundary-pixel centres
(``cv2.findContours``), which that rule fills back to the same pixels; holes cannot be expressed in
this format, so a mask with holes comes back filled (the exporter reports the IoU).
"""

from __future__ import annotations

import cv2
import numpy as np


def mask_to_polygons(mask: np.ndarray) -> list[list[list[int]]]:
    """Outer contours of a bool mask as lists of ``[x, y]`` points (one polygon per connected part)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).astype(int).tolist() for c in contours if len(c) > 0]


def fill_polygons(polygons: list[list[list[int]]], height: int, width: int) -> np.ndarray:
    """GeoPixel's rule: fill every polygon of one ``[SEG]`` into a single mask."""
    out = np.zeros((height, width), dtype=np.uint8)
    for poly in polygons:
        pts = np.asarray(poly, dtype=np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(out, [pts], 1)
    return out.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def polygons_and_iou(mask: np.ndarray) -> tuple[list[list[list[int]]], float]:
    """:func:`mask_to_polygons` of ``mask`` and the IoU of their filling with it, on the mask's bounding box.

    The same polygons and IoU as on the whole tile (the outline never leaves the box), at the cost of the
    object's size rather than the tile's.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [], 1.0
    y0, y1 = max(0, int(rows[0]) - 1), min(mask.shape[0], int(rows[-1]) + 2)
    x0, x1 = max(0, int(cols[0]) - 1), min(mask.shape[1], int(cols[-1]) + 2)
    crop = mask[y0:y1, x0:x1]
    local = mask_to_polygons(crop)
    score = iou(fill_polygons(local, y1 - y0, x1 - x0), crop)
    return [[[x + x0, y + y0] for x, y in poly] for poly in local], score
