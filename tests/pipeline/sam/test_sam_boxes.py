"""Box labels → SAM masks on the bundled DOTA oriented boxes and NEON tree boxes.

The real-model tests use the tiny random-weight SAM (see conftest): they check the code path (shapes,
records, batching, clipping, flags), not whether the masks are good.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pytest
from sam_helpers import FakeBoxMasker, box_mask, dota_tiles, neon_tiles, sam_extras

from pipeline.records import TileInstance
from pipeline.rle import LocalMask, encode_local
from pipeline.sam.boxes import (
    clip_to_tile,
    is_refinable,
    refine_batches,
    refine_tiles_with_boxes,
    refine_with_boxes,
)
from pipeline.sam.config import QualityThresholds
from pipeline.sam.quality import EXTRA_KEYS, FLAG_SEVERITY
from pipeline.sam.types import MaskPrediction

if TYPE_CHECKING:
    from pipeline.sam.masker import SamMasker

KNOWN_FLAGS = set(FLAG_SEVERITY)


def _polygon_instance() -> TileInstance:
    return TileInstance(999, "harbor", LocalMask(5, 5, np.ones((4, 4), bool)), 1.0, False, "polygon", "x.json#1")


def test_dota_boxes_with_tiny_sam(tiny_masker: SamMasker) -> None:
    (tile, rgb, instances), = dota_tiles()  # one 712 × 557 tile
    h, w = rgb.shape[:2]
    assert len(instances) == 64 and all(i.geometry_kind == "obb" for i in instances)
    mixed = [*instances, _polygon_instance()]
    out = refine_with_boxes(rgb, mixed, tiny_masker)
    assert len(out) == len(mixed)
    assert out[-1] is mixed[-1]  # not a box: passed through untouched
    sam = [o for o in out if o.mask_source == "sam"]
    empty = [o for o in out[:-1] if "sam_empty" in sam_extras(o)["sam_flags"]]
    assert len(sam) + len(empty) == 64
    for before, after in zip(instances, out, strict=False):
        assert after.instance_id == before.instance_id and after.category == before.category
        assert after.prompt_box == before.prompt_box  # the box stays in the record
        assert after.visible_fraction == before.visible_fraction and after.truncated == before.truncated
        assert tuple(after.extras)[-len(EXTRA_KEYS) :] == EXTRA_KEYS
        assert set(sam_extras(after)["sam_flags"]) <= KNOWN_FLAGS
        if after.mask_source == "sam":
            assert after.mask_model == tiny_masker.mask_model
            assert str(after.mask_model).startswith("sam:vit_tiny_test:sha256:")
            assert after.mask_score == pytest.approx(sam_extras(after)["sam_predicted_iou"])
            m = after.mask
            assert m.array.dtype == bool and m.area > 0
            assert m.x0 >= 0 and m.y0 >= 0 and m.x0 + m.array.shape[1] <= w and m.y0 + m.array.shape[0] <= h
            assert encode_local(m, h, w)["size"] == [h, w]
            # Random weights: the mask has nothing to do with the box, and the flags say so.
            assert 0.0 <= sam_extras(after)["sam_box_iou"] <= 1.0 and 0.0 <= sam_extras(after)["sam_box_fill"] <= 1.0
            if sam_extras(after)["sam_box_iou"] < 0.5:
                assert "sam_box_disagreement" in sam_extras(after)["sam_flags"]
    assert instances[0].mask_source == "annotation"  # inputs are not modified


def test_neon_batches_match_single_tiles(tiny_masker: SamMasker) -> None:
    tiles = neon_tiles(size=256, overlap=64)
    assert len(tiles) == 4 and sum(len(t[2]) for t in tiles) > 61  # trees near the cuts appear twice
    single = [refine_with_boxes(rgb, insts, tiny_masker) for _, rgb, insts in tiles]
    streamed = list(refine_batches(((t.tile_id, rgb, insts) for t, rgb, insts in tiles), tiny_masker, batch_size=3))
    assert [k for k, _, _ in streamed] == [t.tile_id for t, _, _ in tiles]
    for one, (_, _, many) in zip(single, streamed, strict=True):
        assert len(one) == len(many)
        for a, b in zip(one, many, strict=True):
            assert a.instance_id == b.instance_id and a.geometry_kind == "box"
            assert a.mask_score == pytest.approx(b.mask_score, abs=1e-4)
            inter = np.count_nonzero(a.mask.to_full(256, 256) & b.mask.to_full(256, 256))
            union = np.count_nonzero(a.mask.to_full(256, 256) | b.mask.to_full(256, 256))
            assert union == 0 or inter / union > 0.99  # batching changes nothing but float noise


def test_box_prompts_are_clipped_axis_aligned_boxes() -> None:
    tiles = dota_tiles(size=300, overlap=60)
    masker = FakeBoxMasker()
    rgbs = [rgb for _, rgb, _ in tiles]
    out = refine_tiles_with_boxes(rgbs, [insts for _, _, insts in tiles], masker)
    (call,) = masker.calls  # all tiles in one call
    assert len(call) == len(tiles)
    for (_, rgb, insts), boxes, refined in zip(tiles, call, out, strict=True):
        h, w = rgb.shape[:2]
        assert boxes.shape == (len(insts), 4)
        assert np.all(boxes[:, [0, 2]] >= 0) and np.all(boxes[:, [0, 2]] <= w)
        assert np.all(boxes[:, [1, 3]] >= 0) and np.all(boxes[:, [1, 3]] <= h)
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        for inst, box in zip(insts, boxes, strict=True):
            assert inst.prompt_box is not None
            xs, ys = np.array(inst.prompt_box[0::2]), np.array(inst.prompt_box[1::2])
            np.testing.assert_allclose(box, [max(xs.min(), 0), max(ys.min(), 0), min(xs.max(), w), min(ys.max(), h)])
        assert all(r.mask_model == masker.mask_model for r in refined)
    truncated = [r for _, _, rs in zip(tiles, call, out, strict=True) for r in rs if r.truncated]
    assert truncated, "a 300 px grid cuts some DOTA boxes"


def test_flags_from_a_scripted_masker() -> None:
    (tile, rgb, instances), = dota_tiles()
    h, w = rgb.shape[:2]
    subset = instances[:4]
    t = QualityThresholds()

    good = refine_with_boxes(rgb, subset, FakeBoxMasker(scores=(0.95, 0.97)), t)
    # The fake returns the axis-aligned box: it fills the OBB, and its rotated rectangle matches a
    # near-axis-aligned vehicle box.
    assert sam_extras(good[0])["sam_box_fill"] == pytest.approx(1.0)
    assert "sam_low_iou" not in sam_extras(good[0])["sam_flags"] and "sam_unstable" not in sam_extras(good[0])["sam_flags"]

    low = refine_with_boxes(rgb, subset, FakeBoxMasker(scores=(0.3, 0.5)), t)
    assert all(sam_extras(o)["sam_flags"][-2:] == ["sam_low_iou", "sam_unstable"] for o in low)
    assert all(o.mask_score == pytest.approx(0.3) for o in low)

    def shifted(b: np.ndarray, w: int, h: int) -> LocalMask:
        return box_mask((b[0] - 200, b[1] - 100, b[2] - 200, b[3] - 100), w, h)

    off = refine_with_boxes(rgb, instances[2:6], FakeBoxMasker(shifted), t)  # boxes left of x = 470
    assert all(sam_extras(o)["sam_flags"] == ["sam_box_disagreement"] for o in off)
    assert all(sam_extras(o)["sam_box_iou"] == 0.0 and sam_extras(o)["sam_box_fill"] == 0.0 for o in off)

    nothing = refine_with_boxes(rgb, subset, FakeBoxMasker(lambda b, w, h: LocalMask(0, 0, np.zeros((0, 0), bool))), t)
    for before, after in zip(subset, nothing, strict=True):
        assert sam_extras(after)["sam_flags"][0] == "sam_empty"
        assert after.mask_source == "annotation" and after.mask_model is None  # the box mask is kept
        assert np.array_equal(after.mask.array, before.mask.array)

    def outside(b: np.ndarray, w: int, h: int) -> LocalMask:
        return LocalMask(w - 5, h - 5, np.ones((20, 20), bool))  # runs past the tile's corner

    clipped = refine_with_boxes(rgb, subset[:1], FakeBoxMasker(outside), t)[0]
    assert (clipped.mask.x0, clipped.mask.y0, clipped.mask.array.shape) == (w - 5, h - 5, (5, 5))


def test_refinable_and_clip_helpers() -> None:
    box = TileInstance(1, "car", LocalMask(0, 0, np.ones((2, 2), bool)), 1.0, False, "box", "r", [0, 0, 2, 0, 2, 2, 0, 2])
    assert is_refinable(box)
    assert not is_refinable(replace(box, prompt_box=None))
    assert not is_refinable(replace(box, geometry_kind="polygon"))
    assert clip_to_tile(LocalMask(-3, -3, np.ones((5, 5), bool)), 10, 10).array.shape == (2, 2)
    assert clip_to_tile(LocalMask(20, 20, np.ones((5, 5), bool)), 10, 10).area == 0


def test_mismatched_inputs_are_errors() -> None:
    (tile, rgb, instances), = dota_tiles()
    with pytest.raises(ValueError, match="1 tiles but 2 instance lists"):
        refine_tiles_with_boxes([rgb], [instances, instances], FakeBoxMasker())

    class Short(FakeBoxMasker):
        def predict_boxes(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[list[MaskPrediction]]:
            return [out[:-1] for out in super().predict_boxes(images, boxes)]

    with pytest.raises(ValueError, match="returned 63 masks for 64 boxes"):
        refine_with_boxes(rgb, instances, Short())


def test_masker_rejects_bad_images(tiny_masker: SamMasker) -> None:
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        tiny_masker.predict_boxes([np.zeros((10, 10), np.uint8)], [np.array([[0, 0, 5, 5]])])
    with pytest.raises(ValueError, match="1 images but 2 box arrays"):
        tiny_masker.predict_boxes([np.zeros((10, 10, 3), np.uint8)], [np.zeros((0, 4))] * 2)
    # A tile without boxes is not encoded and gets no masks.
    assert tiny_masker.predict_boxes([np.zeros((10, 10, 3), np.uint8)], [np.zeros((0, 4))]) == [[]]


def test_multimask_and_prompt_chunking_keep_one_mask_per_box(tiny_masker: SamMasker) -> None:
    from pipeline.sam.masker import SamMasker

    (tile, rgb, instances), = dota_tiles()
    boxes = np.array([[10, 10, 60, 50], [100, 100, 180, 150], [300, 200, 400, 260]], dtype=float)
    config = tiny_masker.config.model_copy(update={"multimask_boxes": True, "max_prompts_per_call": 2, "decode_chunk": 1})
    other = SamMasker(tiny_masker.model, tiny_masker.info, config)
    (preds,) = other.predict_boxes([rgb], [boxes])
    assert len(preds) == 3
    assert all(p.mask.array.dtype == bool and 0.0 <= p.stability <= 1.0 for p in preds)
    # Multimask keeps the best-scored of SAM's 3 candidates for each box.
    torch = pytest.importorskip("torch")
    (enc,) = other.encode([rgb])
    box_t = torch.as_tensor(other.transform.apply_boxes(boxes, enc.original_size), dtype=torch.float)
    with torch.inference_mode():
        _, iou = other._decode(enc, boxes=box_t, multimask=True)
    assert tuple(iou.shape) == (3, 3)
    np.testing.assert_allclose([p.predicted_iou for p in preds], iou.max(dim=1).values.numpy(), rtol=1e-5)


def test_refined_instances_go_through_prepare_rows(tiny_masker: SamMasker) -> None:
    """What prepare does next with the records: priors, marks and COCO RLE of the SAM masks."""
    from pipeline.config import PrepareConfig
    from pipeline.rle import decode
    from pipeline.tile_rows import process_tile

    (tile, rgb, instances), = dota_tiles()
    refined = refine_with_boxes(rgb, instances, tiny_masker)
    result = process_tile(tile, refined, PrepareConfig(format="dota", min_area=0), 0.27)
    rows = result.instances
    by_id = {r["instance_id"]: r for r in rows}
    for inst in refined:
        row = by_id[inst.instance_id]
        assert row["mask_source"] == inst.mask_source and row["mask_model"] == inst.mask_model
        assert row["geometry_kind"] == "obb" and row["prompt_box"] == inst.prompt_box
        assert row["area"] == inst.mask.area
        assert np.array_equal(decode(row["rle"]), inst.mask.to_full(tile.height, tile.width))
