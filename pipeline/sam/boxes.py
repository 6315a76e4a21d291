"""Box labels → SAM masks: one box-prompted mask per DOTA oriented box, box-CSV row or COCO bbox.

For each instance whose ``geometry_kind`` is ``box`` or ``obb`` and that has a ``prompt_box`` (8 corner
coordinates in tile px), SAM is prompted with the axis-aligned box around the corners, clipped to the
tile. The instance's ``mask`` (the rasterised box) is replaced by SAM's mask, clipped to the tile;
``mask_source`` becomes ``sam``, ``mask_model`` names the checkpoint, ``mask_score`` is SAM's predicted
IoU, and ``extras`` gets the quality numbers and flag codes of :mod:`pipeline.sam.quality`. The prompt
box, visible fraction and truncation stay as the label said. When SAM returns no pixel in the tile the
box mask is kept and the instance is flagged ``sam_empty``. Other instances pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TypeVar

import numpy as np

from ..records import TileInstance
from ..rle import LocalMask
from .config import QualityThresholds
from .quality import box_quality, prompt_xyxy
from .types import BoxMasker

BOX_KINDS = ("box", "obb")
K = TypeVar("K")


def is_refinable(instance: TileInstance) -> bool:
    """Whether SAM should replace this instance's mask (a box or OBB label with its 8 prompt corners)."""
    return instance.geometry_kind in BOX_KINDS and instance.prompt_box is not None and len(instance.prompt_box) == 8


def clip_to_tile(mask: LocalMask, width: int, height: int) -> LocalMask:
    """The part of ``mask`` inside the ``width × height`` tile, as a tight crop."""
    h, w = mask.array.shape
    x0, y0 = max(mask.x0, 0), max(mask.y0, 0)
    x1, y1 = min(mask.x0 + w, width), min(mask.y0 + h, height)
    if x1 <= x0 or y1 <= y0:
        return LocalMask(max(0, min(mask.x0, width)), max(0, min(mask.y0, height)), np.zeros((0, 0), dtype=bool))
    sub = mask.array[y0 - mask.y0 : y1 - mask.y0, x0 - mask.x0 : x1 - mask.x0]
    return LocalMask(x0, y0, sub).tight()


def _thresholds(masker: object, thresholds: QualityThresholds | None) -> QualityThresholds:
    if thresholds is not None:
        return thresholds
    config = getattr(masker, "config", None)
    found = getattr(config, "thresholds", None)
    return found if isinstance(found, QualityThresholds) else QualityThresholds()


def refine_tiles_with_boxes(
    rgbs: Sequence[np.ndarray],
    instances: Sequence[Sequence[TileInstance]],
    masker: BoxMasker,
    thresholds: QualityThresholds | None = None,
) -> list[list[TileInstance]]:
    """SAM masks for the box instances of several tiles at once (their images share encoder batches).

    Args:
        rgbs: per tile, the rendered ``H×W×3`` uint8 RGB tile.
        instances: per tile, its instances (tile px).
        masker: makes the masks (``SamMasker``, or anything with ``predict_boxes`` and ``mask_model``).
        thresholds: when to flag; default: the masker's ``config.thresholds``, else the defaults.

    Returns:
        Per tile, new ``TileInstance`` records in the input order (inputs are not modified).
    """
    if len(rgbs) != len(instances):
        raise ValueError(f"{len(rgbs)} tiles but {len(instances)} instance lists")
    limits = _thresholds(masker, thresholds)
    prompts: list[list[int]] = []  # per tile: indexes of the instances prompted
    boxes: list[np.ndarray] = []
    for rgb, insts in zip(rgbs, instances, strict=True):
        h, w = rgb.shape[:2]
        chosen, rows = [], []
        for k, inst in enumerate(insts):
            if not is_refinable(inst):
                continue
            assert inst.prompt_box is not None
            xyxy = prompt_xyxy(inst.prompt_box, w, h)
            if xyxy is not None:
                chosen.append(k)
                rows.append(xyxy)
        prompts.append(chosen)
        boxes.append(np.asarray(rows, dtype=np.float64).reshape(-1, 4))
    predictions = masker.predict_boxes(list(rgbs), boxes)
    out: list[list[TileInstance]] = []
    for rgb, insts, chosen, preds in zip(rgbs, instances, prompts, predictions, strict=True):
        if len(preds) != len(chosen):
            raise ValueError(f"masker returned {len(preds)} masks for {len(chosen)} boxes")
        h, w = rgb.shape[:2]
        refined = list(insts)
        for k, pred in zip(chosen, preds, strict=True):
            inst = insts[k]
            assert inst.prompt_box is not None
            mask = clip_to_tile(pred.mask, w, h)
            quality = box_quality(mask, pred.predicted_iou, pred.stability, inst.prompt_box, w, h)
            extras = {**inst.extras, **quality.extras(limits)}
            if quality.empty:
                refined[k] = replace(inst, extras=extras)
            else:
                refined[k] = replace(
                    inst,
                    mask=mask,
                    mask_source="sam",
                    mask_model=masker.mask_model,
                    mask_score=round(float(pred.predicted_iou), 6),
                    extras=extras,
                )
        out.append(refined)
    return out


def refine_with_boxes(
    rgb: np.ndarray,
    instances: Sequence[TileInstance],
    masker: BoxMasker,
    thresholds: QualityThresholds | None = None,
) -> list[TileInstance]:
    """SAM masks for the box instances of one ``H×W×3`` uint8 tile (see the module doc)."""
    return refine_tiles_with_boxes([rgb], [instances], masker, thresholds)[0]


def refine_batches(
    items: Iterable[tuple[K, np.ndarray, list[TileInstance]]],
    masker: BoxMasker,
    batch_size: int | None = None,
    thresholds: QualityThresholds | None = None,
) -> Iterator[tuple[K, np.ndarray, list[TileInstance]]]:
    """Refine a stream of ``(key, rgb, instances)`` tiles ``batch_size`` at a time, yielding them in order.

    ``batch_size`` defaults to the masker's ``config.batch_size`` (4 without one). Only tiles with box
    instances are encoded; at most ``batch_size`` tiles are held in memory.
    """
    size = batch_size or int(getattr(getattr(masker, "config", None), "batch_size", 4))
    pending: list[tuple[K, np.ndarray, list[TileInstance]]] = []

    def flush() -> Iterator[tuple[K, np.ndarray, list[TileInstance]]]:
        refined = refine_tiles_with_boxes([p[1] for p in pending], [p[2] for p in pending], masker, thresholds)
        for (key, rgb, _), insts in zip(pending, refined, strict=True):
            yield key, rgb, insts
        pending.clear()

    for item in items:
        pending.append(item)
        if len(pending) >= size:
            yield from flush()
    if pending:
        yield from flush()
