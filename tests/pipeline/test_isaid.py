"""iSAID ingest on the real samples: instance sets against the masks, classes against the colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import rasterio

from pipeline.ingest.isaid import ISAID_CLASSES
from pipeline.rle import decode


def _codes(path: Path, window: tuple[int, int, int, int]) -> np.ndarray:
    y0, y1, x0, x1 = window
    with rasterio.open(path) as ds:
        a = ds.read(window=((y0, y1), (x0, x1))).astype(np.int64)
    return a[0] + 256 * a[1] + 65536 * a[2]


def test_tiles_match_geopixeld_names(isaid_prepared: Path) -> None:
    tiles = pq.read_table(isaid_prepared / "tiles.parquet").to_pylist()
    ids = [t["tile_id"] for t in tiles]
    assert "P0003_0_800_347_1147" in ids
    assert len(ids) == 8 and len(set(ids)) == 8
    for t in tiles:
        assert (t["x1"] - t["x0"], t["y1"] - t["y0"]) == (t["width"], t["height"]) == (800, 800)
        assert (isaid_prepared / t["tile_path"]).exists() and (isaid_prepared / t["marks_path"]).exists()
        assert t["crs"] is None and t["gsd"] is None


def test_instance_masks_equal_the_id_mask(isaid_prepared: Path, data_dir: Path) -> None:
    tiles = {t["tile_id"]: t for t in pq.read_table(isaid_prepared / "tiles.parquet").to_pylist()}
    rows = pq.read_table(isaid_prepared / "instances.parquet").to_pylist()
    by_tile: dict[str, list[dict]] = {}
    for r in rows:
        by_tile.setdefault(r["tile_id"], []).append(r)
    colour_of = {name: rgb for rgb, name in ISAID_CLASSES.items()}
    checked = 0
    for tile_id, t in tiles.items():
        stem = t["image_id"]
        window = (t["y0"], t["y1"], t["x0"], t["x1"])
        ids = _codes(data_dir / "isaid" / f"{stem}_instance_id_RGB.png", window)
        cols = _codes(data_dir / "isaid" / f"{stem}_instance_color_RGB.png", window)
        present = {int(v) for v in np.unique(ids) if v}
        got = {r["instance_id"]: r for r in by_tile.get(tile_id, [])}
        # Every instance id present in the window is an instance row unless it is under 10 px there.
        small = {i for i in present if (ids == i).sum() < 10}
        assert set(got) == present - small
        for inst_id, r in got.items():
            mask = decode(r["rle"])
            assert np.array_equal(mask, ids == inst_id)
            assert r["area"] == mask.sum()
            rgb = colour_of[r["category"]]
            expected_code = rgb[0] + 256 * rgb[1] + 65536 * rgb[2]
            values, counts = np.unique(cols[mask], return_counts=True)
            assert values[np.argmax(counts)] == expected_code
            checked += 1
    assert checked > 300


def test_visible_fraction_and_truncation(isaid_prepared: Path, data_dir: Path) -> None:
    rows = pq.read_table(isaid_prepared / "instances.parquet").to_pylist()
    whole = _codes(data_dir / "isaid" / "P0003_instance_id_RGB.png", (0, 1023, 0, 1147))
    for r in rows:
        if r["image_id"] != "P0003":
            continue
        total = int((whole == r["instance_id"]).sum())
        assert abs(r["visible_fraction"] - r["area"] / total) < 1e-6
        if r["visible_fraction"] < 1.0:
            assert r["truncated"]


def test_marks_lie_inside_their_masks(isaid_prepared: Path) -> None:
    rows = pq.read_table(isaid_prepared / "instances.parquet").to_pylist()
    marked = [r for r in rows if r["mark"] is not None]
    assert marked
    for r in marked:
        mask = decode(r["rle"])
        assert mask[int(r["mark_y"]), int(r["mark_x"])], r["tile_id"]
    # Numbers run 1..n per tile, small vehicles are never marked (cluster tier instead).
    per_tile: dict[str, list[int]] = {}
    for r in marked:
        per_tile.setdefault(r["tile_id"], []).append(r["mark"])
    for numbers in per_tile.values():
        assert sorted(numbers) == list(range(1, len(numbers) + 1))
    assert all(r["category"] != "Small_Vehicle" for r in marked)


def test_small_vehicles_are_all_in_clusters(isaid_prepared: Path) -> None:
    rows = pq.read_table(isaid_prepared / "instances.parquet").to_pylist()
    clusters = pq.read_table(isaid_prepared / "clusters.parquet").to_pylist()
    members = {(c["tile_id"], i) for c in clusters for i in c["instance_ids"]}
    vehicles = [r for r in rows if r["category"] == "Small_Vehicle"]
    assert vehicles
    assert {(r["tile_id"], r["instance_id"]) for r in vehicles} == members
    for c in clusters:
        assert c["count"] == len(c["instance_ids"])
        assert c["category_name"] == "small vehicle"
