"""Each consumer's own parsing rules, reproduced with our code, run on our exports as their users run them.

* GeoPixel (its ``train.py`` + ``data_mix.py``): run from the GeoPixel repository root with ``data.txt``
  (``<json> <k>``, ``--given_num True`` → ``int(float(k) * 1000)`` samples); ``image`` / ``polygons`` paths
  resolved from the working directory; the ``polygons`` key; each ``[SEG]`` filled from its polygon list with
  ``cv2.fillPoly``; ``len(masks) == count("[SEG]")`` asserted; a sample needs at least one ``[SEG]``.
* GLaMM's GCG training loader (``GranDf_gcg_ds.py``): ``caption.strip('"').strip()``, ``token_positives``
  spans into it, ``<p> … </p> [SEG]`` inserted from the last span backwards, masks sorted by span start,
  images at ``image_folder/file_name``.
* GLaMM's GCG evaluator (``eval/gcg/evaluate.py``): ``{split}_gcg_coco_mask_gt.json`` /
  ``{split}_gcg_coco_caption_gt.json``, prediction files ``{gt id}.json`` (its ``infer.py`` names them by
  image file stem), ``COCOeval`` with ``catIds = [1]``, Recall pairing ``labels[k]`` with the image's k-th
  annotation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.export import export
from pipeline.gcg import parse
from pipeline.rle import decode

QUOTED, NO_SEG, ERROR_FLAG, WARNING_FLAG = 1, 0, 2, 3  # rows of the edited samples (see ``edited``)


@pytest.fixture(scope="module")
def edited(described: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The described iSAID folder with four samples edited into the cases consumers trip on: no grounded
    phrase, a caption in quote marks, an error flag and a warning flag."""
    work = tmp_path_factory.mktemp("consumers") / "isaid"
    shutil.copytree(described / "isaid", work)
    table = pq.read_table(work / "samples.parquet")
    rows = table.to_pylist()
    r = rows[NO_SEG]
    r.update(gcg_caption="An aerial view of a harbor with calm water.", caption="An aerial view of a harbor with calm water.",
             phrases=[], masks=[])
    r = rows[QUOTED]
    r["gcg_caption"], r["caption"] = f'"{r["gcg_caption"]}"', f'"{r["caption"]}"'
    r["phrases"] = [{**p, "start": p["start"] + 1, "end": p["end"] + 1} for p in r["phrases"]]
    rows[ERROR_FLAG]["flags"] = [*rows[ERROR_FLAG]["flags"], {"code": "refusal", "severity": "error", "detail": "x"}]
    rows[ERROR_FLAG]["max_severity"] = "error"
    rows[WARNING_FLAG]["flags"] = [{"code": "mostly_cut_off", "severity": "warning", "detail": "y"}]
    rows[WARNING_FLAG]["max_severity"] = "warning"
    for k in (ERROR_FLAG, WARNING_FLAG):  # no other flags may decide these two
        rows[k]["flags"] = [f for f in rows[k]["flags"] if f["code"] in ("refusal", "mostly_cut_off")]
    for k, row in enumerate(rows):
        if k not in (ERROR_FLAG, WARNING_FLAG):
            row["flags"], row["max_severity"] = [], None
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), work / "samples.parquet")
    ids = [row["tile_id"] for row in rows]
    return {"data": work, "rows": {row["tile_id"]: row for row in rows}, "ids": ids}


@pytest.fixture(scope="module")
def train_export(edited: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("exp_train") / "export"
    summary = export(edited["data"], out, formats=["gcg-parquet", "coco", "geopixel", "glamm"], ratios=(1, 0, 0))
    return out, summary


@pytest.fixture(scope="module")
def test_export(edited: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("exp_test") / "export"
    summary = export(edited["data"], out, formats=["gcg-parquet", "coco", "glamm"], ratios=(0, 0, 1))
    return out, summary


def _parquet_rows(out: Path, split: str) -> dict[str, dict[str, Any]]:
    return {r["tile_id"]: r for r in pq.read_table(sorted((out / "data").glob(f"{split}-*.parquet"))).to_pylist()}


# ------------------------------------------------------------------------------------------------ GeoPixel


def _conv2text(conversations: list[dict[str, str]]) -> str:
    """GeoPixel's ``conv2text``: InternLM-XComposer turns, each value stripped."""
    out = ""
    for turn in conversations:
        role = "user" if turn["from"].lower() in ("human", "user") else "assistant"
        out += f"[UNUSED_TOKEN_146]{role}\n{turn['value'].strip()}[UNUSED_TOKEN_145]\n"
    return out + "</s>"


def _geopixel_load(data_txt: str = "data.txt") -> list[dict[str, Any]]:
    """GeoPixel's data path, from the current directory: data.txt → JSON lists → per-sample image and masks."""
    samples = []
    for line in Path(data_txt).read_text().splitlines():
        parts = line.strip().split(" ")
        assert len(parts) == 2  # --given_num True asserts it
        with open(parts[0]) as fh:  # noqa: PTH123 - as GeoPixel opens it: relative to the working directory
            entries = json.load(fh)
        num = int(float(parts[1]) * 1000)
        assert num == len(entries)  # no sampling: every exported conversation, once
        assert "image" in entries[0] and ("polygons" in entries[0] or "segmentation" in entries[0])
        for e in entries:
            text = _conv2text(e["conversations"])
            width, height = Image.open(e["image"]).convert("RGB").size
            with open(e["polygons"]) as fh:  # noqa: PTH123
                data = json.load(fh)
            masks = []
            for polygon in data["polygons"]:
                mask = np.zeros((height, width), dtype=np.uint8)
                for poly in polygon:
                    assert len(poly) > 0 and len(poly[0]) == 2, "invalid multiple polygons"
                    cv2.fillPoly(mask, np.array([poly], dtype=np.int32), color=1)  # type: ignore[call-overload]
                masks.append(mask)
            assert len(masks) == text.count("[SEG]"), e["image"]  # GeoPixel's loader assertion
            assert text.count("[SEG]") >= 1  # GeoPixel's training step needs a mask
            samples.append({"entry": e, "masks": masks, "size": (width, height)})
    return samples


def test_geopixel_trains_from_its_repository_root(train_export: tuple[Path, Any], edited: dict[str, Any],
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, summary = train_export
    checkout = tmp_path / "GeoPixel"
    (checkout / "model").mkdir(parents=True)
    (checkout / "data.txt").write_text("data/isaid.json 0.01\n")  # the repository's example list
    shutil.copytree(out / "geopixel", checkout, dirs_exist_ok=True)  # "copy EXPORT/geopixel/ there"
    monkeypatch.chdir(checkout)
    loaded = _geopixel_load()
    rows = _parquet_rows(out, "train")
    no_seg = edited["ids"][NO_SEG]
    assert len(loaded) == len(rows) - 1 and summary.extra["geopixel_left_out"] == {"no [SEG]": 1}
    masks = 0
    for s in loaded:
        e = s["entry"]
        assert e["image"].startswith("data/GeoPixelD/train/") and e["polygons"].startswith("data/GeoPixelD/train/")
        tile = Path(e["image"]).stem
        assert tile != no_seg
        row = rows[tile]
        assert s["size"] == (row["width"], row["height"])
        assert e["conversations"][1]["value"] == row["gcg_caption"]
        for mask, rle in zip(s["masks"], row["masks"], strict=True):
            truth = decode(rle)
            inter, union = np.logical_and(mask, truth).sum(), np.logical_or(mask, truth).sum()
            assert inter / union >= 0.98
            masks += 1
    assert masks == sum(len(r["masks"]) for r in rows.values())
    # the official sample's keys, on the conversation list and the per-tile file
    official = json.loads((Path(__file__).parents[2] / "data" / "geopixeld" / "GeoPixelD.json").read_text())[0]
    e = loaded[0]["entry"]
    assert set(e) == set(official) and e["image"].rsplit("/", 2)[0] == official["image"].rsplit("/", 2)[0]
    per_tile = json.loads(Path(e["polygons"]).read_text())
    assert set(per_tile) == {"id", "img", "gcg_description", "polygons"} and per_tile["img"] == e["image"]


def test_geopixel_paths_also_resolve_inside_the_export(train_export: tuple[Path, Any],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out, _ = train_export
    monkeypatch.chdir(out / "geopixel")
    assert len(_geopixel_load()) > 0


def test_geopixel_prefix_is_configurable(edited: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "export"
    export(edited["data"], out, formats=["geopixel"], ratios=(1, 0, 0), geopixel_prefix="data/mine")
    assert (out / "geopixel" / "data.txt").read_text().startswith("data/mine/GeoPixelD_train.json ")
    monkeypatch.chdir(out / "geopixel")
    loaded = _geopixel_load()
    assert loaded and all(s["entry"]["image"].startswith("data/mine/train/") for s in loaded)
    with pytest.raises(ValueError, match="relative folder"):
        export(edited["data"], tmp_path / "bad", formats=["geopixel"], geopixel_prefix="/abs/path")


# --------------------------------------------------------------------------------------------------- GLaMM


def _glamm_training_items(out: Path, split: str) -> list[dict[str, Any]]:
    """GLaMM's ``GCGBaseDataset._parse_annotations`` + ``process_data`` + ``create_conversations``."""
    items = []
    image_folder = out / "images" / split
    for ann in json.loads((out / "glamm" / f"gcg_{split}.json").read_text()):
        width, height = Image.open(image_folder / ann["file_name"]).size
        caption = ann["caption"].strip('"').strip()
        labels, spans, masks = [], [], []
        for word, grounding in ann["groundings"].items():
            labels.append(word)
            spans.append(grounding["token_positives"])
            binary = np.zeros((height, width), dtype=np.uint8)
            for rle in grounding["rle_masks"]:
                from pycocotools import mask as mask_utils

                binary += mask_utils.decode(rle).astype(np.uint8).squeeze()
            masks.append(binary)
        order = sorted(range(len(spans)), key=lambda k: spans[k][0])
        spans, masks, labels = [spans[k] for k in order], [masks[k] for k in order], [labels[k] for k in order]
        tagged = caption
        for start, end in sorted(spans, key=lambda x: x[0], reverse=True):
            tagged = f"{tagged[:start]}<p> {tagged[start:end]} </p> [SEG]{tagged[end:]}"
        items.append({"file_name": ann["file_name"], "caption": caption, "tagged": tagged, "masks": masks,
                      "labels": labels})
    return items


def test_glamm_training_loader_tags_our_spans(train_export: tuple[Path, Any], edited: dict[str, Any]) -> None:
    out, summary = train_export
    rows = _parquet_rows(out, "train")
    items = _glamm_training_items(out, "train")
    assert len(items) == len(rows)
    quoted = edited["ids"][QUOTED]
    assert summary.extra["captions_unquoted"] == 1
    for item in items:
        row = rows[Path(item["file_name"]).stem]
        # GLaMM's tagging reproduces our markup exactly: the same phrases, the same masks, in [SEG] order
        assert parse(item["tagged"]).gcg_caption == parse(row["gcg_caption"]).gcg_caption, item["file_name"]
        assert all(np.array_equal(m.astype(bool), decode(r)) for m, r in zip(item["masks"], row["masks"], strict=True))
        assert not row["caption"].startswith(('"', "\u201c", "'"))
    q = rows[quoted]
    original = edited["rows"][quoted]["caption"]
    assert original.startswith('"') and q["caption"] == original[1:-1]
    assert [q["caption"][p["start"]:p["end"]] for p in q["phrases"]] == [p["text"] for p in q["phrases"]]


def _glamm_predictions(out: Path, split: str, folder: Path) -> None:
    """A perfect model's output as GLaMM's ``infer.py`` writes it: one ``{stem}.json`` per image file."""
    rows = _parquet_rows(out, split)
    folder.mkdir()
    for image_id in os.listdir(out / "images" / split):  # GCGEvalDDP lists the image folder
        r = rows[image_id[:-4]]
        phrases = re.findall(r"<p>(.*?)</p>", r["gcg_caption"])
        (folder / f"{image_id[:-4]}.json").write_text(json.dumps({
            "image_id": image_id[:-4], "caption": r["caption"], "phrases": [p.strip() for p in phrases],
            "pred_masks": r["masks"]}))


def _glamm_evaluate(gt_dir: Path, split: str, pred_dir: Path) -> dict[str, Any]:
    """GLaMM's ``evaluate.py`` steps that need no model: AP (``COCOeval``, category 1 only) and mIoU
    (``compute_miou``: greedy pairs by largest IoU, per-image mean, 0 for an image without a pair)."""
    import contextlib
    import io

    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_mask_path, gt_cap_path = gt_dir / f"{split}_gcg_coco_mask_gt.json", gt_dir / f"{split}_gcg_coco_caption_gt.json"
    ids = [img["id"] for img in json.loads(gt_cap_path.read_text())["images"]]
    coco_pred, labels_pred = [], {}
    for image_id in ids:
        pred = json.loads((pred_dir / f"{image_id}.json").read_text())  # opens {gt id}.json
        key = next(iter(pred))
        pred = pred[key] if isinstance(pred[key], dict) else pred
        labels_pred[image_id] = pred["phrases"]
        for rle in pred["pred_masks"]:
            coco_pred.append({"image_id": image_id, "category_id": 1, "segmentation": rle, "score": 1.0})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_mask_path))
        coco_dt = coco_gt.loadRes(coco_pred)
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.params.catIds = [1]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        caps = COCO(str(gt_cap_path))
    mious = []
    for image_id in ids:
        gt = [mask_utils.decode(a["segmentation"]) for a in coco_gt.anns.values() if a["image_id"] == image_id]
        dt = [mask_utils.decode(a["segmentation"]) for a in coco_dt.anns.values() if a["image_id"] == image_id]
        ious = np.array([[np.logical_and(p, g).sum() / max(1, np.logical_or(p, g).sum()) for g in gt] for p in dt])
        paired = []
        while ious.size > 0 and np.max(ious) > 0:
            i, j = np.unravel_index(np.argmax(ious), ious.shape)
            paired.append(ious[i, j])
            ious = np.delete(np.delete(ious, i, axis=0), j, axis=1)
        mious.append(np.mean(paired) if paired else 0.0)
    labels = {image_id: [a for a in caps.anns.values() if a["image_id"] == image_id][0]["labels"] for image_id in ids}
    anns = {image_id: [a for a in coco_gt.anns.values() if a["image_id"] == image_id] for image_id in ids}
    return {"AP50": float(ev.stats[1]), "mIoU": float(np.mean(mious)), "labels": labels, "anns": anns,
            "predicted_labels": labels_pred}


def test_glamm_evaluator_scores_a_perfect_model_as_perfect(test_export: tuple[Path, Any], edited: dict[str, Any],
                                                           tmp_path: Path) -> None:
    from geopixel.eval.gcg import evaluate_gcg, load_ground_truth, read_predictions

    out, summary = test_export
    _glamm_predictions(out, "test", tmp_path / "preds")
    glamm = _glamm_evaluate(out / "coco", "test", tmp_path / "preds")
    assert glamm["AP50"] == pytest.approx(1.0) and glamm["mIoU"] == pytest.approx(1.0)
    # Recall pairs labels[k] with the image's k-th annotation: our labels are in annotation ([SEG]) order
    rows = _parquet_rows(out, "test")
    for image_id, labels in glamm["labels"].items():
        assert labels == glamm["predicted_labels"][image_id] == [p["text"] for p in rows[image_id]["phrases"]]
        for ann, rle in zip(glamm["anns"][image_id], rows[image_id]["masks"], strict=True):
            assert ann["segmentation"]["counts"] == rle["counts"]
    # the sample without a grounded phrase is not in GLaMM's ground truth (it would score mIoU 0)
    assert edited["ids"][NO_SEG] not in glamm["labels"] and summary.extra["glamm_gt_left_out"] == 1
    # geopixel eval on both ground truths, with GLaMM's prediction folder: the same numbers, perfect
    preds = read_predictions(tmp_path / "preds")
    ours = evaluate_gcg(load_ground_truth(out / "coco" / "instances_test.json", out / "coco" / "captions_test.json"),
                        preds, captions=False)
    theirs = evaluate_gcg(load_ground_truth(out / "coco" / "test_gcg_coco_mask_gt.json",
                                            out / "coco" / "test_gcg_coco_caption_gt.json"), preds, captions=False)
    assert theirs.info["unknown"] == 1 and theirs.info["missing"] == 0  # the no-[SEG] tile's prediction
    for metric in ("AP50", "mIoU", "Recall", "mIoU_glamm"):
        assert theirs.rows["overall"][metric] == pytest.approx(ours.rows["overall"][metric]) == pytest.approx(1.0)


def test_glamm_evaluator_agrees_with_geopixel_eval_on_a_degraded_model(test_export: tuple[Path, Any],
                                                                       tmp_path: Path) -> None:
    from geopixel.eval.gcg import evaluate_gcg, load_ground_truth, read_predictions

    out, _ = test_export
    _glamm_predictions(out, "test", tmp_path / "preds")
    for k, f in enumerate(sorted((tmp_path / "preds").glob("*.json"))):  # masks dropped, one moved
        rec = json.loads(f.read_text())
        rec["pred_masks"], rec["phrases"] = rec["pred_masks"][k % 2::2], rec["phrases"][k % 2::2]
        if rec["pred_masks"]:
            m = decode(rec["pred_masks"][0])
            from pycocotools import mask as mask_utils

            shifted = np.asfortranarray(np.roll(m, 7, axis=1).astype(np.uint8))
            enc = mask_utils.encode(shifted)
            rec["pred_masks"][0] = {"size": enc["size"], "counts": enc["counts"].decode()}
        f.write_text(json.dumps(rec))
    glamm = _glamm_evaluate(out / "coco", "test", tmp_path / "preds")
    ours = evaluate_gcg(load_ground_truth(out / "coco" / "test_gcg_coco_mask_gt.json",
                                          out / "coco" / "test_gcg_coco_caption_gt.json"),
                        read_predictions(tmp_path / "preds"), captions=False)
    assert 0 < glamm["AP50"] < 1 and 0 < glamm["mIoU"] < 1
    assert ours.rows["overall"]["AP50"] == pytest.approx(glamm["AP50"], abs=1e-12)
    assert ours.rows["overall"]["mIoU_glamm"] == pytest.approx(glamm["mIoU"], abs=1e-12)


# ------------------------------------------------------------------------------------- COCO, paths, filters


def test_coco_file_names_resolve_and_paths_are_relative(test_export: tuple[Path, Any]) -> None:
    out, _ = test_export
    for name in ("instances_test.json", "test_gcg_coco_mask_gt.json"):
        data = json.loads((out / "coco" / name).read_text())
        for img in data["images"]:
            assert (out / "images" / "test" / img["file_name"]).is_file()
            if "source_image" in img:
                assert not os.path.isabs(img["source_image"]) and not img["source_image"].startswith("..")
    glamm_gt = json.loads((out / "coco" / "test_gcg_coco_mask_gt.json").read_text())
    assert {a["category_id"] for a in glamm_gt["annotations"]} == {1}
    assert all(isinstance(img["id"], str) for img in glamm_gt["images"])
    for row in _parquet_rows(out, "test").values():
        assert row["source_image"] in ("P0003.png", "P0005.png")  # relative to the folder the sources share
    text = "".join(p.read_text() for p in [out / "export.json", *(out / "coco").glob("*.json")])
    assert str(Path.cwd()) not in text and "/tmp/" not in text  # no path of the building machine


def test_images_are_written_once(train_export: tuple[Path, Any]) -> None:
    out, _ = train_export
    images = sorted((out / "images" / "train").glob("*.png"))
    assert len(images) == len(_parquet_rows(out, "train"))
    for png in (out / "geopixel" / "data" / "GeoPixelD" / "train").glob("*.png"):
        twin = out / "images" / "train" / png.name
        assert png.read_bytes() == twin.read_bytes()
        assert os.path.samefile(png, twin)  # a hard link: the bytes are on disk once


def test_filters_apply_to_every_format(edited: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "export"
    summary = export(edited["data"], out, formats=["gcg-parquet", "coco", "geopixel", "glamm"], ratios=(1, 0, 0),
                     max_severity="warning", exclude_flags="mostly_cut_off")
    gone = {edited["ids"][ERROR_FLAG], edited["ids"][WARNING_FLAG]}
    assert summary.extra["filtered"] == {"severity error": 1, "flag mostly_cut_off": 1}
    kept = set(_parquet_rows(out, "train"))
    assert kept == set(edited["ids"]) - gone
    coco = json.loads((out / "coco" / "instances_train.json").read_text())
    assert {i["tile_id"] for i in coco["images"]} == kept
    glamm_gt = json.loads((out / "coco" / "train_gcg_coco_caption_gt.json").read_text())
    assert {i["id"] for i in glamm_gt["images"]} == kept - {edited["ids"][NO_SEG]}
    assert {Path(i["file_name"]).stem for i in json.loads((out / "glamm" / "gcg_train.json").read_text())} == kept
    gp = json.loads((out / "geopixel" / "data" / "GeoPixelD" / "GeoPixelD_train.json").read_text())
    assert {Path(e["image"]).stem for e in gp} == kept - {edited["ids"][NO_SEG]}
    assert {p.stem for p in (out / "images" / "train").glob("*.png")} == kept
    info = json.loads((out / "export.json").read_text())
    assert info["filters"]["left_out"] == summary.extra["filtered"]
    with pytest.raises(ValueError, match="max severity 'fatal'"):
        export(edited["data"], tmp_path / "bad", formats=["coco"], max_severity="fatal")


def test_filters_apply_to_the_geo_layers(edited: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "export"
    export(edited["data"], out, formats=["geo"], ratios=(1, 0, 0), exclude_flags=["mostly_cut_off"])
    tiles = pa.concat_tables([pq.read_table(p) for p in sorted((out / "geo").glob("tiles*.parquet"))])
    instances = pa.concat_tables([pq.read_table(p) for p in sorted((out / "geo").glob("instances*.parquet"))])
    kept = set(edited["ids"]) - {edited["ids"][WARNING_FLAG]}
    assert set(tiles.column("tile_id").to_pylist()) == kept
    assert set(instances.column("tile_id").to_pylist()) <= kept


def test_cli_export_options(edited: dict[str, Any], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    out = tmp_path / "export"
    res = CliRunner().invoke(app, ["export", str(edited["data"]), "--out", str(out), "--formats", "coco,geopixel",
                                   "--ratios", "1,0,0", "--max-severity", "warning", "--exclude-flags",
                                   "mostly_cut_off", "--geopixel-prefix", "data/ours"])
    assert res.exit_code == 0, res.output
    assert "left out by --max-severity/--exclude-flags: flag mostly_cut_off 1, severity error 1" in res.output
    assert "left out of the GeoPixel format: no [SEG] 1" in res.output
    assert (out / "geopixel" / "data" / "ours" / "GeoPixelD_train.json").is_file()
    bad = CliRunner().invoke(app, ["export", str(edited["data"]), "--out", str(tmp_path / "x"), "--formats", "coco",
                                   "--max-severity", "fatal"])
    assert bad.exit_code == 2 and "max severity 'fatal'" in bad.output
