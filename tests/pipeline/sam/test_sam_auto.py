"""Automatic masks over tiles: windowed generation, deduplication across overlapping tiles, serving.

The deduplication is checked exactly on a generated image with known objects and a torch-free masker
that returns connected bright regions; the tiny random-weight SAM then runs the same path on the NEON
sample (shapes, records and invariants only: random weights say nothing about quality).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from fixtures import write_geotiff
from sam_helpers import NEON_IMAGE, BlobMasker, sam_extras

from pipeline.lmm.types import LMMRequest, LMMResult
from pipeline.raster import Stretch, compute_stretch, read_info, resolve_bands
from pipeline.rle import LocalMask
from pipeline.sam.auto import AutoMask, SamAutoAnnotations, deduplicate, is_cut, iter_tile_images, shared_iou
from pipeline.sam.config import AutoMaskConfig
from pipeline.sam.types import AutoMasker, MaskPrediction
from pipeline.tiling import Tile, tile_grid

if TYPE_CHECKING:
    from pipeline.sam.masker import SamMasker

SIDE, TILE, OVERLAP = 300, 128, 32  # windows per axis: [0, 128), [96, 224), [172, 300)
OBJECTS = {
    # name: (x0, y0, x1, y1), end-exclusive
    "B": (120, 20, 140, 40),  # cut by tile column 0's right edge, whole in column 1
    "D": (260, 40, 270, 50),  # seen by one tile only
    "A": (100, 100, 110, 110),  # inside the overlap of four tiles
    "E": (0, 140, 10, 150),  # on the image's left edge (an image edge never cuts)
    "C": (10, 250, 290, 262),  # wider than any tile: cut in all three columns
}


@pytest.fixture(scope="module")
def blobs_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = np.zeros((3, SIDE, SIDE), dtype=np.uint8)
    for x0, y0, x1, y1 in OBJECTS.values():
        data[:, y0:y1, x0:x1] = 255
    return write_geotiff(tmp_path_factory.mktemp("auto") / "blobs.tif", SIDE, SIDE, data=data)


def _source(path: Path, masker: AutoMasker) -> SamAutoAnnotations:
    info = read_info(path)
    tiles = tile_grid(path.stem, info.width, info.height, TILE, OVERLAP)
    auto = AutoMaskConfig(edge_margin_px=2)
    return SamAutoAnnotations(path, tiles, info.width, info.height, masker, [1, 2, 3], Stretch(), settings=auto, batch_size=4)


def test_is_cut_only_by_inner_edges() -> None:
    inner = Tile("i", 96, 96, 224, 224)
    assert not is_cut((120, 120, 140, 140), inner, 300, 300, 2)
    assert is_cut((97, 120, 140, 140), inner, 300, 300, 2)
    assert is_cut((120, 120, 223, 140), inner, 300, 300, 2)
    corner = Tile("c", 0, 0, 128, 128)
    assert not is_cut((0, 0, 10, 10), corner, 300, 300, 2)  # touches the image edge only
    assert is_cut((0, 0, 127, 10), corner, 300, 300, 2)
    whole = Tile("w", 0, 0, 300, 300)
    assert not is_cut((0, 0, 300, 300), whole, 300, 300, 20)


def test_dedup_across_tiles_on_known_objects(blobs_image: Path) -> None:
    masker = BlobMasker()
    source = _source(blobs_image, masker)
    objects = source.objects
    assert masker.tiles_seen == 9
    # A is seen by 4 tiles, B by 2, C in 3 pieces, D and E once: 11 masks → 5 objects.
    assert source.generated == 11
    assert len(objects) == 5
    boxes = {o.instance_id: o.box() for o in objects}
    assert boxes == {1: OBJECTS["B"], 2: OBJECTS["D"], 3: OBJECTS["A"], 4: OBJECTS["E"], 5: OBJECTS["C"]}
    by_id = {o.instance_id: o for o in objects}
    assert by_id[1].tile == Tile("blobs", 96, 0, 224, 128) and not by_id[1].cut  # the uncut B was kept
    assert by_id[5].mask.area == 280 * 12 and len(by_id[5].windows) == 3  # C's pieces merged
    assert not by_id[4].cut
    assert all(o.category == "object" for o in objects)


def test_tiles_get_clipped_kept_masks(blobs_image: Path) -> None:
    source = _source(blobs_image, BlobMasker())
    info = read_info(blobs_image)
    tiles = tile_grid("blobs", info.width, info.height, TILE, OVERLAP)
    seen: dict[int, int] = {}
    for tile in tiles:
        insts = source.instances_in(tile)
        assert [i.instance_id for i in insts] == sorted(i.instance_id for i in insts)
        for inst in insts:
            m = inst.mask
            assert m.x0 >= 0 and m.y0 >= 0 and m.x0 + m.array.shape[1] <= tile.width and m.y0 + m.array.shape[0] <= tile.height
            assert inst.category == "object" and inst.geometry_kind == "mask" and inst.mask_source == "sam"
            assert inst.mask_model == BlobMasker.mask_model and inst.prompt_box is None
            assert inst.mask_score == pytest.approx(0.9)
            assert sam_extras(inst)["sam_flags"] == [] and sam_extras(inst)["sam_box_iou"] is None
            assert inst.source_ref.startswith("sam-auto:blobs_")
            seen[inst.instance_id] = seen.get(inst.instance_id, 0) + 1
    assert seen == {1: 2, 2: 1, 3: 4, 4: 1, 5: 3}  # every tile that shows an object gets it
    left_bottom = {i.instance_id: i for i in source.instances_in(Tile("blobs", 0, 172, 128, 300))}
    c = left_bottom[5]
    assert c.truncated and c.visible_fraction == pytest.approx(118 * 12 / (280 * 12))
    assert (c.mask.x0, c.mask.y0, c.mask.array.shape) == (10, 250 - 172, (12, 118))
    a = {i.instance_id: i for i in source.instances_in(Tile("blobs", 96, 96, 224, 224))}[3]
    assert not a.truncated and a.visible_fraction == 1.0


def test_automatic_instances_go_through_prepare_rows(blobs_image: Path) -> None:
    from pipeline.config import PrepareConfig
    from pipeline.tile_rows import process_tile

    source = _source(blobs_image, BlobMasker())
    tile = Tile("blobs", 0, 172, 128, 300)
    result = process_tile(tile, source.instances_in(tile), PrepareConfig(format="raster"), None)
    rows, marks = result.instances, result.marks
    assert [(r["instance_id"], r["category"], r["geometry_kind"], r["mask_source"]) for r in rows] == [
        (5, "object", "mask", "sam")
    ]
    assert rows[0]["truncated"] and rows[0]["area"] == 118 * 12 and len(marks) == 1


def _auto(mask: LocalMask, tile: Tile, cut: bool, score: float = 0.9) -> AutoMask:
    return AutoMask(mask, score, 1.0, tile, cut)


def test_dedup_keeps_distinct_objects_in_the_overlap() -> None:
    left, right = Tile("t", 0, 0, 128, 128), Tile("t", 96, 0, 224, 128)
    sq1 = LocalMask(100, 10, np.ones((8, 8), bool))
    sq2 = LocalMask(112, 60, np.ones((8, 8), bool))
    masks = [_auto(sq1, left, False), _auto(sq2, left, False), _auto(sq1, right, False), _auto(sq2, right, False)]
    kept = deduplicate(masks, 0.5)
    assert len(kept) == 2
    # Different segmentations of the same object in two tiles: the better-scored one is kept.
    grown = LocalMask(99, 9, np.ones((10, 10), bool))
    kept = deduplicate([_auto(sq1, left, False, 0.8), _auto(grown, right, False, 0.95)], 0.5)
    assert len(kept) == 1 and kept[0].mask is grown
    # Overlap below the threshold: both stay.
    shifted = LocalMask(104, 14, np.ones((8, 8), bool))
    assert len(deduplicate([_auto(sq1, left, False), _auto(shifted, right, False)], 0.5)) == 2
    assert shared_iou(_auto(sq1, left, False, 0.9), _auto(sq1, Tile("t", 200, 200, 300, 300), False)) == 0.0


def test_nodata_pixels_leave_masks(tmp_path: Path) -> None:
    data = np.zeros((3, 64, 64), dtype=np.uint16)
    data[:, 10:30, 10:30] = 3000
    data[:, 10:30, 20:30] = 9  # nodata inside the bright square's right half
    path = write_geotiff(tmp_path / "nd.tif", 64, 64, dtype="uint16", nodata=9, data=data)

    class Square(BlobMasker):
        """Returns the whole 20 × 20 square, nodata half included."""

        def generate(self, images: Sequence[np.ndarray], settings: AutoMaskConfig) -> list[list[MaskPrediction]]:
            return [[MaskPrediction(LocalMask(10, 10, np.ones((20, 20), bool)), 0.9, 0.9)] for _ in images]

    info = read_info(path)
    bands = resolve_bands(info, None)
    stretch = compute_stretch(path, bands)
    tiles = tile_grid("nd", 64, 64, 0, 0)
    (tile, rgb, valid), = list(iter_tile_images(path, tiles, bands, stretch, masked=True))
    assert not valid[15, 25] and valid[15, 15]
    source = SamAutoAnnotations(path, tiles, 64, 64, Square(), bands, stretch, masked=True)
    (obj,) = source.objects
    assert obj.mask.area == 20 * 10 and obj.box() == (10, 10, 20, 30)


def test_render_matches_the_raster() -> None:
    import rasterio
    from rasterio.windows import Window

    info = read_info(NEON_IMAGE)
    tiles = tile_grid("OSBS_029", info.width, info.height, 256, 64)
    with rasterio.open(NEON_IMAGE) as ds:
        for tile, rgb, valid in iter_tile_images(NEON_IMAGE, tiles, [1, 2, 3], Stretch()):
            want = ds.read([1, 2, 3], window=Window(tile.x0, tile.y0, tile.width, tile.height))
            assert np.array_equal(rgb, np.moveaxis(want, 0, -1)) and valid.all()


def test_tiny_sam_on_neon_tiles(tiny_masker: SamMasker) -> None:
    info = read_info(NEON_IMAGE)
    tiles = tile_grid("OSBS_029", info.width, info.height, 256, 64)
    assert len(tiles) == 4
    config = tiny_masker.config
    source = SamAutoAnnotations(NEON_IMAGE, tiles, info.width, info.height, tiny_masker, [1, 2, 3], Stretch())
    objects = source.objects
    assert source.generated >= len(objects) > 0
    assert [o.instance_id for o in objects] == list(range(1, len(objects) + 1))
    for a in objects:  # nothing left that the dedup rule calls a duplicate
        for b in objects:
            if a is not b and not set(a.windows) & set(b.windows):
                assert shared_iou(a, b) < config.auto.tile_nms_thresh or shared_iou(b, a) < config.auto.tile_nms_thresh
    served: dict[int, list[str]] = {}
    for tile in tiles:
        for inst in source.instances_in(tile):
            assert inst.mask_model == tiny_masker.mask_model and inst.mask_source == "sam"
            assert inst.mask.area > 0 and 0 < inst.visible_fraction <= 1
            assert set(sam_extras(inst)["sam_flags"]) <= {"sam_low_iou", "sam_unstable"}
            served.setdefault(inst.instance_id, []).append(tile.tile_id)
    assert set(served) == {o.instance_id for o in objects}
    for o in objects:
        assert o.tile.tile_id in served[o.instance_id]  # an object always shows in the tile it came from


class FakeClient:
    """Answers every category request with ``answer`` (records the requests)."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.requests: list[LMMRequest] = []

    def describe_all_sync(self, requests: Sequence[LMMRequest], progress: bool = True) -> list[LMMResult]:
        self.requests.extend(requests)
        return [
            LMMResult(r.ref, "k", "ok", self.answer, False, 1, 0.0, 10, 1, None, self.answer, "fake", r.tier)
            for r in requests
        ]


def test_naming_the_automatic_objects(blobs_image: Path) -> None:
    source = _source(blobs_image, BlobMasker())
    client = FakeClient("Storage tank.")
    outcomes = source.name_objects(client, ["storage tank", "building"])
    assert len(outcomes) == 5 and all(o.status == "named" for o in outcomes)
    assert len(client.requests) == 5 and all(r.tier == "category" for r in client.requests)
    assert client.requests[0].facts["candidates"] == ["storage tank", "building"]
    names = {i.category for t in tile_grid("blobs", SIDE, SIDE, TILE, OVERLAP) for i in source.instances_in(t)}
    assert names == {"storage tank"}
