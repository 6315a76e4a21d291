"""Rasters of any band count and type: rendering, stretch, nodata, CRS and GSD bookkeeping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from fixtures import write_geotiff
from PIL import Image

from pipeline.config import PrepareConfig
from pipeline.prepare import prepare
from pipeline.raster import RowBandReader, compute_stretch, read_info, resolve_bands


def test_landsat_geotiff_crs_transform_and_nodata(tmp_path: Path, data_dir: Path) -> None:
    src = data_dir / "geotiff" / "RGB.byte.tif"
    info = read_info(src)
    assert info.crs == "EPSG:32618" and info.nodata == 0
    assert info.gsd == pytest.approx(300.04, abs=0.01)
    summary = prepare([src], PrepareConfig(format="raster", tile_size=512, overlap=0), tmp_path, progress=False)
    assert summary.tiles == 4
    tiles = pq.read_table(tmp_path / "tiles.parquet").to_pylist()
    with rasterio.open(src) as ds:
        for t in tiles:
            a, b, c, d, e, f = t["transform"]
            gt = ds.transform
            assert (c, f) == pytest.approx((gt.c + gt.a * t["x0"], gt.f + gt.e * t["y0"]))
            assert 0 < t["nodata_fraction"] < 1  # the scene has nodata borders
            png = np.asarray(Image.open(tmp_path / t["tile_path"]))
            raw = ds.read(window=((t["y0"], t["y1"]), (t["x0"], t["x1"])))
            assert np.array_equal(png, np.moveaxis(raw, 0, -1))  # uint8 is copied as is


def test_sixteen_bit_five_band_with_nodata_is_stretched(tmp_path: Path) -> None:
    data = np.zeros((5, 300, 400), dtype=np.uint16)
    data[:, :, :200] = 1000
    data[:, :, 200:] = 3000
    data[:, :50, :] = 65535  # nodata strip, must not take part in the statistics
    src = write_geotiff(tmp_path / "ms.tif", 400, 300, bands=5, dtype="uint16", nodata=65535, data=data)
    info = read_info(src)
    assert (info.count, info.dtype) == (5, "uint16")
    assert resolve_bands(info, None) == [1, 2, 3]
    stretch = compute_stretch(src, [4, 3, 2], "auto")
    assert stretch.low == [1000.0] * 3 and stretch.high == [3000.0] * 3
    prepare([src], PrepareConfig(format="raster", bands=[4, 3, 2]), tmp_path / "out", progress=False)
    [tile] = pq.read_table(tmp_path / "out" / "tiles.parquet").to_pylist()
    png = np.asarray(Image.open(tmp_path / "out" / tile["tile_path"]))
    assert png.shape == (300, 400, 3)
    assert (png[:50] == 0).all()  # nodata rendered black
    assert (png[100, 10] == 0).all() and (png[100, 390] == 255).all()
    assert tile["nodata_fraction"] == pytest.approx(50 / 300)
    assert tile["gsd"] == pytest.approx(0.5)


def test_single_band_float_and_bad_band_choice(tmp_path: Path) -> None:
    data = np.linspace(0, 1, 200 * 300, dtype=np.float32).reshape(1, 200, 300)
    src = write_geotiff(tmp_path / "dem.tif", 300, 200, bands=1, dtype="float32", data=data)
    summary = prepare([src], PrepareConfig(format="raster"), tmp_path / "o", progress=False)
    assert summary.images_ok == 1
    png = np.asarray(Image.open(tmp_path / "o" / "tiles" / "dem_0_200_0_300.png"))
    assert png.shape == (200, 300, 3) and (png[..., 0] == png[..., 1]).all()
    bad = prepare([src], PrepareConfig(format="raster", bands=[2, 1, 1]), tmp_path / "b", progress=False)
    assert bad.images_failed == 1 and "band(s) [2]" in bad.skipped[0]["reason"]


def test_entirely_nodata_tiles_are_counted_not_written(tmp_path: Path) -> None:
    data = np.zeros((3, 200, 1000), dtype=np.uint8)
    data[:, :, :400] = 120
    src = write_geotiff(tmp_path / "half.tif", 1000, 200, nodata=0, data=data)
    summary = prepare([src], PrepareConfig(format="raster", tile_size=400, overlap=0), tmp_path / "o", progress=False)
    assert summary.tiles == 1
    assert sum(1 for s in summary.skipped if s["reason"] == "tile is entirely nodata") == 2


def test_row_band_reader_holds_one_band_of_rows(tmp_path: Path) -> None:
    src = write_geotiff(tmp_path / "tall.tif", 300, 3000)
    with rasterio.open(src) as ds:
        full = ds.read()
    with RowBandReader(src, [1, 2, 3]) as reader:
        for y0 in range(0, 2201, 600):
            rows, valid = reader.rows(y0, y0 + 800)
            assert np.array_equal(rows, full[:, y0 : y0 + 800])
            assert reader._rows.shape[1] <= 800  # never more than one tile band in memory
        with pytest.raises(ValueError, match="in order"):
            reader.rows(0, 10)
