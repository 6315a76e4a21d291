"""Bad input: a clear message naming the file and the problem, a counted skip, and the batch goes on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from fixtures import write_isaid
from PIL import Image

from pipeline.config import PrepareConfig
from pipeline.prepare import prepare


def _isaid_case(folder: Path, stem: str, size: tuple[int, int] = (100, 120), colour: tuple[int, int, int] = (0, 127, 255)) -> None:
    h, w = size
    image = np.full((h, w, 3), 90, np.uint8)
    ids = np.zeros((h, w), np.int64)
    ids[20:60, 30:90] = 7
    colours = np.zeros((h, w, 3), np.uint8)
    colours[ids > 0] = colour
    write_isaid(folder, stem, image, ids, colours)


def test_one_bad_image_never_stops_the_batch(tmp_path: Path, data_dir: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("P0003.png", "P0003_instance_id_RGB.png", "P0003_instance_color_RGB.png"):
        shutil.copy(data_dir / "isaid" / name, src / name)
    # Truncated image file.
    good = (data_dir / "isaid" / "P0005.png").read_bytes()
    (src / "TRUNC.png").write_bytes(good[: len(good) // 3])
    shutil.copy(data_dir / "isaid" / "P0005_instance_id_RGB.png", src / "TRUNC_instance_id_RGB.png")
    shutil.copy(data_dir / "isaid" / "P0005_instance_color_RGB.png", src / "TRUNC_instance_color_RGB.png")
    # Not an image at all.
    (src / "JUNK.png").write_bytes(b"not a png")
    shutil.copy(data_dir / "isaid" / "P0005_instance_id_RGB.png", src / "JUNK_instance_id_RGB.png")
    shutil.copy(data_dir / "isaid" / "P0005_instance_color_RGB.png", src / "JUNK_instance_color_RGB.png")
    # Mask size differs from the image.
    _isaid_case(src, "SIZE")
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(src / "SIZE_instance_id_RGB.png")
    # Unknown class colour.
    _isaid_case(src, "COLOUR", colour=(200, 10, 10))
    # Missing masks.
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(src / "LONELY.png")

    summary = prepare([src], PrepareConfig(format="isaid"), tmp_path / "out", progress=False)
    assert summary.images_ok == 1  # P0003
    assert summary.tiles == 4
    report = json.loads((tmp_path / "out" / "prepare_report.json").read_text())
    by_file = {Path(s["path"]).name: s["reason"] for s in report["summary"]["skipped"]}
    assert "TRUNC.png" in by_file or "TRUNC_instance_id_RGB.png" in by_file
    assert "cannot open as a raster" in by_file["JUNK.png"]
    assert "mask is 50×50 but the image is 120×100" in by_file["SIZE_instance_id_RGB.png"]
    assert "unknown iSAID class colour" in by_file["COLOUR_instance_color_RGB.png"]
    assert "RGB(200,10,10)" in by_file["COLOUR_instance_color_RGB.png"]
    assert "missing iSAID mask" in by_file["LONELY.png"]
    # Nothing lost: every image is either prepared or listed.
    assert summary.images == 6 and summary.images_failed == 5
    # A failed image leaves no tiles behind.
    assert not list((tmp_path / "out" / "tiles").glob("TRUNC_*")) and not list((tmp_path / "out" / "tiles").glob("SIZE_*"))


def test_empty_box_csv_rows_and_missing_images(tmp_path: Path, data_dir: Path) -> None:
    shutil.copy(data_dir / "neon" / "OSBS_029.tif", tmp_path)
    (tmp_path / "b.csv").write_text(
        "image_path,xmin,ymin,xmax,ymax,label\n"
        "OSBS_029.tif,10,10,40,40,Tree\n"
        "OSBS_029.tif,50,50,50,80,Tree\n"
        "OSBS_029.tif,x,1,2,3,Tree\n"
        "OSBS_029.tif,900,900,950,950,Tree\n"
        "nothere.tif,1,1,5,5,Tree\n"
    )
    summary = prepare([tmp_path / "b.csv"], PrepareConfig(format="boxes"), tmp_path / "out", progress=False)
    assert summary.instances == 1
    reasons = sorted(s["reason"] for s in summary.skipped)
    assert reasons == sorted([
        "empty box (max ≤ min)", "non-numeric box coordinates", "annotation lies outside the image",
        "image named in b.csv not found",
    ])
    paths = [s["path"] for s in summary.skipped]
    assert any(p.endswith("b.csv:3") for p in paths)  # file:line of the empty box


def test_missing_columns_and_unreadable_coco(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("path,x,y\n")
    s = prepare([tmp_path / "bad.csv"], PrepareConfig(format="boxes"), tmp_path / "o1", progress=False)
    assert "missing column(s)" in s.skipped[0]["reason"]
    (tmp_path / "bad.json").write_text("{not json")
    s = prepare([tmp_path / "bad.json"], PrepareConfig(format="coco"), tmp_path / "o2", progress=False)
    assert s.skipped[0]["path"].endswith("bad.json") and "not a readable COCO JSON" in s.skipped[0]["reason"]


def test_rerun_reuses_finished_images(tmp_path: Path, data_dir: Path) -> None:
    first = prepare([data_dir / "dota"], PrepareConfig(format="dota"), tmp_path, progress=False)
    second = prepare([data_dir / "dota"], PrepareConfig(format="dota"), tmp_path, progress=False)
    assert (first.images_ok, second.images_reused) == (1, 1)
    assert second.instances == first.instances == 64
    third = prepare([data_dir / "dota"], PrepareConfig(format="dota", min_area=500), tmp_path, progress=False)
    assert third.images_ok == 1 and third.instances < 64  # other settings: redone
