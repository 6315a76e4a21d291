"""Fixtures of the geo tests: bundled samples prepared (and described) with small tiles, and a folder of
three images in three coordinate systems (EPSG:32617, EPSG:32616 and none)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from pipeline.config import PrepareConfig
from pipeline.describe import DescribeConfig, describe
from pipeline.prepare import prepare


@pytest.fixture(scope="session")
def neon_described(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """NEON OSBS_029 (EPSG:32617, 0.1 m, 61 tree boxes) in 200 px tiles without overlap, described."""
    out = tmp_path_factory.mktemp("geo_neon")
    config = PrepareConfig(format="boxes", tile_size=200, overlap=0)
    summary = prepare([data_dir / "neon" / "OSBS_029.csv"], config, out, progress=False)
    assert summary.images_ok == 1, summary.text()
    describe(out, DescribeConfig(), progress=False)
    return out


@pytest.fixture(scope="session")
def dota_described(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """DOTA P1888 (712 × 557 px, no CRS, GSD 0.266 m from its header) in 256 px tiles, described."""
    out = tmp_path_factory.mktemp("geo_dota")
    summary = prepare([data_dir / "dota"], PrepareConfig(format="dota", tile_size=256, overlap=0), out, progress=False)
    assert summary.images_ok == 1, summary.text()
    describe(out, DescribeConfig(), progress=False)
    return out


@pytest.fixture(scope="session")
def mixed_prepared(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The NEON tile three times: as shipped (EPSG:32617), relabelled EPSG:32616 with an acquisition time,
    and as a PNG (no CRS)."""
    src = tmp_path_factory.mktemp("geo_mixed_src")
    shutil.copy(data_dir / "neon" / "OSBS_029.tif", src / "A_32617.tif")
    shutil.copy(data_dir / "neon" / "OSBS_029.tif", src / "B_32616.tif")
    with rasterio.open(src / "B_32616.tif", "r+") as ds:
        ds.crs = rasterio.crs.CRS.from_epsg(32616)
        ds.update_tags(TIFFTAG_DATETIME="2019:06:01 15:30:00")  # an acquisition time for the STAC item
    with rasterio.open(src / "A_32617.tif") as ds:
        rgb = np.moveaxis(ds.read([1, 2, 3]), 0, -1)
    Image.fromarray(rgb).save(src / "C_pixel.png")
    with (data_dir / "neon" / "OSBS_029.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    with (src / "boxes.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for name in ("A_32617.tif", "B_32616.tif", "C_pixel.png"):
            writer.writerows({**r, "image_path": name} for r in rows)
    out = tmp_path_factory.mktemp("geo_mixed")
    config = PrepareConfig(format="boxes", tile_size=200, overlap=0)
    summary = prepare([src / "boxes.csv"], config, out, progress=False)
    assert summary.images_ok == 3, summary.text()
    return out
