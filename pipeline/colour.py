"""Colour names of pixels: one palette and one set of rules, shared by everything that measures colour.

The offline describer (:mod:`pipeline.lmm.offline`) writes these names into its answers, and the quality
checks (:mod:`pipeline.validate`) compare an LMM's colour words against them. Pure functions of pixel values
(uint8 RGB); no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Names the describer may use, in index order of :func:`classify_pixels`.
PALETTE: tuple[str, ...] = (
    "black", "dark grey", "grey", "light grey", "white",
    "red", "pink", "brown", "orange", "tan", "yellow", "olive",
    "green", "dark green", "teal", "light blue", "blue", "dark blue", "purple",
)  # fmt: skip
_IDX = {name: i for i, name in enumerate(PALETTE)}


def classify_pixels(rgb: np.ndarray) -> np.ndarray:
    """Colour-name index (into :data:`PALETTE`) for each pixel.

    Rules in HSV terms: very dark -> black; low saturation or chroma -> white / light grey / grey / dark grey
    by brightness; otherwise the hue band (red, orange, yellow, green, cyan, blue, purple, magenta) refined by
    brightness and saturation (dark orange -> brown, pale orange -> tan, dark green, pale blue -> light blue).

    Args:
        rgb: uint8 array of shape (..., 3).

    Returns:
        int array of shape (...,).
    """
    px = np.asarray(rgb, dtype=np.float32).reshape(-1, 3) / 255.0
    r, g, b = px[:, 0], px[:, 1], px[:, 2]
    v = px.max(axis=1)
    c = v - px.min(axis=1)
    s = np.where(v > 0, c / np.maximum(v, 1e-6), 0.0)
    safe_c = np.maximum(c, 1e-6)
    h = (
        np.select(
            [v == r, v == g],
            [((g - b) / safe_c) % 6.0, (b - r) / safe_c + 2.0],
            (r - g) / safe_c + 4.0,
        )
        * 60.0
    )

    achromatic = (s < 0.15) | (c < 0.09)
    grey_level = np.select(
        [v >= 0.86, v >= 0.66, v >= 0.40],
        [_IDX["white"], _IDX["light grey"], _IDX["grey"]],
        _IDX["dark grey"],
    )
    red = (h < 15) | (h >= 340)
    orange = (h >= 15) & (h < 45)
    yellow = (h >= 45) & (h < 70)
    green = (h >= 70) & (h < 160)
    cyan = (h >= 160) & (h < 195)
    blue = (h >= 195) & (h < 255)
    violet = (h >= 255) & (h < 290)
    magenta = (h >= 290) & (h < 340)
    # First matching rule wins.
    rules: list[tuple[np.ndarray, str]] = [
        (v < 0.16, "black"),
        (red & (v < 0.40), "brown"),
        (red & (s < 0.5) & (v > 0.7), "pink"),
        (red, "red"),
        (orange & (v < 0.55), "brown"),
        (orange & (s < 0.45), "tan"),
        (orange, "orange"),
        (yellow & (v < 0.45), "olive"),
        (yellow & (s < 0.35), "tan"),
        (yellow, "yellow"),
        (green & (v < 0.42), "dark green"),
        (green, "green"),
        (cyan & (v < 0.6), "teal"),
        (cyan, "light blue"),
        (blue & (v < 0.40), "dark blue"),
        (blue & (s < 0.5) & (v > 0.6), "light blue"),
        (blue, "blue"),
        (violet, "purple"),
        (magenta & (v > 0.7), "pink"),
        (magenta, "purple"),
    ]
    conditions = [rules[0][0], achromatic] + [cond for cond, _ in rules[1:]]
    choices: list[Any] = [_IDX["black"], grey_level] + [_IDX[name] for _, name in rules[1:]]
    named = np.asarray(np.select(conditions, choices, _IDX["grey"]), dtype=np.int16)
    return named.reshape(np.shape(rgb)[:-1])


def colour_name(rgb: Sequence[float]) -> str:
    """Name of one RGB colour (0-255 per channel), e.g. ``colour_name((200, 30, 30)) == "red"``."""
    arr = np.clip(np.round(np.asarray(rgb, dtype=np.float64)), 0, 255).astype(np.uint8).reshape(1, 3)
    return PALETTE[int(classify_pixels(arr)[0])]


def colour_shares(pixels: np.ndarray, max_pixels: int = 250_000) -> list[tuple[str, float]]:
    """Colour names of ``pixels`` (N x 3 uint8) with their share of pixels, most frequent first.

    Large inputs are subsampled with a fixed stride (deterministic) to at most ``max_pixels``.
    """
    flat = np.asarray(pixels, dtype=np.uint8).reshape(-1, 3)
    if flat.shape[0] == 0:
        return []
    if flat.shape[0] > max_pixels:
        flat = flat[:: math.ceil(flat.shape[0] / max_pixels)]
    counts = np.bincount(classify_pixels(flat).ravel(), minlength=len(PALETTE))
    total = float(counts.sum())
    order = np.argsort(-counts, kind="stable")
    return [(PALETTE[i], counts[i] / total) for i in order if counts[i] > 0]


def colour_phrase(shares: Sequence[tuple[str, float]], *, second_min: float = 0.25) -> str | None:
    """``"white"``, or ``"white and grey"`` when the runner-up's share is at least ``second_min``.

    Returns None when ``shares`` is empty.
    """
    if not shares:
        return None
    first = shares[0][0]
    if len(shares) > 1 and shares[1][1] >= second_min:
        return f"{first} and {shares[1][0]}"
    return first


__all__ = ["PALETTE", "classify_pixels", "colour_name", "colour_phrase", "colour_shares"]
