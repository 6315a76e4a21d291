"""Spatial priors on hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio import features
from shapely import affinity
from shapely.geometry import box

from pipeline import priors
from pipeline.rle import LocalMask


@pytest.mark.parametrize(
    ("x", "y", "word"),
    [(10, 10, "top left"), (400, 10, "top"), (790, 10, "top right"), (10, 400, "left"), (400, 400, "center"),
     (790, 400, "right"), (10, 790, "bottom left"), (400, 790, "bottom"), (790, 790, "bottom right"), (300, 500, "center"), (266, 534, "bottom left")],
)
def test_position_words(x: float, y: float, word: str) -> None:
    assert priors.position_word(x, y, 800, 800) == word


def test_size_classes_on_an_800_tile() -> None:
    assert priors.size_class(639, 800, 800) == "small"
    assert priors.size_class(640, 800, 800) == "medium"
    assert priors.size_class(12_799, 800, 800) == "medium"
    assert priors.size_class(12_800, 800, 800) == "large"


def test_count_words() -> None:
    assert [priors.count_word(n) for n in (1, 2, 3, 5, 6, 10, 11, 20, 21, 300)] == [
        "a single", "two", "a few", "a few", "several", "several", "many", "many", "numerous", "numerous"]


def _mask_of(geom, size: int = 400) -> LocalMask:  # type: ignore[no-untyped-def]
    arr = features.rasterize([(geom, 1)], out_shape=(size, size), dtype="uint8").astype(bool)
    return LocalMask(0, 0, arr).tight()


@pytest.mark.parametrize("angle", [0, 30, 45, 90, 120, 150])
def test_rotated_rectangle_size_and_angle(angle: float) -> None:
    rect = affinity.rotate(box(150, 180, 250, 220), angle, origin=(200, 200))  # 100 × 40 px
    # shapely rotates counter-clockwise in its y-up frame; our images are y-down, so the map angle flips.
    s = priors.measure(_mask_of(rect))
    assert s.length_px == pytest.approx(100, abs=3)
    assert s.width_px == pytest.approx(40, abs=3)
    expected = (-angle) % 180
    diff = min(abs(s.angle_deg - expected), 180 - abs(s.angle_deg - expected))  # type: ignore[operator]
    assert diff < 3
    assert s.elongation == pytest.approx(2.5, rel=0.1)
    assert (s.cx, s.cy) == pytest.approx((200, 200), abs=1)


def test_orientation_words() -> None:
    assert priors.orientation_word(5, 3) == "horizontal"
    assert priors.orientation_word(90, 3) == "vertical"
    assert priors.orientation_word(45, 3) == "diagonal, rising to the right"
    assert priors.orientation_word(135, 3) == "diagonal, falling to the right"
    assert priors.orientation_word(45, 1.1) is None


def test_clusters_group_nearby_points_only() -> None:
    a = [(100 + 15 * i, 100) for i in range(5)]  # a row of 5 cars 15 px apart
    b = [(600, 600 + 15 * i) for i in range(3)]
    lone = [(400, 700)]
    pts = np.array(a + b + lone, dtype=float)
    sizes = np.full(len(pts), 10.0)
    groups = sorted(sorted(g) for g in priors.cluster_points(pts, sizes, 800))
    assert groups == [[0, 1, 2, 3, 4], [5, 6, 7], [8]]


def test_cluster_positions() -> None:
    left_column = np.array([[50, 50], [60, 400], [40, 750]], dtype=float)
    assert priors.cluster_position(left_column, 800, 800) == "left side"
    bottom_row = np.array([[50, 700], [400, 750], [700, 720]], dtype=float)
    assert priors.cluster_position(bottom_row, 800, 800) == "bottom side"
    everywhere = np.array([[x, y] for x in (50, 400, 750) for y in (50, 400, 750)], dtype=float)
    assert priors.cluster_position(everywhere, 800, 800) == "across the image"
    corner = np.array([[700, 700], [720, 690], [760, 760]], dtype=float)
    assert priors.cluster_position(corner, 800, 800) == "bottom right"
