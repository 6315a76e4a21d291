"""The benchmark's CPU smoke version, which also shows our batched path equals ``SamPredictor`` in fp32."""

from __future__ import annotations

import pytest

from pipeline.sam.bench import make_tiles, table


def test_cpu_smoke_run_and_equivalence_with_sam_predictor(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("segment_anything")
    from pipeline.sam.bench import run_bench

    result = run_bench(smoke=True)
    assert result["status"] == "cpu smoke"
    (row,) = result["rows"]
    assert row["model"] == "vit_tiny_test" and row["tiles"] == 2 and row["ratio"] > 0
    # Same random weights, fp32 on the CPU: batched encoding + one decoder call per tile gives the very
    # masks SamPredictor gives one tile at a time.
    assert row["mask_agreement_iou"] > 0.999
    assert row["encoder_images_per_s"] > 0
    out = capsys.readouterr().out
    assert "not a benchmark" in out and "vit_tiny_test" in out and "ratio" in out


def test_tiles_and_table_shapes() -> None:
    tiles, boxes = make_tiles(3, 64, 5, seed=1)
    assert len(tiles) == 3 and tiles[0].shape == (64, 64, 3) and tiles[0].dtype.name == "uint8"
    assert boxes[0].shape == (5, 4) and (boxes[0][:, 2] > boxes[0][:, 0]).all() and (boxes[0][:, 2] <= 64).all()
    row = {
        "model": "vit_b", "device": "NVIDIA H100", "tiles": 32, "boxes_per_tile": 50, "ours_tiles_per_s": 20.0,
        "stock_tiles_per_s": 5.0, "ratio": 4.0, "encoder_images_per_s": 31.5, "mask_agreement_iou": 0.97,
    }  # fmt: skip
    text = table([row])
    assert "4.00x" in text and "vit_b" in text and "20.00" in text and "31.50" in text
