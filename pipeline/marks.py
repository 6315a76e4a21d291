"""Set-of-marks: a number in yellow digits on a filled black square, placed on each marked object.

The mark's centre is a pixel inside the mask — the deepest one (largest distance to the outline,
so concave shapes such as an L-shaped harbour or a plane's wings get a point on the object, not
their centroid in the background), chosen among the deep pixels to overlap already-placed marks as
little as possible. Smaller objects are placed first: they have fewer good spots. The square's size
follows the tile (readable at 4K).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .rle import LocalMask

MARK_FILL = (0, 0, 0)
MARK_TEXT = (255, 255, 0)
CANDIDATES = 256


MIN_FONT = 10


def font_size_for(width: int, height: int) -> int:
    """Digit height in px: about 2 % of the tile's long side, at least 12 px."""
    return max(12, round(0.02 * max(width, height)))


def font_size_for_objects(masks: list[LocalMask], width: int, height: int) -> int:
    """The tile's font size, made smaller (down to 10 px) when the marked objects are small.

    Crowded small objects (trucks in a car park) otherwise disappear under their own marks.
    """
    default = font_size_for(width, height)
    if not masks:
        return default
    typical = float(np.median([np.sqrt(m.area) for m in masks]))
    return int(np.clip(round(0.6 * typical), MIN_FONT, default))


@dataclass
class Mark:
    number: int
    x: float  # centre, tile pixels (a pixel centre inside the mask)
    y: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 of the black square


def _overlap(box: np.ndarray, placed: np.ndarray) -> np.ndarray:
    """Overlap areas of candidate squares ``box`` (N×4) with each placed square, summed."""
    if placed.size == 0:
        return np.zeros(len(box))
    ix = np.clip(np.minimum(box[:, None, 2], placed[None, :, 2]) - np.maximum(box[:, None, 0], placed[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(box[:, None, 3], placed[None, :, 3]) - np.maximum(box[:, None, 1], placed[None, :, 1]), 0, None)
    return (ix * iy).sum(axis=1)


def place_marks(
    masks: list[LocalMask], width: int, height: int, font_size: int | None = None
) -> list[tuple[float, float, tuple[float, float, float, float]]]:
    """Centre and square for each mask, in the input order.

    Returns ``(x, y, (x0, y0, x1, y1))`` per mask; ``(x, y)`` is always the centre of a mask pixel.
    """
    side = _square_side(font_size or font_size_for(width, height), digits=2)
    half = side / 2
    areas = [m.area for m in masks]
    order = sorted(range(len(masks)), key=areas.__getitem__)
    placed = np.empty((len(masks), 4), dtype=float)  # squares placed so far: placed[:k]
    result: dict[int, tuple[float, float, tuple[float, float, float, float]]] = {}
    for k, i in enumerate(order):
        m = masks[i]
        dist = depth_map(m.array)
        flat = dist.reshape(-1)
        # Candidates: pixels deep enough for the whole square to sit on the object (or the deepest ones
        # when it cannot), spread over the object so a free spot can be found.
        threshold = min(float(flat.max()), half)
        idx = np.flatnonzero(flat >= threshold)
        if idx.size > CANDIDATES:
            idx = idx[np.linspace(0, idx.size - 1, CANDIDATES).astype(int)]
        ys, xs = np.unravel_index(idx, dist.shape)
        cx = m.x0 + xs + 0.5
        cy = m.y0 + ys + 0.5
        boxes = np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)
        # Keep squares inside the tile when that is possible without leaving the object.
        outside = (
            np.clip(-boxes[:, 0], 0, None) + np.clip(-boxes[:, 1], 0, None)
            + np.clip(boxes[:, 2] - width, 0, None) + np.clip(boxes[:, 3] - height, 0, None)
        )
        overlap = _overlap(boxes, placed[:k])
        depth = flat[idx]
        # Overlap with other marks matters most, then staying in the tile, then depth inside the object.
        score = overlap * 4 + outside * side - np.minimum(depth, side)
        best = int(np.argmin(score))
        placed[k] = boxes[best]
        b = tuple(boxes[best].tolist())
        result[i] = (float(cx[best]), float(cy[best]), b)
    return [result[i] for i in range(len(masks))]


def depth_map(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (px, float64) of each mask pixel to the nearest pixel outside the mask.

    Outside the array counts as outside the mask. The exact transform (OpenCV's precise L2 mask, the
    Felzenszwalb-Huttenlocher algorithm) gives float32 distances; squaring and rounding recovers the
    integer squared distance, whose float64 root equals ``scipy.ndimage.distance_transform_edt``'s bit for
    bit (float32 holds d² exactly enough up to depths of about 2,000 px, beyond any mark's size).
    """
    src = np.ascontiguousarray(mask).view(np.uint8) if mask.dtype == np.bool_ else (mask != 0).astype(np.uint8)
    framed = cv2.copyMakeBorder(src, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    d = cv2.distanceTransform(framed, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    d64 = d[1:-1, 1:-1].astype(np.float64)
    return np.sqrt(np.rint(d64 * d64))


def _square_side(font_size: int, digits: int) -> float:
    return float(font_size * (0.7 + 0.62 * digits))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def draw_marks(
    tile_rgb: np.ndarray,
    marks: list[Mark],
    contours: list[LocalMask] | None = None,
    grid: bool = False,
    font_size: int | None = None,
) -> Image.Image:
    """The set-of-marks image: the tile with numbered squares (and optional contours and 3×3 grid)."""
    img = Image.fromarray(tile_rgb)
    h, w = tile_rgb.shape[:2]
    draw = ImageDraw.Draw(img)
    if grid:
        for k in (1, 2):
            draw.line([(w * k / 3, 0), (w * k / 3, h)], fill=(255, 255, 255), width=max(1, w // 400))
            draw.line([(0, h * k / 3), (w, h * k / 3)], fill=(255, 255, 255), width=max(1, h // 400))
    if contours:
        from scipy import ndimage

        overlay = np.asarray(img).copy()
        for m in contours:
            arr = m.array
            edge = arr & ~ndimage.binary_erosion(arr, border_value=0)
            ys, xs = np.nonzero(edge)
            overlay[m.y0 + ys, m.x0 + xs] = (0, 255, 255)
        img = Image.fromarray(overlay)
        draw = ImageDraw.Draw(img)
    size = font_size or font_size_for(w, h)
    font = _font(size)
    for mk in marks:
        x0, y0, x1, y1 = mk.box
        text = str(mk.number)
        if len(text) > 2:  # widen the square for 3+ digits around the same centre
            extra = (_square_side(size, len(text)) - (x1 - x0)) / 2
            x0, x1 = x0 - extra, x1 + extra
        draw.rectangle([x0, y0, x1, y1], fill=MARK_FILL)
        xy = ((x0 + x1) / 2, (y0 + y1) / 2)
        if not _paste_text(img, xy, text, size, font):
            draw.text(xy, text, fill=MARK_TEXT, font=font, anchor="mm")
    return img


# Rendered mark numbers: (font size, text, fractional x, fractional y) → the text on black and where it goes.
_TEXT_CACHE: dict[tuple[int, str, float, float], tuple[Image.Image, int, int] | None] = {}
_TEXT_CACHE_MAX = 4096


def _rendered_text(
    text: str, size: int, fx: float, fy: float, font: ImageFont.FreeTypeFont | ImageFont.ImageFont
) -> tuple[Image.Image, int, int] | None:
    """``text`` drawn as ``draw_marks`` draws it, on black, cropped to its pixels; with its offset from the
    integer part of the anchor point. Rendering depends only on the text, the font and the fractional part
    of the position, so one rendering serves every mark with the same number (FreeType is the slow part)."""
    key = (size, text, fx, fy)
    if key not in _TEXT_CACHE:
        if len(_TEXT_CACHE) >= _TEXT_CACHE_MAX:
            _TEXT_CACHE.clear()
        pad = 4 * size * max(1, len(text))
        if math.modf(pad + fx)[0] != fx or math.modf(pad + fy)[0] != fy:
            return None  # the canvas position would not keep the fraction exactly: draw in place
        canvas = Image.new("RGB", (2 * pad, 2 * pad), MARK_FILL)
        ImageDraw.Draw(canvas).text((pad + fx, pad + fy), text, fill=MARK_TEXT, font=font, anchor="mm")
        box = canvas.getbbox()
        _TEXT_CACHE[key] = None if box is None else (canvas.crop(box), box[0] - pad, box[1] - pad)
    return _TEXT_CACHE[key]


def _paste_text(
    img: Image.Image, xy: tuple[float, float], text: str, size: int, font: ImageFont.FreeTypeFont | ImageFont.ImageFont
) -> bool:
    """Put the cached rendering of ``text`` at ``xy`` when every pixel it covers is still the square's black
    (then the result equals drawing the text there); ``False`` when the caller must draw it."""
    ix, iy = int(xy[0]), int(xy[1])
    rendered = _rendered_text(text, size, xy[0] - ix, xy[1] - iy, font)
    if rendered is None:
        return False
    patch, dx, dy = rendered
    box = (ix + dx, iy + dy, ix + dx + patch.width, iy + dy + patch.height)
    if box[0] < 0 or box[1] < 0 or box[2] > img.width or box[3] > img.height:
        return False
    if img.crop(box).getextrema() != ((0, 0), (0, 0), (0, 0)):
        return False
    img.paste(patch, box[:2])
    return True
