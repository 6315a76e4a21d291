"""GeoPixel's any-resolution layout (torch-free)."""

from __future__ import annotations

import numpy as np
import pytest

from geopixel.model.hd import hd_views, plan_grid, sam_view, tokens_per_side, visual_token_count


@pytest.mark.parametrize(
    ("w", "h", "hd_num", "grid"),
    [(800, 800, 9, (3, 3)), (1600, 800, 9, (2, 4)), (800, 1600, 9, (4, 2)), (700, 5000, 9, (7, 1)),
     (1000, 600, 9, (2, 3)), (64, 64, 4, (2, 2)), (64, 64, 1, (1, 1)), (300, 100, 2, (1, 2))],
)
def test_plan_grid(w: int, h: int, hd_num: int, grid: tuple[int, int]) -> None:
    assert plan_grid(w, h, hd_num) == grid
    assert grid[0] * grid[1] <= hd_num


def test_paper_token_count_for_an_800_tile() -> None:
    n = tokens_per_side(560, 14, 2)
    assert n == 20
    assert visual_token_count(*plan_grid(800, 800, 9), n) == 4081  # the number in the GeoPixel paper


def test_hd_views_layout() -> None:
    img = np.zeros((60, 120, 3), dtype=np.uint8)
    img[:, 60:] = 200  # right half bright
    views, grid = hd_views(img, 56, 4)
    assert grid == (1, 2) and views.shape == (3, 56, 56, 3)
    # global view first; crops left → right; the right crop is bright, the left dark (padding is white
    # above/below: 120 px wide → 112, height 60 → 56 — no padding needed here)
    assert views[1].mean() < 10 and views[2].mean() > 190
    sam, size = sam_view(img, 256)
    assert sam.shape == (256, 256, 3) and size == (128, 256) and sam[200:].max() == 0
