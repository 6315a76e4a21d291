"""Masks as COCO RLEs, IoU matrices and the one-to-one matchings the GCG metrics use.

Two matching rules are implemented, both over an ``N_pred × N_gt`` IoU matrix of one image:

* ``"hungarian"`` (ours, the default): :func:`scipy.optimize.linear_sum_assignment` maximising the total
  IoU. Every ground-truth mask gets the IoU of the prediction assigned to it, or 0 when none is (more
  ground truth than predictions, or an assigned pair with IoU 0). Predictions left over are not scored by
  mIoU (AP50 penalises them).
* ``"glamm"``: GLaMM's ``compute_miou`` (``eval/gcg/evaluate.py``): repeatedly take the largest remaining
  IoU, pair its row and column and delete both, while the largest IoU is > 0. Kept for comparison with
  published numbers, which used this rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from pipeline.rle import to_coco

Rle = dict[str, Any]
MATCHING_RULES = ("hungarian", "glamm")


def to_rle(mask: Rle | np.ndarray, height: int | None = None, width: int | None = None) -> Rle:
    """A COCO RLE with ``counts`` as bytes, as pycocotools' C functions expect.

    Accepts a compressed RLE (``counts`` str or bytes), an uncompressed RLE (``counts`` a list of ints) or
    an ``H×W`` boolean/0-1 array. ``height``/``width`` are only used to check the size when given.
    """
    if isinstance(mask, np.ndarray):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    elif isinstance(mask, dict) and "counts" in mask and "size" in mask:
        rle = to_coco(mask)  # the library's one normalisation (pipeline.rle)
    else:
        raise ValueError(f"not a mask: expected a COCO RLE dict or an array, got {type(mask).__name__}")
    if height is not None and width is not None and list(rle["size"]) != [height, width]:
        raise ValueError(f"mask size {list(rle['size'])} differs from the image size [{height}, {width}]")
    return rle


def rle_area(rle: Rle) -> int:
    """Foreground pixel count of a mask."""
    return int(mask_utils.area(to_rle(rle)))


def iou_matrix(preds: Sequence[Rle], gts: Sequence[Rle]) -> np.ndarray:
    """``N_pred × N_gt`` float64 IoU matrix of masks of one image (all of one size).

    Two empty masks have IoU 0 (pycocotools' convention).
    """
    if not preds or not gts:
        return np.zeros((len(preds), len(gts)), dtype=np.float64)
    p = [to_rle(m) for m in preds]
    g = [to_rle(m) for m in gts]
    sizes = {tuple(m["size"]) for m in p + g}
    if len(sizes) > 1:
        raise ValueError(f"masks of one image have different sizes: {sorted(sizes)}")
    return np.asarray(mask_utils.iou(p, g, [0] * len(g)), dtype=np.float64).reshape(len(p), len(g))


def hungarian_pairs(weights: np.ndarray) -> list[tuple[int, int]]:
    """Row/column pairs of a maximum-weight one-to-one assignment (pairs of weight 0 are dropped)."""
    if weights.size == 0:
        return []
    rows, cols = linear_sum_assignment(weights, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if weights[r, c] > 0]


def glamm_greedy_pairs(ious: np.ndarray) -> list[tuple[int, int]]:
    """GLaMM's greedy pairing: largest remaining IoU first, while it is > 0 (ties: first in row-major order)."""
    m = ious.astype(np.float64).copy()
    pairs: list[tuple[int, int]] = []
    while m.size and m.max() > 0:
        r, c = np.unravel_index(int(np.argmax(m)), m.shape)
        pairs.append((int(r), int(c)))
        m[r, :] = -1.0
        m[:, c] = -1.0
    return pairs


def match_gt_ious(ious: np.ndarray, rule: str = "hungarian") -> np.ndarray:
    """Per ground-truth mask: the IoU of its matched prediction, or 0.

    Args:
        ious: ``N_pred × N_gt`` IoU matrix.
        rule: ``"hungarian"`` or ``"glamm"`` (see the module docstring).

    Returns:
        ``(N_gt,)`` float64; also ``nan`` marks no pair under ``"glamm"`` so the GLaMM mean can skip it.
    """
    n_gt = ious.shape[1]
    out = np.zeros(n_gt, dtype=np.float64)
    if rule == "hungarian":
        pairs = hungarian_pairs(ious)
    elif rule == "glamm":
        out[:] = np.nan
        pairs = glamm_greedy_pairs(ious)
    else:
        raise ValueError(f"unknown matching rule {rule!r}; choose from {MATCHING_RULES}")
    for p, g in pairs:
        out[g] = ious[p, g]
    return out


def recall_matches(
    ious_gt_pred: np.ndarray,
    sims_gt_pred: np.ndarray,
    iou_threshold: float = 0.5,
    sim_threshold: float = 0.5,
    rule: str = "hungarian",
) -> list[tuple[int, int]]:
    """One-to-one (gt, pred) pairs with IoU ≥ ``iou_threshold`` and phrase similarity ≥ ``sim_threshold``.

    ``"hungarian"``: the largest possible number of admissible pairs (ties broken by the larger total
    IoU). ``"glamm"``: GLaMM's ``find_best_matches``: take the largest remaining IoU; stop as soon as that
    pair fails either threshold (so an admissible pair behind an inadmissible one is missed).

    Args:
        ious_gt_pred: ``N_gt × N_pred`` IoU matrix.
        sims_gt_pred: ``N_gt × N_pred`` phrase similarity matrix.
    """
    if ious_gt_pred.shape != sims_gt_pred.shape:
        raise ValueError(f"IoU {ious_gt_pred.shape} and similarity {sims_gt_pred.shape} matrices differ")
    if ious_gt_pred.size == 0:
        return []
    if rule == "hungarian":
        ok = (ious_gt_pred >= iou_threshold) & (sims_gt_pred >= sim_threshold)
        # Weight (big + IoU) per admissible pair: k+1 pairs always outweigh k pairs since big > k.
        big = float(min(ok.shape) + 1)
        pairs = hungarian_pairs(np.where(ok, big + ious_gt_pred, 0.0))
        return sorted(pairs)
    if rule != "glamm":
        raise ValueError(f"unknown matching rule {rule!r}; choose from {MATCHING_RULES}")
    ious, sims = ious_gt_pred.astype(np.float64).copy(), sims_gt_pred.astype(np.float64).copy()
    out: list[tuple[int, int]] = []
    while True:
        g, p = np.unravel_index(int(np.argmax(ious)), ious.shape)
        if ious[g, p] < iou_threshold or sims[g, p] < sim_threshold:
            break
        out.append((int(g), int(p)))
        ious[g, :] = 0
        ious[:, p] = 0
        sims[g, :] = 0
        sims[:, p] = 0
    return sorted(out)


__all__ = [
    "MATCHING_RULES",
    "Rle",
    "glamm_greedy_pairs",
    "hungarian_pairs",
    "iou_matrix",
    "match_gt_ious",
    "recall_matches",
    "rle_area",
    "to_rle",
]
