"""Export round trips: datasets, pycocotools, GeoPixel's polygon filling, GLaMM spans; splits; review."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from pipeline.describe import DescribeConfig, describe
from pipeline.export import export
from pipeline.export.hf import ShardWriter, row_bytes
from pipeline.export.polygons import fill_polygons, iou
from pipeline.export.splits import assign_splits
from pipeline.rle import decode


def test_hf_datasets_round_trip(tmp_path: Path, described: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "exp"
    summary = export(described / "isaid", out, ratios=(0.5, 0.5, 0.0))
    assert sum(summary.splits.values()) == 8
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf_cache"))
    samples = {r["tile_id"]: r for r in pq.read_table(described / "isaid" / "samples.parquet").to_pylist()}
    total = 0
    for split in ds:
        for row in ds[split]:
            total += 1
            s = samples[row["tile_id"]]
            assert row["gcg_caption"] == s["gcg_caption"] and row["caption"] == s["caption"]
            assert isinstance(row["image"], Image.Image) and row["image"].size == (row["width"], row["height"])
            assert np.array_equal(np.asarray(row["image"]), np.asarray(Image.open(described / "isaid" / s["tile_path"])))
            assert len(row["masks"]) == row["gcg_caption"].count("[SEG]")
            assert row["review_status"] == "unreviewed" and row["split"] == split
    assert total == 8


def test_coco_files_load_with_pycocotools(tmp_path: Path, described: Path) -> None:
    from pycocotools.coco import COCO

    out = tmp_path / "exp"
    export(described / "isaid", out, ratios=(1, 0, 0))
    inst = COCO(str(out / "coco" / "instances_train.json"))
    caps = COCO(str(out / "coco" / "captions_train.json"))
    samples = {r["tile_id"]: r for r in pq.read_table(described / "isaid" / "samples.parquet").to_pylist()}
    assert len(inst.getImgIds()) == len(caps.getImgIds()) == 8
    for img in inst.loadImgs(inst.getImgIds()):
        s = samples[img["tile_id"]]
        anns = sorted(inst.loadAnns(inst.getAnnIds(imgIds=img["id"])), key=lambda a: a["seg_index"])
        assert [a["phrase"] for a in anns] == [p["text"] for p in s["phrases"]]
        for a, m in zip(anns, s["masks"], strict=True):
            assert np.array_equal(inst.annToMask(a).astype(bool), decode(m))
            assert a["area"] == decode(m).sum()
        [cap] = caps.loadAnns(caps.getAnnIds(imgIds=img["id"]))
        assert cap["caption"] == s["caption"] and cap["labels"] == [p["text"] for p in s["phrases"]]
    assert {c["name"] for c in inst.loadCats(inst.getCatIds())} >= {"large vehicle", "small vehicle"}


def _pil_fill(polygons: list[list[list[int]]], h: int, w: int) -> np.ndarray:
    """A second, independent filling rule (PIL): inclusive of the outline through the points."""
    img = Image.new("1", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for poly in polygons:
        pts = [tuple(p) for p in poly]
        if len(pts) >= 3:
            draw.polygon(pts, fill=1, outline=1)
        else:
            draw.line(pts + pts[:1], fill=1)
    return np.asarray(img, dtype=bool)


def test_geopixel_format_reproduces_the_masks(tmp_path: Path, described: Path) -> None:
    out = tmp_path / "exp"
    export(described / "isaid", out, ratios=(1, 0, 0), formats=["geopixel"])
    entries = json.loads((out / "geopixel" / "data" / "GeoPixelD" / "GeoPixelD_train.json").read_text())
    samples = {r["tile_id"]: r for r in pq.read_table(described / "isaid" / "samples.parquet").to_pylist()}
    official = json.loads((Path(__file__).parents[2] / "data" / "geopixeld" / "GeoPixelD.json").read_text())[0]
    assert set(entries[0]) == set(official)  # the same keys as the official sample
    checked = 0
    for e in entries:
        per_tile = json.loads((out / "geopixel" / e["polygons"]).read_text())
        assert set(per_tile) == {"id", "img", "gcg_description", "polygons"}
        assert (out / "geopixel" / e["image"]).exists()
        caption = e["conversations"][1]["value"]
        assert len(per_tile["polygons"]) == caption.count("[SEG]")  # GeoPixel's loader assertion
        s = samples[Path(e["polygons"]).stem]  # paths: data/GeoPixelD/{split}/{tile_id}.json
        for polys, m in zip(per_tile["polygons"], s["masks"], strict=True):
            truth = decode(m)
            assert all(isinstance(v, int) for poly in polys for pt in poly for v in pt)
            assert iou(fill_polygons(polys, s["height"], s["width"]), truth) >= 0.98
            assert iou(_pil_fill(polys, s["height"], s["width"]), truth) >= 0.98
            checked += 1
    assert checked == sum(len(s["masks"]) for s in samples.values()) > 0  # every mask of every sample


def test_glamm_spans_and_unique_phrases(tmp_path: Path, described: Path) -> None:
    work = tmp_path / "d"
    shutil.copytree(described / "isaid", work)
    describe(work, DescribeConfig(phrase_naming="noun"), progress=False)
    export(work, tmp_path / "exp", ratios=(1, 0, 0), formats=["glamm"])
    data = json.loads((tmp_path / "exp" / "glamm" / "gcg_train.json").read_text())
    assert len(data) == 8
    for item in data:
        for label, g in item["groundings"].items():
            a, b = g["token_positives"]
            base = label.split(" (")[0]
            assert item["caption"][a:b] == base
            assert len(g["rle_masks"]) == 1
        assert len(item["groundings"]) == len({k for k in item["groundings"]})
    assert any(" (2)" in k for item in data for k in item["groundings"])  # duplicates were renamed


def test_splits_are_by_image_and_deterministic() -> None:
    images = {f"img{i}": {"crs": None, "center": None} for i in range(200)}
    a = assign_splits(images, (0.8, 0.1, 0.1), seed=3)
    b = assign_splits(images, (0.8, 0.1, 0.1), seed=3)
    assert a == b
    counts = {s: sum(1 for v in a.values() if v == s) for s in ("train", "val", "test")}
    assert 140 < counts["train"] < 180 and counts["val"] > 5 and counts["test"] > 5
    more = assign_splits({**images, "new": {"crs": None, "center": None}}, (0.8, 0.1, 0.1), seed=3)
    assert all(more[k] == v for k, v in a.items())  # adding an image moves no other
    geo = {f"g{i}": {"crs": "EPSG:32617", "center": (400000 + 300 * i, 3300000.0)} for i in range(40)}
    blocks = assign_splits(geo, (0.5, 0.5, 0.0), by="block", block_size=3000)
    for i in range(40):
        for j in range(40):
            if (400000 + 300 * i) // 3000 == (400000 + 300 * j) // 3000:
                assert blocks[f"g{i}"] == blocks[f"g{j}"]
    explicit = assign_splits(images, explicit={"img1": "test"})
    assert explicit["img1"] == "test"
    with pytest.raises(ValueError, match="block-size"):
        assign_splits(geo, by="block")


def test_tiles_of_one_image_share_a_split(tmp_path: Path, described: Path) -> None:
    export(described / "isaid", tmp_path / "exp", ratios=(0.5, 0.5, 0.0), seed=11)
    table = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "exp" / "data").glob("*.parquet"))])
    pairs = {(r["image_id"], r["split"]) for r in table.select(["image_id", "split"]).to_pylist()}
    assert len(pairs) == len({p[0] for p in pairs}) == 2


def test_review_decisions_flow_into_rows(tmp_path: Path, described: Path) -> None:
    samples = pq.read_table(described / "isaid" / "samples.parquet").to_pylist()
    rejected, fixed, accepted = samples[0]["tile_id"], samples[1]["tile_id"], samples[2]["tile_id"]
    fixed_caption = "A corrected description of the <p> lot </p> [SEG] ."
    decisions = [
        {"tile_id": rejected, "review_status": "rejected", "reviewer": "ann", "gcg_caption": None, "caption": None,
         "phrases": None, "masks": None},
        {"tile_id": fixed, "review_status": "fixed", "reviewer": "bob", "gcg_caption": fixed_caption,
         "caption": "A corrected description of the lot .",
         "phrases": [{"text": "lot", "start": 31, "end": 34, "instance_ids": [1], "category": "large vehicle", "kind": "instance"}],
         "masks": [samples[1]["masks"][0]]},
        {"tile_id": accepted, "review_status": "accepted", "reviewer": "ann", "gcg_caption": None, "caption": None,
         "phrases": None, "masks": None},
    ]
    pq.write_table(pa.Table.from_pylist(decisions), tmp_path / "decisions.parquet")
    summary = export(described / "isaid", tmp_path / "exp", ratios=(1, 0, 0), decisions=tmp_path / "decisions.parquet")
    assert summary.rejected == 1 and summary.review == {"rejected": 1, "fixed": 1, "accepted": 1, "unreviewed": 5}
    rows = {r["tile_id"]: r for r in pq.read_table(tmp_path / "exp" / "data" / "train-00000-of-00001.parquet").to_pylist()}
    assert rejected not in rows and len(rows) == 7
    assert rows[fixed]["gcg_caption"] == fixed_caption and rows[fixed]["reviewer"] == "bob"
    assert len(rows[fixed]["masks"]) == 1 and rows[accepted]["review_status"] == "accepted"
    coco = json.loads((tmp_path / "exp" / "coco" / "captions_train.json").read_text())
    assert rejected not in {i["tile_id"] for i in coco["images"]}


def _row(tile_id: str, png: bytes) -> dict[str, object]:
    """One export row (GCG_SCHEMA) with opaque image bytes and no masks."""
    return {"id": tile_id, "tile_id": tile_id, "image": {"bytes": png, "path": f"{tile_id}.png"}, "width": 8,
            "height": 8, "caption": "bare ground", "gcg_caption": "bare ground", "phrases": [], "masks": [],
            "categories": [], "crs": None, "transform": None, "gsd": None, "source_image": "S", "image_id": "S",
            "split": "train", "review_status": "unreviewed", "reviewer": None, "decided_at": None, "flags": [],
            "max_severity": None, "lmm_model": "m", "prompt_version": "p"}


def test_shards_roll_over_at_the_target_size_in_row_groups(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [_row(f"T{i:03d}", rng.bytes(2000)) for i in range(40)]
    size = row_bytes(rows[0])
    writer = ShardWriter("train", tmp_path / "data", target_bytes=10 * size, row_group_rows=4)
    for r in rows:
        writer.add(r)
    paths = writer.close()
    n = len(paths)
    assert 3 <= n <= 6 and [p.name for p in paths] == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert not list((tmp_path / "data").glob("*.partial"))
    ids = [i for p in paths for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]
    assert ids == [r["id"] for r in rows]  # every row once, in order
    for p in paths:
        meta = pq.ParquetFile(p).metadata
        assert all(meta.row_group(g).num_rows <= 4 for g in range(meta.num_row_groups))


def test_georeferenced_export_metadata_and_errors(tmp_path: Path, described: Path) -> None:
    export(described / "neon", tmp_path / "exp", ratios=(1, 0, 0))
    info = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert info["crs"] == ["EPSG:32617"] and info["gsd"] == [0.1]
    lon0, lat0, lon1, lat1 = info["bbox_wgs84"]
    assert -82.1 < lon0 < lon1 < -81.9 and 29.6 < lat0 < lat1 < 29.8  # Florida (OSBS)
    with pytest.raises(ValueError, match="unknown format"):
        export(described / "neon", tmp_path / "x", formats=["tiff"])
    with pytest.raises(FileNotFoundError, match="describe"):
        export(tmp_path, tmp_path / "y")


def test_export_publishes_as_a_release_and_loads_back(tmp_path: Path, described: Path) -> None:
    from pipeline.release import load, publish

    export(described / "neon", tmp_path / "exp", ratios=(1, 0, 0), name="neon-trees")
    result = publish(tmp_path / "exp", "neon-trees", "1.0.0", tmp_path / "store")
    assert result.version == "1.0.0"
    splits = load("neon-trees", "1.0.0", store=str(tmp_path / "store"), cache_dir=tmp_path / "cache")
    table = splits["train"].to_table(columns=["id", "gcg_caption", "review_status"])
    assert table.num_rows == 1 and table.column("review_status").to_pylist() == ["unreviewed"]
