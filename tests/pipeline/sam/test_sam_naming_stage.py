"""Naming automatic masks during prepare (`--name-categories`), and their flags reaching the samples.

A tiny SAM with RANDOM weights makes the masks (the code path, not their quality); the LMM is a real
HTTP server on 127.0.0.1: a scripted one whose answers the tests choose, or the embedded offline describer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from fixtures import write_geotiff
from sam_helpers import BlobMasker
from scripted_server import scripted_server

from pipeline.config import PrepareConfig
from pipeline.describe import DescribeConfig, describe
from pipeline.prepare import prepare
from pipeline.raster import Stretch, read_info
from pipeline.sam.auto import SamAutoAnnotations
from pipeline.sam.config import AutoMaskConfig, SamConfig, SamNamingConfig
from pipeline.sam.naming import name_auto_objects
from pipeline.tile_rows import process_tile
from pipeline.tiling import tile_grid

CATEGORIES = ["tree", "building", "small vehicle"]
SIDE, TILE, OVERLAP = 300, 128, 32
BLOBS = np.zeros((3, SIDE, SIDE), dtype=np.uint8)
for _x0, _y0, _x1, _y1 in [
    (120, 20, 140, 40),
    (260, 40, 270, 50),
    (100, 100, 110, 110),
    (0, 140, 10, 150),
    (10, 250, 290, 262),
]:
    BLOBS[:, _y0:_y1, _x0:_x1] = 255


def _config(tiny_config: SamConfig, naming: SamNamingConfig) -> PrepareConfig:
    sam = tiny_config.model_copy(update={"naming": naming})
    return PrepareConfig(format="raster", masks="sam", sam=sam, tile_size=256, overlap=64)


class Cycle:
    """Category answers in request order: a listed name, 'unknown', a name not in the list, a 500."""

    ANSWERS = [(200, "Trees."), (200, "unknown"), (200, "a swimming pool"), (500, "overloaded")]

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, prompt: str, facts: dict[str, Any]) -> tuple[int, str]:
        assert facts.get("tier") == "category" and "outlined in cyan" in prompt
        self.n += 1
        return self.ANSWERS[(self.n - 1) % 4]


EXPECTED = {  # raw answer → (category, category_source, category_flags)
    "Trees.": ("tree", "lmm", []),
    "unknown": ("object", "sam", ["category_unknown"]),
    "a swimming pool": ("object", "sam", ["category_invalid"]),
    None: ("object", "sam", ["category_failed"]),
}


def test_every_naming_outcome_is_recorded(tmp_path: Path) -> None:
    """Five known objects (torch-free blob masker), named one request at a time through a real endpoint."""
    path = write_geotiff(tmp_path / "blobs.tif", SIDE, SIDE, data=BLOBS)
    info = read_info(path)
    tiles = tile_grid("blobs", SIDE, SIDE, TILE, OVERLAP)
    source = SamAutoAnnotations(path, tiles, info.width, info.height, BlobMasker(), [1, 2, 3], Stretch(),
                                settings=AutoMaskConfig(edge_margin_px=2))  # fmt: skip
    with scripted_server(Cycle()) as (url, stats):
        naming = SamNamingConfig(categories=CATEGORIES, base_url=url, max_retries=0, concurrency=1)
        counts = name_auto_objects(source, naming, tmp_path, tmp_path / "calls.parquet")
    assert counts == {"named": 2, "unknown": 1, "invalid": 1, "failed": 1} and len(stats.requests) == 5
    calls = pq.read_table(tmp_path / "calls.parquet").to_pylist()
    assert len(calls) == 5 and [c["status"] for c in calls].count("error") == 1
    assert {c["tier"] for c in calls} == {"category"}
    rows = [process_tile(t, source.instances_in(t), PrepareConfig(format="raster"), None).instances for t in tiles]
    seen = set()
    for r in (r for tile_rows in rows for r in tile_rows):
        assert (r["category"], r["category_source"], r["category_flags"]) == EXPECTED[r["category_answer"]], r
        seen.add(r["instance_id"])
    assert seen == {o.instance_id for o in source.objects}
    assert (tmp_path / "lmm_cache").is_dir()  # the describe stage's cache folder, shared


def test_prepare_names_automatic_masks(tmp_path: Path, data_dir: Path, tiny_config: SamConfig) -> None:
    with scripted_server(lambda prompt, facts: (200, "tree")) as (url, stats):
        config = _config(tiny_config, SamNamingConfig(categories=CATEGORIES, base_url=url))
        summary = prepare([data_dir / "neon" / "OSBS_029.tif"], config, tmp_path, progress=False)
        asked = len(stats.requests)
    assert summary.images_ok == 1 and asked == summary.naming["named"] > 0
    rows = pq.read_table(tmp_path / "instances.parquet").to_pylist()
    assert rows and all(r["category"] == "tree" and r["category_source"] == "lmm" for r in rows)
    assert pq.read_table(tmp_path / "naming_calls.parquet").num_rows == asked
    assert "automatic masks named by the LMM: named" in summary.text()
    # Same inputs and settings (the server is gone now): the image is reused, nothing is asked again.
    again = prepare([data_dir / "neon" / "OSBS_029.tif"], config, tmp_path, progress=False)
    assert again.images_reused == 1 and again.naming == summary.naming


def test_offline_describer_names_nothing_and_the_flags_reach_the_samples(
    tmp_path: Path, data_dir: Path, tiny_config: SamConfig
) -> None:
    config = _config(tiny_config, SamNamingConfig(categories=CATEGORIES))
    summary = prepare([data_dir / "neon" / "OSBS_029.tif"], config, tmp_path, progress=False)
    assert set(summary.naming) == {"unknown"}  # it measures, it does not look: it never guesses a category
    rows = pq.read_table(tmp_path / "instances.parquet").to_pylist()
    assert rows and all(
        r["category"] == "object" and r["category_flags"] == ["category_unknown"] for r in rows
    )
    assert all(r["category_answer"] == "unknown" for r in rows)

    describe(tmp_path, DescribeConfig(), progress=False)
    samples = {s["tile_id"]: s for s in pq.read_table(tmp_path / "samples.parquet").to_pylist()}
    for r in rows:
        flags = samples[r["tile_id"]]["flags"]
        mine = [f for f in flags if f["detail"].startswith(f"instance {r['instance_id']} (")]
        assert {f["code"] for f in mine} == set(r["sam_flags"]) | {"category_unknown"}, (r, mine)
        assert all(f["severity"] in ("info", "warning", "error") for f in mine)
    low = [f for s in samples.values() for f in s["flags"] if f["code"] == "sam_low_iou"]
    for f in low:  # the number behind the flag is in the detail
        assert "predicted IoU is low (0." in f["detail"]


def test_cli_options_and_their_errors(tmp_path: Path, data_dir: Path, tiny_checkpoint: Path) -> None:
    names = tmp_path / "classes.txt"
    names.write_text("# DOTA-like\ntree\nbuilding  # roofs\n\n")
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "pipeline.cli", "prepare", str(data_dir / "neon" / "OSBS_029.tif"), "--format", "raster",
           "--out", str(out), "--masks", "sam", "--sam-checkpoint", str(tiny_checkpoint), "--device", "cpu",
           "--tile-size", "256", "--overlap", "64", "--name-categories", f"@{names}", "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["config"]["sam"]["naming"]["categories"] == ["tree", "building"]
    # SAM's default score thresholds drop every random-weight mask here: nothing to name, an empty call table
    assert pq.read_table(out / "naming_calls.parquet").num_rows == report["summary"]["instances"] == 0

    bad = [sys.executable, "-m", "pipeline.cli", "prepare", str(data_dir / "dota"), "--format", "dota",
           "--out", str(tmp_path / "b"), "--name-categories", "plane,ship", "--no-progress"]  # fmt: skip
    proc = subprocess.run(
        bad, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "400"}
    )
    assert proc.returncode == 2 and "needs --masks sam and --format raster" in proc.stderr
    with pytest.raises(ValueError, match="--format raster"):
        PrepareConfig(
            format="dota",
            masks="sam",
            sam=SamConfig(checkpoint=tiny_checkpoint, naming=SamNamingConfig(categories=["plane"])),
        )
    with pytest.raises(ValueError, match="same after normalising"):
        SamNamingConfig(categories=["small vehicle", "Small_Vehicle"])
