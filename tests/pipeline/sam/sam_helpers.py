"""Helpers of the SAM tests: torch-free fake maskers and tile rendering of the bundled samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from scipy import ndimage

from pipeline.ingest import ImageItem, get_adapter
from pipeline.raster import compute_stretch, read_info, resolve_bands
from pipeline.records import TileInstance
from pipeline.rle import LocalMask
from pipeline.sam.auto import iter_tile_images
from pipeline.sam.config import AutoMaskConfig
from pipeline.sam.types import MaskPrediction
from pipeline.tiling import Tile, tile_grid

DATA = Path(__file__).resolve().parents[2] / "data"
DOTA_IMAGE = DATA / "dota" / "P1888.png"
NEON_IMAGE = DATA / "neon" / "OSBS_029.tif"


def rendered_tiles(
    fmt: str, image: Path, annotations: dict[str, str], size: int, overlap: int
) -> list[tuple[Tile, np.ndarray, list[TileInstance]]]:
    """``(tile, rgb, instances)`` for every tile of a bundled sample, rendered as prepare renders them."""
    info = read_info(image)
    item = ImageItem(image.stem, str(image), fmt, annotations)
    loaded = get_adapter(fmt).load(item, info.width, info.height, info.crs, info.transform)
    bands = resolve_bands(info, None)
    stretch = compute_stretch(image, bands)
    tiles = tile_grid(image.stem, info.width, info.height, size, overlap)
    return [(t, rgb, loaded.source.instances_in(t)) for t, rgb, _ in iter_tile_images(image, tiles, bands, stretch)]


def dota_tiles(size: int = 800, overlap: int = 200) -> list[tuple[Tile, np.ndarray, list[TileInstance]]]:
    return rendered_tiles("dota", DOTA_IMAGE, {"labels": str(DATA / "dota" / "P1888.txt")}, size, overlap)


def neon_tiles(size: int = 800, overlap: int = 200) -> list[tuple[Tile, np.ndarray, list[TileInstance]]]:
    return rendered_tiles(
        "boxes", NEON_IMAGE, {"csv": str(DATA / "neon" / "OSBS_029.csv"), "key": "OSBS_029.tif"}, size, overlap
    )


def sam_extras(instance: TileInstance) -> dict[str, Any]:
    """An instance's ``extras`` typed for reading the SAM keys."""
    return cast(dict[str, Any], instance.extras)


def box_mask(box: Sequence[float], width: int, height: int) -> LocalMask:
    """The pixels whose centres fall in an ``x0, y0, x1, y1`` box, in a ``width × height`` frame."""
    x0, y0, x1, y1 = box
    cols = (np.arange(width) + 0.5 >= x0) & (np.arange(width) + 0.5 < x1)
    rows = (np.arange(height) + 0.5 >= y0) & (np.arange(height) + 0.5 < y1)
    return LocalMask(0, 0, rows[:, None] & cols[None, :]).tight()


class FakeBoxMasker:
    """A torch-free ``BoxMasker``: the mask is ``make_mask(box, width, height)`` (default: the box itself).

    Records the boxes it was given; ``scores`` sets (predicted IoU, stability) for every mask.
    """

    mask_model = "fake:box:sha256:0000000000000000"

    def __init__(
        self,
        make_mask: Callable[[np.ndarray, int, int], LocalMask] | None = None,
        scores: tuple[float, float] = (0.95, 0.97),
    ) -> None:
        self.make_mask = make_mask or (lambda b, w, h: box_mask(tuple(float(v) for v in b), w, h))
        self.scores = scores
        self.calls: list[list[np.ndarray]] = []

    def predict_boxes(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[list[MaskPrediction]]:
        self.calls.append([np.array(b) for b in boxes])
        out = []
        for img, bs in zip(images, boxes, strict=True):
            h, w = img.shape[:2]
            out.append([MaskPrediction(self.make_mask(b, w, h), *self.scores) for b in bs])
        return out


class BlobMasker:
    """A torch-free ``AutoMasker``: every connected bright region (any channel > 128) of a tile is a mask."""

    mask_model = "fake:blobs:sha256:1111111111111111"

    def __init__(self, scores: tuple[float, float] = (0.9, 0.96)) -> None:
        self.scores = scores
        self.tiles_seen = 0

    def generate(self, images: Sequence[np.ndarray], settings: AutoMaskConfig) -> list[list[MaskPrediction]]:
        out = []
        for img in images:
            self.tiles_seen += 1
            labels, n = ndimage.label(img.max(axis=2) > 128)
            preds = []
            for k, sl in enumerate(ndimage.find_objects(labels), start=1):
                if sl is None:
                    continue
                arr = labels[sl] == k
                m = LocalMask(sl[1].start, sl[0].start, arr)
                point = (sl[1].start + 0.5, sl[0].start + 0.5)
                preds.append(MaskPrediction(m, *self.scores, point=point))
            out.append(preds)
        return out
