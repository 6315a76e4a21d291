"""DOTA, box CSV, GeoJSON and COCO on real samples and generated files; all yield the same records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from pycocotools import mask as mask_utils
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping

from pipeline.config import PrepareConfig
from pipeline.prepare import prepare
from pipeline.rle import decode


def _run(sources: list[Path], out: Path, **kw) -> tuple[dict, list[dict], list[dict]]:  # type: ignore[no-untyped-def]
    prepare(sources, PrepareConfig(**kw), out, progress=False)
    report = json.loads((out / "prepare_report.json").read_text())
    return report, pq.read_table(out / "instances.parquet").to_pylist(), pq.read_table(out / "tiles.parquet").to_pylist()


def test_dota_obb_with_gsd_header(tmp_path: Path, data_dir: Path) -> None:
    report, rows, tiles = _run([data_dir / "dota"], tmp_path, format="dota")
    assert report["summary"]["images_ok"] == 1
    [tile] = tiles
    assert tile["tile_id"] == "P1888_0_557_0_712"  # smaller than 800 on both sides: one tile
    assert tile["gsd"] == pytest.approx(0.266170468393)
    labels = [ln for ln in (data_dir / "dota" / "P1888.txt").read_text().splitlines()[2:] if ln.strip()]
    assert len(rows) == len(labels) == 64
    for r in rows:
        assert r["geometry_kind"] == "obb" and len(r["prompt_box"]) == 8
        assert r["length_m"] == pytest.approx(r["length_px"] * 0.266170468393)
    # The first label: a small vehicle ~9×20 px box.
    first = next(r for r in rows if r["instance_id"] == 1)
    assert first["category_name"] == "small vehicle"
    assert 15 < first["length_px"] < 25 and 7 < first["width_px"] < 12
    assert first["orientation_word"] == "vertical"
    assert first["cluster_id"] is not None and first["mark"] is None


def test_dota_bad_label_lines_are_counted_skips(tmp_path: Path, data_dir: Path) -> None:
    src = tmp_path / "dota"
    (src / "images").mkdir(parents=True)
    (src / "labelTxt").mkdir()
    shutil.copy(data_dir / "dota" / "P1888.png", src / "images")
    text = (data_dir / "dota" / "P1888.txt").read_text()
    text += "1 2 3\n" + "5000 5000 5010 5000 5010 5010 5000 5010 plane 0\n" + "a b c d e f g h ship 0\n"
    (src / "labelTxt" / "P1888.txt").write_text(text)
    report, rows, _ = _run([src], tmp_path / "out", format="dota")
    reasons = [s["reason"] for s in report["summary"]["skipped"]]
    assert "expected 8 coordinates and a class" in reasons
    assert "annotation lies outside the image" in reasons
    assert "non-numeric coordinates" in reasons
    assert len(rows) == 64
    assert all(":" in s["path"] for s in report["summary"]["skipped"])  # file:line


def test_neon_box_csv_keeps_crs_and_metric_sizes(tmp_path: Path, data_dir: Path) -> None:
    report, rows, tiles = _run([data_dir / "neon" / "OSBS_029.csv"], tmp_path, format="boxes")
    [tile] = tiles
    assert tile["crs"] == "EPSG:32617"
    assert tile["gsd"] == pytest.approx(0.1)
    assert tile["transform"][2] == pytest.approx(404211.9)
    assert len(rows) == 61
    first = next(r for r in rows if r["instance_id"] == 1)  # 203,67,227,90 → 24×23 px
    assert first["bbox"] == [203.0, 67.0, 24.0, 23.0]
    assert first["length_m"] == pytest.approx(2.4, abs=0.15)
    assert first["geometry_kind"] == "box" and first["prompt_box"] == [203, 67, 227, 67, 227, 90, 203, 90]


def test_geojson_in_map_crs_and_wgs84_match_the_boxes(tmp_path: Path, data_dir: Path) -> None:
    _, box_rows, _ = _run([data_dir / "neon" / "OSBS_029.csv"], tmp_path / "boxes", format="boxes")
    tif = data_dir / "neon" / "OSBS_029.tif"
    with rasterio.open(tif) as ds:
        t, crs = ds.transform, ds.crs
    feats_map, feats_ll = [], []
    import csv

    for n, row in enumerate(csv.DictReader((data_dir / "neon" / "OSBS_029.csv").open()), start=1):
        x0, y0, x1, y1 = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        mx0, my0 = t.c + t.a * x0, t.f + t.e * y0
        mx1, my1 = t.c + t.a * x1, t.f + t.e * y1
        geom = mapping(box(min(mx0, mx1), min(my0, my1), max(mx0, mx1), max(my0, my1)))
        feats_map.append({"type": "Feature", "id": f"tree-{n}", "properties": {"label": "Tree"}, "geometry": geom})
        ll = transform_geom(crs, "EPSG:4326", geom)
        feats_ll.append({"type": "Feature", "properties": {"class": "Tree"}, "geometry": ll})
    for name, feats in (("map", feats_map), ("wgs84", feats_ll)):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(tif, folder)
        (folder / "OSBS_029.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
        _, rows, _ = _run([folder], tmp_path / f"out_{name}", format="geojson")
        assert len(rows) == 61
        for a, b in zip(box_rows, rows, strict=True):
            ma, mb = decode(a["rle"]), decode(b["rle"])
            iou = (ma & mb).sum() / (ma | mb).sum()
            assert iou > 0.85, (name, a["instance_id"], iou)
        assert rows[0]["category"] == "Tree"


def test_geojson_over_a_raster_without_crs_is_a_clear_error(tmp_path: Path, data_dir: Path) -> None:
    shutil.copy(data_dir / "dota" / "P1888.png", tmp_path / "P1888.png")
    feat = {"type": "Feature", "properties": {"label": "x"}, "geometry": mapping(box(500000, 3000000, 500010, 3000010))}
    (tmp_path / "P1888.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [feat]}))
    report, rows, _ = _run([tmp_path], tmp_path / "out", format="geojson")
    assert report["summary"]["images_failed"] == 1
    [skip] = report["summary"]["skipped"]
    assert skip["path"].endswith("P1888.geojson") and "has no CRS" in skip["reason"]


def test_coco_polygons_rle_bbox_multipolygon_and_repair(tmp_path: Path, data_dir: Path) -> None:
    shutil.copy(data_dir / "dota" / "P1888.png", tmp_path / "P1888.png")
    rle_mask = np.zeros((557, 712), dtype=np.uint8, order="F")
    rle_mask[100:140, 200:260] = 1
    rle = mask_utils.encode(rle_mask)
    coco = {
        "images": [{"id": 7, "file_name": "P1888.png", "width": 712, "height": 557},
                   {"id": 8, "file_name": "missing.png", "width": 10, "height": 10}],
        "categories": [{"id": 1, "name": "plane"}, {"id": 2, "name": "ship"}],
        "annotations": [
            {"id": 11, "image_id": 7, "category_id": 1, "segmentation": [[10, 10, 60, 10, 60, 40, 10, 40]], "bbox": [10, 10, 50, 30]},
            {"id": 12, "image_id": 7, "category_id": 2, "segmentation": {"size": [557, 712], "counts": rle["counts"].decode()}},
            {"id": 13, "image_id": 7, "category_id": 2, "bbox": [300, 300, 20, 10]},
            # Two parts, one instance.
            {"id": 14, "image_id": 7, "category_id": 1, "segmentation": [[400, 10, 430, 10, 430, 30, 400, 30], [500, 10, 520, 10, 520, 30, 500, 30]]},
            # A self-intersecting "bow tie": repaired, counted.
            {"id": 15, "image_id": 7, "category_id": 1, "segmentation": [[600, 100, 680, 180, 680, 100, 600, 180]]},
            {"id": 16, "image_id": 7, "category_id": 1, "segmentation": [[9000, 9000, 9010, 9000, 9010, 9010]]},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    report, rows, _ = _run([tmp_path / "instances.json"], tmp_path / "out", format="coco")
    by_id = {r["instance_id"]: r for r in rows}
    assert set(by_id) == {11, 12, 13, 14, 15}
    assert by_id[11]["area"] == 50 * 30 and by_id[11]["geometry_kind"] == "polygon"
    assert np.array_equal(decode(by_id[12]["rle"]), rle_mask.astype(bool))
    assert by_id[13]["geometry_kind"] == "box" and by_id[13]["area"] == 200
    assert by_id[14]["area"] == 30 * 20 + 20 * 20 and by_id[14]["mark"] is not None
    assert by_id[15]["area"] > 0
    assert report["summary"]["repairs"] == 1
    reasons = {s["reason"] for s in report["summary"]["skipped"]}
    assert "image listed in instances.json not found" in reasons
    assert "annotation lies outside the image" in reasons


def test_multipolygon_clipped_at_a_border_stays_one_instance(tmp_path: Path, data_dir: Path) -> None:
    from fixtures import write_geotiff

    write_geotiff(tmp_path / "img.tif", 1000, 900, crs=None)
    poly = [[[700, 100, 900, 100, 900, 200, 700, 200]], [[700, 300, 900, 300, 900, 400, 700, 400]]]
    coco = {
        "images": [{"id": 1, "file_name": "img.tif", "width": 1000, "height": 900}],
        "categories": [{"id": 1, "name": "harbor"}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "segmentation": poly[0] + poly[1]}],
    }
    (tmp_path / "c.json").write_text(json.dumps(coco))
    _, rows, tiles = _run([tmp_path / "c.json"], tmp_path / "out", format="coco")
    first_tile = [r for r in rows if r["tile_id"] == "img_0_800_0_800"]
    [piece] = first_tile  # cut at x=800: both parts visible, still one instance
    assert piece["truncated"] and piece["visible_fraction"] == pytest.approx(0.5)
    assert piece["area"] == 100 * 100 * 2
