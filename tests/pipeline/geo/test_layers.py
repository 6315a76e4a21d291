"""GeoParquet layers: valid 1.1 metadata read back with geopandas, pixel-exact outlines, the cross-tile
merge key, files per CRS or reprojection, and bad input counted."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
import shapely.affinity
from pyproj import CRS
from rasterio.features import rasterize
from rasterio.transform import Affine
from shapely.geometry import Polygon, box

from pipeline.geo import GeoConfig, GeoError, write_geo_layers
from pipeline.geo.parquet import read_geo_metadata
from pipeline.geo.vectorize import clean
from pipeline.rle import decode, encode_full


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _burn(geom: shapely.Geometry, shape: tuple[int, int], transform: Affine) -> np.ndarray:
    """Pixel-centre rasterisation (the rule prepare uses for vector labels)."""
    return rasterize([(geom, 1)], out_shape=shape, transform=transform, fill=0, dtype="uint8").astype(bool)


def test_geoparquet_metadata_and_geopandas_read_back(tmp_path: Path, neon_described: Path) -> None:
    summary = write_geo_layers(neon_described, tmp_path)
    path = tmp_path / "geo" / "instances.parquet"
    assert summary.files == ["geo/instances.parquet", "geo/tiles.parquet"] and not list(tmp_path.rglob("*.tmp"))
    meta = read_geo_metadata(path)
    geo = meta["geo"]
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and set(column["geometry_types"]) <= {"Polygon", "MultiPolygon"}
    assert CRS.from_json_dict(column["crs"]).to_epsg() == 32617  # PROJJSON a second library understands
    assert column["covering"] == {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}
    frame = gpd.read_parquet(path)
    assert frame.crs.to_epsg() == 32617 and len(frame) == pq.read_metadata(neon_described / "instances.parquet").num_rows
    assert np.allclose(column["bbox"], frame.total_bounds)
    raw = pq.read_table(path, columns=["bbox"]).column("bbox").to_pylist()  # geopandas drops the covering
    bounds = np.array([[b["xmin"], b["ymin"], b["xmax"], b["ymax"]] for b in raw])
    assert np.allclose(bounds, frame.geometry.bounds.to_numpy())
    assert frame.geometry.is_valid.all() and (frame.geometry.area > 0).all()
    # the bbox covering works as a filter: a quarter of the scene gives the rows intersecting it
    x0, y0, x1, y1 = frame.total_bounds
    quarter = (x0, y0, (x0 + x1) / 2, (y0 + y1) / 2)
    sub = gpd.read_parquet(path, bbox=quarter)
    expected = frame[frame.geometry.intersects(box(*quarter))]
    assert 0 < len(sub) < len(frame) and set(sub["object_id"] + sub["tile_id"]) >= set(expected["object_id"] + expected["tile_id"])
    # area in m² from the GSD (0.1 m), object ids, phrase indices that point at the sample's [SEG] phrase
    assert np.allclose(frame["area_m2"], frame["area_px"] * 0.01)
    assert (frame["object_id"] == frame["image_id"] + "#" + frame["instance_id"].astype(str)).all()
    samples = {r["tile_id"]: r for r in pq.read_table(neon_described / "samples.parquet").to_pylist()}
    grounded = frame[frame["phrase_index"].notna()]
    assert len(grounded) > 0
    for row in grounded.itertuples():
        phrase = samples[row.tile_id]["phrases"][int(row.phrase_index)]
        assert row.instance_id in phrase["instance_ids"] and row.phrase == phrase["text"]
    tiles = gpd.read_parquet(tmp_path / "geo" / "tiles.parquet")
    assert len(tiles) == 4 and tiles.crs.to_epsg() == 32617
    assert tiles.geometry.union_all().area == pytest.approx(40.0 * 40.0)  # 400 px × 0.1 m, no overlap
    assert tiles.set_index("tile_id")["n_instances"].to_dict() == frame.groupby("tile_id").size().to_dict()


def test_outlines_are_pixel_exact(tmp_path: Path, neon_described: Path) -> None:
    write_geo_layers(neon_described, tmp_path)
    frame = gpd.read_parquet(tmp_path / "geo" / "instances.parquet").set_index(["tile_id", "instance_id"])
    tiles = {t["tile_id"]: t for t in pq.read_table(neon_described / "tiles.parquet").to_pylist()}
    for r in pq.read_table(neon_described / "instances.parquet").to_pylist():
        t = tiles[r["tile_id"]]
        geom = frame.loc[(r["tile_id"], r["instance_id"]), "geometry"]
        burnt = _burn(geom, (t["height"], t["width"]), Affine(*t["transform"]))
        assert np.array_equal(burnt, decode(r["rle"])), r["tile_id"]


def _neon_source(data_dir: Path) -> list[dict[str, str]]:
    with (data_dir / "neon" / "OSBS_029.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _crossing(frame: gpd.GeoDataFrame) -> list[str]:
    """Objects no tile holds whole: more than one piece and every piece truncated."""
    g = frame.groupby("object_id")
    return [k for k, part in g if len(part) > 1 and part["truncated"].all()]


def test_merging_pieces_gives_back_the_source_polygon_georeferenced(
    tmp_path: Path, neon_described: Path, data_dir: Path
) -> None:
    write_geo_layers(neon_described, tmp_path)
    frame = gpd.read_parquet(tmp_path / "geo" / "instances.parquet")
    crossing = _crossing(frame)
    assert len(crossing) >= 3, "the 200 px grid cuts several trees"
    merged = frame.dissolve(by="object_id")  # the documented merge: union per object_id
    rows = _neon_source(data_dir)
    tile0 = pq.read_table(neon_described / "tiles.parquet").to_pylist()[0]
    image_transform = Affine(*tile0["transform"])  # tile at x0 = y0 = 0: the image's own transform
    for key in crossing:
        n = int(key.split("#")[1])
        b = rows[n - 1]
        corners = box(float(b["xmin"]), float(b["ymin"]), float(b["xmax"]), float(b["ymax"])).exterior.coords
        source = shapely.affinity.affine_transform(Polygon(corners), image_transform.to_shapely())
        iou = _iou(_burn(merged.loc[key, "geometry"], (400, 400), image_transform),
                   _burn(source, (400, 400), image_transform))
        assert iou >= 0.9, (key, iou)


def test_merging_pieces_gives_back_the_source_polygon_in_pixels(
    tmp_path: Path, dota_described: Path, data_dir: Path
) -> None:
    write_geo_layers(dota_described, tmp_path)
    frame = gpd.read_parquet(tmp_path / "geo" / "instances.parquet")
    crossing = _crossing(frame)
    assert len(crossing) >= 3
    merged = frame.dissolve(by="object_id")
    lines = (data_dir / "dota" / "P1888.txt").read_text().splitlines()
    identity = Affine.identity()
    for key in crossing:
        ref = frame.loc[frame["object_id"] == key, "source_ref"].iloc[0]
        values = lines[int(ref.rsplit(":", 1)[1]) - 1].split()
        quad = Polygon(np.asarray([float(v) for v in values[:8]]).reshape(4, 2))
        iou = _iou(_burn(merged.loc[key, "geometry"], (557, 712), identity), _burn(quad, (557, 712), identity))
        assert iou >= 0.9, (key, iou)


def test_sources_without_crs_stay_in_pixels_and_say_so(tmp_path: Path, dota_described: Path) -> None:
    summary = write_geo_layers(dota_described, tmp_path)
    assert [layer.crs for layer in summary.layers] == [None]
    meta = read_geo_metadata(tmp_path / "geo" / "instances.parquet")
    assert "crs" in meta["geo"]["columns"]["geometry"] and meta["geo"]["columns"]["geometry"]["crs"] is None
    assert meta["geopixeld"]["coordinates"] == "pixel" and "no CRS" in meta["geopixeld"]["pixel_coordinates"]
    frame = gpd.read_parquet(tmp_path / "geo" / "instances.parquet")
    assert frame.crs is None
    x0, y0, x1, y1 = frame.total_bounds
    assert x0 >= 0 and y0 >= 0 and x1 <= 712 and y1 <= 557  # source-image pixels
    assert np.allclose(frame["area_m2"], frame["area_px"] * 0.266170468393**2)  # GSD from the DOTA header


def test_mixed_crs_one_file_per_crs(tmp_path: Path, mixed_prepared: Path) -> None:
    summary = write_geo_layers(mixed_prepared, tmp_path)
    assert [(layer.slug, layer.crs) for layer in summary.layers] == [
        ("epsg-32616", "EPSG:32616"), ("epsg-32617", "EPSG:32617"), ("pixel", None)]
    total = 0
    for layer in summary.layers:
        frame = gpd.read_parquet(tmp_path / layer.instances)
        tiles = gpd.read_parquet(tmp_path / layer.tiles)
        epsg = None if layer.crs is None else int(layer.crs.split(":")[1])
        assert (frame.crs.to_epsg() if frame.crs else None) == epsg == (tiles.crs.to_epsg() if tiles.crs else None)
        assert frame["image_id"].nunique() == 1 and len(tiles) == 4
        total += len(frame)
    assert total == pq.read_metadata(mixed_prepared / "instances.parquet").num_rows
    assert summary.dropped == {} and summary.read_modes["instances"] == "single-pass"


@pytest.mark.filterwarnings("ignore:Geometry is in a geographic CRS")
def test_mixed_crs_reprojected_with_geo_crs(tmp_path: Path, mixed_prepared: Path) -> None:
    native = write_geo_layers(mixed_prepared, tmp_path / "native")
    summary = write_geo_layers(mixed_prepared, tmp_path / "wgs84", GeoConfig(target_crs="EPSG:4326"))
    assert [(layer.slug, layer.source_crs) for layer in summary.layers] == [
        ("epsg-4326", ["EPSG:32616", "EPSG:32617"]), ("pixel", [])]  # no CRS: cannot be reprojected
    frame = gpd.read_parquet(tmp_path / "wgs84" / summary.layers[0].instances)
    assert frame.crs.to_epsg() == 4326 and set(frame["source_crs"]) == {"EPSG:32616", "EPSG:32617"}
    assert len(frame) == sum(layer.instance_rows for layer in native.layers if layer.crs)
    # same geometries as pyproj reprojecting the native layers (rasterio/GDAL here, pyproj there)
    for layer in native.layers[:2]:
        ref = gpd.read_parquet(tmp_path / "native" / layer.instances).to_crs(4326).set_index(["tile_id", "instance_id"])
        ours = frame.set_index(["tile_id", "instance_id"]).loc[ref.index]
        diff = ours.geometry.symmetric_difference(ref.geometry, align=False).area / ref.geometry.area
        assert diff.max() < 1e-6  # (a ratio of areas, so degrees² are fine)
        # the same pixel grid in UTM 16N lies 6° west of UTM 17N
        west = ours.geometry.bounds["minx"].between(-90, -86).all()
        assert west == (layer.crs == "EPSG:32616")


def test_single_crs_with_target_writes_plain_names(tmp_path: Path, neon_described: Path) -> None:
    summary = write_geo_layers(neon_described, tmp_path, GeoConfig(target_crs="EPSG:3857"))
    assert summary.files == ["geo/instances.parquet", "geo/tiles.parquet"]
    assert gpd.read_parquet(tmp_path / "geo" / "instances.parquet").crs.to_epsg() == 3857


def test_invalid_target_crs_is_an_error_naming_it(tmp_path: Path, neon_described: Path) -> None:
    with pytest.raises(GeoError, match="EPSG:999999"):
        write_geo_layers(neon_described, tmp_path, GeoConfig(target_crs="EPSG:999999"))
    assert not (tmp_path / "geo").exists() or not list((tmp_path / "geo").iterdir())


def _copy_tables(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("tiles.parquet", "instances.parquet", "samples.parquet"):
        shutil.copy(src / name, dst / name)
    return dst


def test_degenerate_and_unknown_rows_are_dropped_and_counted(tmp_path: Path, neon_described: Path) -> None:
    data = _copy_tables(neon_described, tmp_path / "data")
    table = pq.read_table(data / "instances.parquet")
    rows = table.to_pylist()
    first = rows[0]
    empty = {**first, "instance_id": 9001, "rle": encode_full(np.zeros((200, 200), bool))}  # clipped to nothing
    stray = {**first, "instance_id": 9002, "tile_id": "OSBS_029_9_9_9_9"}  # a tile that does not exist
    alien = {**first, "instance_id": 9003, "image_id": "nowhere", "tile_id": "nowhere_0_1_0_1"}
    pq.write_table(pa.Table.from_pylist(rows[:5] + [empty, stray] + rows[5:] + [alien], schema=table.schema),
                   data / "instances.parquet")
    assert decode(empty["rle"]).sum() == 0
    summary = write_geo_layers(data, tmp_path / "out")
    assert summary.dropped == {"empty_mask": 1, "unknown_image": 1, "unknown_tile": 1}
    assert summary.layers[0].instance_rows == len(rows)
    meta = read_geo_metadata(tmp_path / "out" / "geo" / "instances.parquet")["geopixeld"]
    assert meta["dropped"] == summary.dropped


def test_clean_drops_collapsed_and_repairs_self_intersecting() -> None:
    collapsed = Polygon([(0, 0), (1, 1), (2, 2), (0, 0)])  # zero area after clipping, e.g. a sliver
    assert clean(collapsed) == (None, "degenerate")
    bowtie = Polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])
    geom, note = clean(bowtie)
    assert note == "repaired" and geom is not None and geom.is_valid and geom.area == pytest.approx(2.0)
    assert clean(None) == (None, "empty")


def test_rows_out_of_image_order_are_read_per_image(tmp_path: Path, mixed_prepared: Path) -> None:
    data = _copy_tables_no_samples(mixed_prepared, tmp_path / "data")
    table = pq.read_table(data / "instances.parquet")
    pq.write_table(table.take(np.arange(table.num_rows)[::-1]), data / "instances.parquet")
    ours = write_geo_layers(data, tmp_path / "shuffled")
    ref = write_geo_layers(mixed_prepared, tmp_path / "ref")
    assert ours.read_modes["instances"] == "per-image" and ref.read_modes["instances"] == "single-pass"
    for a, b in zip(ours.layers, ref.layers, strict=True):
        x = gpd.read_parquet(tmp_path / "shuffled" / a.instances).sort_values(["tile_id", "instance_id"], ignore_index=True)
        y = gpd.read_parquet(tmp_path / "ref" / b.instances).sort_values(["tile_id", "instance_id"], ignore_index=True)
        assert len(x) == len(y) and x.geometry.geom_equals(y.geometry).all()


def _copy_tables_no_samples(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("tiles.parquet", "instances.parquet"):
        shutil.copy(src / name, dst / name)
    return dst


def test_rejected_tiles_are_left_out_and_fixed_phrases_used(tmp_path: Path, neon_described: Path) -> None:
    samples = pq.read_table(neon_described / "samples.parquet").to_pylist()
    rejected, fixed = samples[0]["tile_id"], samples[1]["tile_id"]
    phrases = [{**samples[1]["phrases"][0], "text": "a reviewed tree"}]
    review = {rejected: {"review_status": "rejected"}, fixed: {"review_status": "fixed", "phrases": phrases}}
    summary = write_geo_layers(neon_described, tmp_path, review=review, split_of={"OSBS_029": "val"})
    frame = gpd.read_parquet(tmp_path / "geo" / "instances.parquet")
    n_rejected = sum(1 for r in pq.read_table(neon_described / "instances.parquet").to_pylist() if r["tile_id"] == rejected)
    assert rejected not in set(frame["tile_id"]) and summary.dropped == {
        "rejected_tile": 1, "instances_on_left_out_tiles": n_rejected}
    on_fixed = frame[frame["tile_id"] == fixed]
    assert set(on_fixed["phrase"].dropna()) == {"a reviewed tree"} and (frame["split"] == "val").all()
    assert json.loads(json.dumps(summary.to_dict()))["layers"][0]["instance_rows"] == len(frame)
