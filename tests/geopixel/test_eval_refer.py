"""Referring segmentation metrics on hand-computed cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geopixel.eval.matching import to_rle
from geopixel.eval.refer import evaluate_refer_files, refer_metrics


def box(y0: int, y1: int, x0: int, x1: int, size: int = 10) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_refer_metrics_by_hand() -> None:
    gts = [box(0, 10, 0, 10), box(0, 2, 0, 5), box(0, 4, 0, 4)]  # areas 100, 10, 16
    preds = [box(0, 10, 0, 8), box(0, 2, 0, 5), box(0, 2, 0, 4)]  # IoU 0.8, 1.0, 0.5
    m = refer_metrics(preds, gts)
    assert m["mIoU"] == pytest.approx((0.8 + 1.0 + 0.5) / 3)
    assert m["oIoU"] == pytest.approx((80 + 10 + 8) / (100 + 10 + 16))
    assert m["P@0.5"] == 1.0 and m["P@0.6"] == pytest.approx(2 / 3) and m["P@0.8"] == pytest.approx(2 / 3)
    assert m["P@0.9"] == pytest.approx(1 / 3) and m["n"] == 3
    # a missing prediction: IoU 0, its GT area joins the union
    m2 = refer_metrics([None, preds[1]], gts[:2])
    assert m2["mIoU"] == 0.5 and m2["oIoU"] == pytest.approx(10 / 110)


def test_refer_files(tmp_path: Path) -> None:
    def rle(m: np.ndarray) -> dict:
        r = to_rle(m)
        return {"size": r["size"], "counts": r["counts"].decode()}

    gt = [{"ref_id": 1, "sentence": "the large ship", "segmentation": rle(box(0, 10, 0, 10))},
          {"ref_id": 2, "sentence": "the plane", "segmentation": rle(box(0, 4, 0, 4))}]
    pred = [{"ref_id": 1, "pred_mask": rle(box(0, 10, 0, 5))}, {"ref_id": 9, "pred_mask": rle(box(0, 1, 0, 1))}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    m = evaluate_refer_files(tmp_path / "gt.json", tmp_path / "pred.json")
    assert m["mIoU"] == pytest.approx(0.25) and m["missing"] == 1 and m["unknown"] == 1
    assert m["oIoU"] == pytest.approx(50 / 116)
