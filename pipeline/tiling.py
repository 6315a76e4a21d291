"""The tile grid: iSAID-devkit compatible by default, without the devkit's quirks.

The iSAID devkit cuts 800×800 patches with a stride of 600 (overlap 200): for each start
``x in range(0, W, stride)`` the patch is ``[x, x + size)``; when that runs past the image, it is
shifted back to ``[W - size, W)``. Tile ids are ``{image}_{y0}_{y1}_{x0}_{x1}``, e.g.
``P0003_0_800_347_1147``. We keep those starts and names so tile ids match GeoPixelD's, and fix:

* duplicates: two starts shifted back to the same window yield one tile, not two;
* an image shorter than the tile on one side is still tiled along the other side (the devkit
  leaves e.g. a 700×5000 image whole);
* an image smaller than the tile on both sides is one tile of the image's size.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_TILE_SIDE = 4096


@dataclass(frozen=True)
class Tile:
    """A window of a source image, pixel bounds end-exclusive."""

    image_id: str
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def tile_id(self) -> str:
        return f"{self.image_id}_{self.y0}_{self.y1}_{self.x0}_{self.x1}"

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def axis_windows(length: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Start/end pairs along one axis of ``length`` pixels.

    ``size <= 0`` or ``length <= size`` gives the single window ``(0, length)``.
    """
    if length <= 0:
        return []
    if size <= 0 or length <= size:
        return [(0, length)]
    stride = size - overlap
    if stride <= 0:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile size ({size})")
    windows: list[tuple[int, int]] = []
    for start in range(0, length, stride):
        end = start + size
        if end > length:
            start, end = length - size, length
        if not windows or windows[-1] != (start, end):
            windows.append((start, end))
        if end == length:
            break
    return windows


def tile_grid(image_id: str, width: int, height: int, size: int = 800, overlap: int = 200) -> list[Tile]:
    """All tiles of an image in row-major order (rows of tiles top to bottom).

    Args:
        image_id: the source image's id (its file stem), used in tile ids.
        width, height: image size in pixels.
        size: tile side in pixels (``0`` keeps the whole image as one tile, up to 4096 per side).
        overlap: pixels shared by neighbouring tiles.
    """
    if size > MAX_TILE_SIDE:
        raise ValueError(f"tile size {size} exceeds the maximum of {MAX_TILE_SIDE}")
    if size < 0 or overlap < 0:
        raise ValueError("tile size and overlap must not be negative")
    if size == 0 and (width > MAX_TILE_SIDE or height > MAX_TILE_SIDE):
        raise ValueError(
            f"whole-image tiles are limited to {MAX_TILE_SIDE} px per side; image is {width}×{height}"
        )
    rows = axis_windows(height, size, overlap)
    cols = axis_windows(width, size, overlap)
    return [Tile(image_id, x0, y0, x1, y1) for (y0, y1) in rows for (x0, x1) in cols]


def devkit_grid(width: int, height: int, size: int = 800, stride: int = 600) -> list[tuple[int, int, int, int]]:
    """The iSAID devkit's own windows (with its duplicates), as ``(y0, y1, x0, x1)``, for comparison.

    An image not larger than ``size`` on either side is not split at all by the devkit.
    """
    if width <= size or height <= size:
        return [(0, height, 0, width)]
    out = []
    for y in range(0, height, stride):
        for x in range(0, width, stride):
            y0, x0 = y, x
            y1, x1 = y0 + size, x0 + size
            if y1 > height:
                y0, y1 = height - size, height
            if x1 > width:
                x0, x1 = width - size, width
            out.append((y0, y1, x0, x1))
    return out
