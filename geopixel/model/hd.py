"""GeoPixel's any-resolution ("HD") image layout, torch-free.

Following InternLM-XComposer-2.5 (the LMM GeoPixel builds on): the image is resized, keeping its aspect
ratio, so that its long side spans ``s`` crops, where ``s`` is the largest integer with
``s · ceil(s / ratio) ≤ hd_num`` (``ratio`` = long side / short side ≥ 1); the short side is padded
(centred, white) up to a whole number of crops. Each ``crop × crop`` crop and a *global view* (the whole
image resized to ``crop × crop``) go through the vision tower.

Visual tokens (``n = crop / patch / merge`` tokens per crop side): the global view gives ``n`` rows of
``n`` tokens each followed by a row-separator, then one global/local separator, then the local grid gives
``rows · n`` rows of ``cols · n`` tokens each followed by a row-separator::

    count = n (n + 1) + 1 + rows · n · (cols · n + 1)

An 800 × 800 tile with crop 560, patch 14, merge 2, hd_num 9 → 3 × 3 crops, n = 20 → 420 + 1 + 3660 =
4,081 tokens, the number in the GeoPixel paper.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def plan_grid(width: int, height: int, hd_num: int) -> tuple[int, int]:
    """``(rows, cols)`` of crops for an image of ``width × height`` pixels (rule in the module docstring)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"bad image size {width}×{height}")
    long_side, short_side = max(width, height), min(width, height)
    ratio = long_side / short_side
    s = 1
    while (s + 1) * math.ceil((s + 1) / ratio) <= hd_num:
        s += 1
    across = max(1, math.ceil(round(s * short_side / long_side, 6)))
    across = min(across, max(1, hd_num // s))
    return (across, s) if width >= height else (s, across)


def tokens_per_side(crop_size: int, patch_size: int, merge: int) -> int:
    """Visual tokens along one side of a crop after the ``merge × merge`` concatenation."""
    return crop_size // patch_size // merge


def visual_token_count(rows: int, cols: int, n: int) -> int:
    """Number of visual embeddings for a ``rows × cols`` grid with ``n`` tokens per crop side."""
    return n * (n + 1) + 1 + rows * n * (cols * n + 1)


def hd_views(image: np.ndarray, crop_size: int, hd_num: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The global view and the crops of an ``H × W × 3`` uint8 image.

    Returns:
        ``(views, (rows, cols))`` with ``views`` of shape ``(1 + rows·cols, crop, crop, 3)`` uint8: the global
        view first, then the crops in row-major order.
    """
    h, w = image.shape[:2]
    rows, cols = plan_grid(w, h, hd_num)
    pil = Image.fromarray(image)
    if w >= h:
        new_w = cols * crop_size
        new_h = min(rows * crop_size, max(1, round(new_w * h / w)))
    else:
        new_h = rows * crop_size
        new_w = min(cols * crop_size, max(1, round(new_h * w / h)))
    resized = np.asarray(pil.resize((new_w, new_h), Image.Resampling.BICUBIC))
    canvas = np.full((rows * crop_size, cols * crop_size, 3), 255, dtype=np.uint8)
    y0, x0 = (rows * crop_size - new_h) // 2, (cols * crop_size - new_w) // 2
    canvas[y0 : y0 + new_h, x0 : x0 + new_w] = resized
    crops = canvas.reshape(rows, crop_size, cols, crop_size, 3).transpose(0, 2, 1, 3, 4).reshape(-1, crop_size, crop_size, 3)
    glb = np.asarray(pil.resize((crop_size, crop_size), Image.Resampling.BICUBIC))[None]
    return np.concatenate([glb, crops], axis=0), (rows, cols)


def sam_view(image: np.ndarray, img_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """SAM's input: the image resized so its long side is ``img_size``, zero-padded bottom/right.

    Returns:
        ``(img_size × img_size × 3 uint8, (resized_h, resized_w))``.
    """
    h, w = image.shape[:2]
    scale = img_size / max(h, w)
    nh, nw = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
    out = np.zeros((img_size, img_size, 3), dtype=np.uint8)
    out[:nh, :nw] = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    return out, (nh, nw)


__all__ = ["hd_views", "plan_grid", "sam_view", "tokens_per_side", "visual_token_count"]
