"""The tile grid against the iSAID devkit's, and its fixed quirks."""

from __future__ import annotations

import pytest

from pipeline.tiling import axis_windows, devkit_grid, tile_grid


@pytest.mark.parametrize("size", [(1147, 1023), (884, 977), (4000, 4000), (1300, 2401), (801, 1400), (1400, 801)])
def test_default_grid_is_the_devkit_grid_without_duplicates(size: tuple[int, int]) -> None:
    w, h = size
    ours = [(t.y0, t.y1, t.x0, t.x1) for t in tile_grid("P", w, h)]
    devkit = devkit_grid(w, h)
    unique = list(dict.fromkeys(devkit))
    assert ours == unique
    assert len(ours) == len(set(ours))


def test_geopixeld_tile_name_for_p0003() -> None:
    ids = [t.tile_id for t in tile_grid("P0003", 1147, 1023)]
    assert ids == ["P0003_0_800_0_800", "P0003_0_800_347_1147", "P0003_223_1023_0_800", "P0003_223_1023_347_1147"]


def test_devkit_duplicates_are_removed() -> None:
    # 1300 wide: starts 0, 600, 1200 → 600 and 1200 both shift back to 500..1300 in the devkit.
    devkit = devkit_grid(1300, 1300)
    assert len(devkit) > len(set(devkit))
    assert axis_windows(1300, 800, 200) == [(0, 800), (500, 1300)]


def test_narrow_image_is_tiled_along_its_long_side() -> None:
    tiles = tile_grid("N", 700, 5000)
    assert {(t.x0, t.x1) for t in tiles} == {(0, 700)}
    assert [(t.y0, t.y1) for t in tiles] == [(0, 800), (600, 1400), (1200, 2000), (1800, 2600), (2400, 3200), (3000, 3800), (3600, 4400), (4200, 5000)]
    assert devkit_grid(700, 5000) == [(0, 5000, 0, 700)]  # the devkit leaves it whole


def test_small_image_is_one_tile() -> None:
    [t] = tile_grid("S", 500, 300)
    assert (t.x0, t.y0, t.x1, t.y1) == (0, 0, 500, 300)
    assert t.tile_id == "S_0_300_0_500"


def test_custom_sizes_and_whole_images() -> None:
    tiles = tile_grid("C", 3000, 1000, size=1024, overlap=0)
    assert [(t.x0, t.x1) for t in tiles] == [(0, 1024), (1024, 2048), (1976, 3000)]
    assert all(t.height == 1000 for t in tiles)
    [whole] = tile_grid("W", 4096, 2000, size=0)
    assert (whole.width, whole.height) == (4096, 2000)
    with pytest.raises(ValueError, match="4096"):
        tile_grid("W", 5000, 100, size=0)
    with pytest.raises(ValueError, match="exceeds"):
        tile_grid("W", 5000, 100, size=5000)
    with pytest.raises(ValueError, match="overlap"):
        tile_grid("W", 5000, 5000, size=100, overlap=100)


def test_every_pixel_is_covered() -> None:
    for w, h, size, ov in [(2345, 1234, 800, 200), (5000, 333, 512, 64), (4096, 4096, 4096, 0)]:
        tiles = tile_grid("X", w, h, size, ov)
        xs = sorted({(t.x0, t.x1) for t in tiles})
        ys = sorted({(t.y0, t.y1) for t in tiles})
        assert xs[0][0] == 0 and xs[-1][1] == w
        assert ys[0][0] == 0 and ys[-1][1] == h
        assert all(b[0] <= a[1] for a, b in zip(xs, xs[1:], strict=False))
        assert all(t.width <= max(size, 1) or size == 0 for t in tiles)
