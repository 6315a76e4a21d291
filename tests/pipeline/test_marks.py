"""Set-of-marks: marks inside concave objects, apart from each other, readable at 4K."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.marks import Mark, draw_marks, font_size_for, place_marks
from pipeline.rle import LocalMask


def test_mark_of_a_concave_object_lies_on_it() -> None:
    ring = np.zeros((200, 200), bool)
    yy, xx = np.mgrid[:200, :200]
    r = np.hypot(yy - 100, xx - 100)
    ring[(r > 60) & (r < 90)] = True  # centroid (100, 100) is in the hole
    ell = np.zeros((300, 300), bool)
    ell[0:300, 0:40] = True
    ell[260:300, 0:300] = True  # an L: centroid far off the object
    masks = [LocalMask(10, 10, ring), LocalMask(300, 0, ell)]
    placed = place_marks(masks, 800, 800)
    for m, (x, y, box) in zip(masks, placed, strict=True):
        assert m.array[int(y) - m.y0, int(x) - m.x0]
        assert box[0] < x < box[2] and box[1] < y < box[3]


def test_marks_of_neighbours_do_not_overlap_when_there_is_room() -> None:
    big = np.ones((200, 200), bool)
    masks = [LocalMask(100, 100, big), LocalMask(100, 100, big.copy())]  # the same object twice
    (x1, y1, b1), (x2, y2, b2) = place_marks(masks, 800, 800)
    overlap_w = min(b1[2], b2[2]) - max(b1[0], b2[0])
    overlap_h = min(b1[3], b2[3]) - max(b1[1], b2[1])
    assert overlap_w <= 0 or overlap_h <= 0


def test_rendering_is_yellow_on_black_and_scales_with_the_tile() -> None:
    assert font_size_for(800, 800) == 16 and font_size_for(4096, 4096) == 82
    tile = np.full((4096, 4096, 3), 128, np.uint8)
    mk = Mark(7, 2000.0, 2000.0, (1900.0, 1900.0, 2100.0, 2100.0))
    img = np.asarray(draw_marks(tile, [mk]))
    square = img[1900:2100, 1900:2100].reshape(-1, 3)
    colours = {tuple(c) for c in square}
    assert (0, 0, 0) in colours
    yellow = [c for c in colours if c[0] > 200 and c[1] > 200 and c[2] < 80]
    assert yellow  # digits drawn in yellow
    assert (img[:1900] == 128).all()  # nothing drawn outside the mark


def test_grid_and_contour_overlays() -> None:
    tile = np.zeros((300, 300, 3), np.uint8)
    m = LocalMask(50, 50, np.ones((40, 40), bool))
    plain = np.asarray(draw_marks(tile, []))
    grid = np.asarray(draw_marks(tile, [], grid=True))
    contour = np.asarray(draw_marks(tile, [], contours=[m]))
    assert (plain == 0).all()
    assert (grid[:, 100] == 255).all() and (grid[200, :] == 255).all()
    assert (contour[50, 50:90] == (0, 255, 255)).all() and (contour[70, 70] == 0).all()
    assert isinstance(draw_marks(tile, []), Image.Image)


def test_cached_numbers_draw_the_same_pixels_as_drawing_each(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Mark numbers are rendered once and pasted; the image equals drawing every number with FreeType."""
    import pipeline.marks as marks_module

    rng = np.random.default_rng(7)
    tile = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    marks = []
    for number in range(1, 140):  # 1-, 2- and 3-digit numbers, overlapping squares, squares past the edges
        x, y = float(rng.integers(-5, 405)) + 0.5, float(rng.integers(-5, 305)) + 0.5
        half = float(rng.integers(6, 20))
        marks.append(Mark(number, x, y, (x - half, y - half, x + half, y + half)))
    for size in (10, 13, 16):
        fast = np.asarray(draw_marks(tile, marks, font_size=size))
        monkeypatch.setattr(marks_module, "_paste_text", lambda *a, **k: False)
        slow = np.asarray(draw_marks(tile, marks, font_size=size))
        monkeypatch.undo()
        assert np.array_equal(fast, slow)
