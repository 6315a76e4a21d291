"""`prepare --masks sam` end to end on real samples, with a tiny SAM of RANDOM weights.

Random weights: these tests check the wiring (records, columns, identity, resume, errors), not masks' quality.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import PrepareConfig
from pipeline.prepare import prepare
from pipeline.sam.config import SamConfig


def test_box_labels_become_sam_masks(tmp_path: Path, data_dir: Path, tiny_config: SamConfig) -> None:
    config = PrepareConfig(format="boxes", masks="sam", sam=tiny_config)
    summary = prepare([data_dir / "neon" / "OSBS_029.csv"], config, tmp_path, progress=False)
    assert summary.images_ok == 1
    rows = pq.read_table(tmp_path / "instances.parquet").to_pylist()
    assert rows
    sam_rows = [r for r in rows if r["mask_source"] == "sam"]
    assert sam_rows, "every box should have gone through SAM"
    for r in sam_rows:
        assert r["mask_model"].startswith("sam:vit_tiny_test:sha256:")
        assert r["geometry_kind"] == "box" and len(r["prompt_box"]) == 8  # the box stays in the record
        assert r["sam_predicted_iou"] is not None and r["sam_box_iou"] is not None
        assert isinstance(r["sam_flags"], list)
    report = json.loads((tmp_path / "prepare_report.json").read_text())
    assert report["config"]["sam_mask_model"] == sam_rows[0]["mask_model"]
    again = prepare([data_dir / "neon" / "OSBS_029.csv"], config, tmp_path, progress=False)
    assert again.images_reused == 1  # same weights, same inputs: reused


def test_imagery_alone_gets_automatic_masks(tmp_path: Path, data_dir: Path, tiny_config: SamConfig) -> None:
    config = PrepareConfig(format="raster", masks="sam", sam=tiny_config, tile_size=256, overlap=64)
    summary = prepare([data_dir / "neon" / "OSBS_029.tif"], config, tmp_path, progress=False)
    assert summary.images_ok == 1 and summary.tiles == 4
    rows = pq.read_table(tmp_path / "instances.parquet").to_pylist()
    assert rows and all(r["category"] == "object" and r["mask_source"] == "sam" for r in rows)


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path, data_dir: Path) -> None:
    missing = tmp_path / "nope.pth"
    cmd = [sys.executable, "-m", "pipeline.cli", "prepare", str(data_dir / "dota"), "--format", "dota",
           "--out", str(tmp_path / "o"), "--masks", "sam", "--sam-checkpoint", str(missing), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert str(missing) in proc.stderr and "not found" in proc.stderr.lower()
    with pytest.raises(ValueError, match="sam-checkpoint"):
        PrepareConfig(format="dota", masks="sam")
