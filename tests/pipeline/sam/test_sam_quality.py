"""Quality numbers and flags of SAM masks (numpy and shapely only; no model needed)."""

from __future__ import annotations

import numpy as np
import pytest
from sam_helpers import box_mask

from pipeline.geometry import quad, rasterize_local
from pipeline.rle import LocalMask
from pipeline.sam.config import QualityThresholds
from pipeline.sam.quality import (
    EXTRA_KEYS,
    FLAG_SEVERITY,
    MaskQuality,
    box_agreement,
    box_quality,
    instance_columns,
    mask_iou,
    min_rotated_rectangle,
    overlap,
    prompt_xyxy,
    stability_score,
)

W = H = 100
AXIS_BOX = [20.0, 30.0, 60.0, 30.0, 60.0, 50.0, 20.0, 50.0]  # 40 × 20 px
OBB = [30.0, 70.0, 70.0, 30.0, 80.0, 40.0, 40.0, 80.0]  # 45°-rotated, about 56.6 × 14.1 px


def test_overlap_and_iou_in_one_frame() -> None:
    a = LocalMask(10, 10, np.ones((10, 10), dtype=bool))
    b = LocalMask(15, 10, np.ones((10, 10), dtype=bool))
    assert overlap(a, b) == 50
    assert mask_iou(a, b) == pytest.approx(50 / 150)
    assert mask_iou(a, LocalMask(50, 50, np.ones((2, 2), dtype=bool))) == 0.0
    assert mask_iou(LocalMask(0, 0, np.zeros((0, 0), bool)), LocalMask(0, 0, np.zeros((0, 0), bool))) == 0.0


def test_min_rotated_rectangle_of_axis_and_rotated_masks() -> None:
    rect = min_rotated_rectangle(box_mask((20, 30, 60, 50), W, H))
    assert rect is not None and rect.area == pytest.approx(800.0)
    rotated = rasterize_local(quad(OBB), W, H)
    r2 = min_rotated_rectangle(rotated)
    assert r2 is not None
    assert r2.area == pytest.approx(quad(OBB).area, rel=0.25)
    assert r2.intersection(quad(OBB)).area / r2.union(quad(OBB)).area > 0.7
    assert min_rotated_rectangle(LocalMask(0, 0, np.zeros((3, 3), bool))) is None


def test_box_agreement_axis_aligned() -> None:
    exact = box_mask((20, 30, 60, 50), W, H)
    iou, fill = box_agreement(exact, AXIS_BOX, W, H)
    assert iou == pytest.approx(1.0) and fill == pytest.approx(1.0)
    half = box_mask((20, 30, 40, 50), W, H)
    iou, fill = box_agreement(half, AXIS_BOX, W, H)
    assert iou == pytest.approx(0.5) and fill == pytest.approx(0.5)
    elsewhere = box_mask((70, 70, 90, 90), W, H)
    assert box_agreement(elsewhere, AXIS_BOX, W, H) == (0.0, 0.0)


def test_box_agreement_oriented_box() -> None:
    mask = rasterize_local(quad(OBB), W, H)
    iou, fill = box_agreement(mask, OBB, W, H)
    assert iou > 0.7 and fill == pytest.approx(1.0)
    # The axis-aligned box around the OBB is a poor match for its rotated rectangle.
    aabb = box_mask((30, 30, 80, 80), W, H)
    iou2, fill2 = box_agreement(aabb, OBB, W, H)
    assert iou2 < 0.5 and fill2 == pytest.approx(1.0)


def test_box_clipped_to_tile() -> None:
    # A box half outside the tile: compared with its visible half only.
    box = [-20.0, 10.0, 20.0, 10.0, 20.0, 30.0, -20.0, 30.0]
    assert prompt_xyxy(box, W, H) == (0.0, 10.0, 20.0, 30.0)
    iou, fill = box_agreement(box_mask((0, 10, 20, 30), W, H), box, W, H)
    assert iou == pytest.approx(1.0) and fill == pytest.approx(1.0)
    assert prompt_xyxy([200.0, 0, 210, 0, 210, 10, 200, 10], W, H) is None


def test_flags_follow_thresholds() -> None:
    t = QualityThresholds()
    assert MaskQuality(0.95, 0.97, 0.9, 0.9).flags(t) == []
    assert MaskQuality(0.5, 0.97, 0.9, 0.9).flags(t) == ["sam_low_iou"]
    assert MaskQuality(0.95, 0.5, 0.9, 0.9).flags(t) == ["sam_unstable"]
    assert MaskQuality(0.95, 0.97, 0.3, 0.9).flags(t) == ["sam_box_disagreement"]
    assert MaskQuality(0.95, 0.97, 0.9, 0.2).flags(t) == ["sam_box_disagreement"]
    assert MaskQuality(0.1, 0.1, 0.0, 0.0, empty=True).flags(t) == [
        "sam_empty", "sam_box_disagreement", "sam_low_iou", "sam_unstable",
    ]  # fmt: skip
    assert MaskQuality(0.5, 0.97).flags(t.model_copy(update={"min_predicted_iou": 0.4})) == []
    assert set(FLAG_SEVERITY) == {"sam_empty", "sam_box_disagreement", "sam_low_iou", "sam_unstable"}


def test_extras_and_columns() -> None:
    q = box_quality(box_mask((20, 30, 40, 50), W, H), 0.91, 0.85, AXIS_BOX, W, H)
    extras = q.extras(QualityThresholds())
    assert tuple(extras) == EXTRA_KEYS
    assert extras["sam_box_fill"] == pytest.approx(0.5) and extras["sam_flags"] == []
    assert instance_columns(extras)["sam_predicted_iou"] == pytest.approx(0.91)
    assert instance_columns({}) == {
        "sam_predicted_iou": None, "sam_stability": None, "sam_box_iou": None, "sam_box_fill": None, "sam_flags": [],
    }  # fmt: skip
    empty = box_quality(LocalMask(0, 0, np.zeros((0, 0), bool)), 0.9, 0.9, AXIS_BOX, W, H)
    assert empty.empty and empty.box_iou == 0.0


def test_stability_score_matches_segment_anything() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(5, 40, 50)).astype(np.float32)
    ours = stability_score(logits, 0.0, 1.0)
    assert ours.shape == (5,) and np.all((ours >= 0) & (ours <= 1))
    assert stability_score(np.full((1, 4, 4), -9.0), 0.0, 1.0)[0] == 0.0
    torch = pytest.importorskip("torch")
    pytest.importorskip("segment_anything")
    from segment_anything.utils.amg import calculate_stability_score

    theirs = calculate_stability_score(torch.as_tensor(logits), 0.0, 1.0).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
