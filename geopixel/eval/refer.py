"""Referring segmentation metrics (RRSIS-D style): P@0.5…0.9, oIoU and mIoU.

One predicted mask per referring expression against its ground-truth mask:

* ``IoU_i = |P_i ∩ G_i| / |P_i ∪ G_i|``; two empty masks have IoU ``empty_iou`` (1.0 by default; LAVT's
  code gives 0, a case RRSIS-D never contains).
* ``P@t`` = share of expressions with ``IoU_i ≥ t`` for t in 0.5, 0.6, 0.7, 0.8, 0.9 (LAVT/RRSIS code).
* ``oIoU`` = ``Σ|P_i ∩ G_i| / Σ|P_i ∪ G_i|`` (cumulative, dominated by large objects).
* ``mIoU`` = mean of ``IoU_i``.

Files (:func:`evaluate_refer_files`): ground truth is a JSON list (or ``{"annotations": [...]}``) of
``{"id", "segmentation": RLE, ...}`` (``ref_id`` or ``sent_id`` may stand for ``id``, ``mask`` for
``segmentation``); predictions the same with ``pred_mask`` (or ``segmentation``/``mask``). An expression
without a prediction scores IoU 0 with an empty predicted area; predictions for unknown ids are counted
and ignored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .matching import Rle, to_rle

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def intersection_union(pred: Rle | np.ndarray, gt: Rle | np.ndarray) -> tuple[int, int]:
    """Pixel counts ``(|P ∩ G|, |P ∪ G|)`` of two masks of one size."""
    p, g = to_rle(pred), to_rle(gt)
    if list(p["size"]) != list(g["size"]):
        raise ValueError(f"predicted mask size {p['size']} differs from the ground truth's {g['size']}")
    inter = int(mask_utils.area(mask_utils.merge([p, g], intersect=True)))
    return inter, int(mask_utils.area(p)) + int(mask_utils.area(g)) - inter


def refer_metrics(
    preds: Sequence[Rle | np.ndarray | None],
    gts: Sequence[Rle | np.ndarray],
    thresholds: Sequence[float] = THRESHOLDS,
    empty_iou: float = 1.0,
) -> dict[str, float | int]:
    """``{"P@0.5": …, …, "oIoU": …, "mIoU": …, "n": N}`` (fractions in [0, 1]); ``None`` preds are missing."""
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground-truth masks")
    ious, cum_i, cum_u = [], 0, 0
    for p, g in zip(preds, gts, strict=True):
        if p is None:
            inter, union = 0, int(mask_utils.area(to_rle(g)))
        else:
            inter, union = intersection_union(p, g)
        cum_i += inter
        cum_u += union
        ious.append(inter / union if union else empty_iou)
    arr = np.asarray(ious, dtype=np.float64)
    out: dict[str, float | int] = {f"P@{t:g}": float((arr >= t - 1e-12).mean()) if arr.size else 0.0 for t in thresholds}
    out["oIoU"] = cum_i / cum_u if cum_u else (empty_iou if arr.size else 0.0)
    out["mIoU"] = float(arr.mean()) if arr.size else 0.0
    out["n"] = int(arr.size)
    return out


def _entries(path: str | Path) -> list[dict[str, Any]]:
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        data = data.get("annotations", data.get("predictions", []))
    return list(data)


def _key(rec: dict[str, Any]) -> str:
    for k in ("id", "ref_id", "sent_id"):
        if k in rec:
            return str(rec[k])
    raise ValueError(f"record without id/ref_id/sent_id: {sorted(rec)}")


def evaluate_refer_files(gt: str | Path, pred: str | Path, empty_iou: float = 1.0) -> dict[str, Any]:
    """Referring metrics of a prediction file against a GT file (layouts in the module docstring)."""
    gts: dict[str, Any] = {_key(r): r.get("segmentation", r.get("mask")) for r in _entries(gt)}
    preds = {_key(r): r.get("pred_mask", r.get("segmentation", r.get("mask"))) for r in _entries(pred)}
    keys = sorted(gts)
    out: dict[str, Any] = dict(refer_metrics([preds.get(k) for k in keys], [gts[k] for k in keys], empty_iou=empty_iou))
    out["missing"] = sum(1 for k in keys if k not in preds)
    out["unknown"] = sum(1 for k in preds if k not in gts)
    return out


__all__ = ["THRESHOLDS", "evaluate_refer_files", "intersection_union", "refer_metrics"]
