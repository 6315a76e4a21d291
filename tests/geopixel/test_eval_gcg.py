"""GCG metrics end to end: ground truth built with pycocotools, perfect and imperfect predictions, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from geopixel.cli import app
from geopixel.eval.gcg import evaluate_gcg, load_ground_truth, read_predictions

H = W = 20


def rle(y0: int, y1: int, x0: int, x1: int) -> dict[str, Any]:
    m = np.zeros((H, W), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    r = mask_utils.encode(np.asfortranarray(m))
    return {"size": [H, W], "counts": r["counts"].decode()}


# image → list of (phrase, box, instance_ids, kind)
OBJECTS: dict[int, list[tuple[str, tuple[int, int, int, int], list[int], str]]] = {
    1: [("tennis court-1", (0, 10, 0, 10), [11], "instance"),
        ("small vehicles", (12, 20, 0, 20), [12, 13, 14], "cluster")],
    2: [("plane-1", (0, 5, 0, 5), [21], "instance"),
        ("plane-2", (10, 20, 10, 20), [22], "instance")],
}
CAPTIONS = {
    1: "A <p> tennis court-1 </p> [SEG] at the top left and <p> small vehicles </p> [SEG] parked along the road.",
    2: "Two planes, <p> plane-1 </p> [SEG] at the top left and <p> plane-2 </p> [SEG] at the bottom right.",
}


def write_gt(folder: Path) -> tuple[Path, Path]:
    """COCO instances + captions in the exporter's layout (categories per class, phrase fields)."""
    images = [{"id": i, "file_name": f"T{i}_0_800_0_800.png", "width": W, "height": H, "tile_id": f"T{i}_0_800_0_800"}
              for i in OBJECTS]
    anns: list[dict[str, Any]] = []
    caps: list[dict[str, Any]] = []
    for iid, objs in OBJECTS.items():
        for k, (phrase, b, ids, kind) in enumerate(objs):
            seg = rle(*b)
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": 1 + k % 2, "segmentation": seg,
                         "area": float(mask_utils.area({**seg, "counts": seg["counts"].encode()})),
                         "bbox": [b[2], b[0], b[3] - b[2], b[1] - b[0]], "iscrowd": 0, "phrase": phrase,
                         "seg_index": k, "kind": kind, "instance_ids": ids})
        gcg = CAPTIONS[iid]
        plain = gcg.replace("<p> ", "").replace(" </p> [SEG]", "")
        caps.append({"id": iid, "image_id": iid, "caption": plain, "gcg_caption": gcg,
                     "labels": [o[0] for o in objs]})
    cats = [{"id": 1, "name": "tennis court"}, {"id": 2, "name": "small vehicle"}]
    inst, cap = folder / "instances_test.json", folder / "captions_test.json"
    inst.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    cap.write_text(json.dumps({"images": images, "annotations": caps}))
    return inst, cap


def perfect_predictions() -> list[dict[str, Any]]:
    return [{"image_id": f"T{iid}_0_800_0_800" if iid == 1 else iid, "caption": CAPTIONS[iid],
             "phrases": [o[0] for o in objs], "pred_masks": [rle(*o[1]) for o in objs]}
            for iid, objs in OBJECTS.items()]


def test_perfect_predictions_score_full_marks(tmp_path: Path) -> None:
    gt = load_ground_truth(*write_gt(tmp_path))
    r = evaluate_gcg(gt, perfect_predictions(), meteor="python")
    for row in ("uni", "multi", "overall"):
        assert r.rows[row]["AP50"] == pytest.approx(1.0)
        assert r.rows[row]["mIoU"] == 1.0 and r.rows[row]["Recall"] == 1.0 and r.rows[row]["mIoU_glamm"] == 1.0
    assert (r.rows["uni"]["phrases"], r.rows["multi"]["phrases"], r.rows["overall"]["phrases"]) == (3, 1, 4)
    assert (r.rows["overall"]["CIDEr"] or 0) > 0.5 and r.rows["uni"]["CIDEr"] is None
    # identical captions: every word aligned in one chunk → no fragmentation penalty (METEOR 1.5)
    assert r.rows["overall"]["METEOR"] == pytest.approx(1.0)
    assert r.info["missing"] == 0 and r.info["unknown"] == 0
    assert r.info["meteor"].startswith("reimplementation, METEOR 1.5 parameters")


def write_glamm_gt(folder: Path) -> tuple[Path, Path]:
    """The same ground truth in GLaMM's own form: string ids = file stems, category 1 only, no phrase fields
    (phrases only in the caption annotation's ``labels``, in annotation order), annotations shuffled across
    images, as GLaMM's ``{split}_gcg_coco_mask_gt.json`` / ``{split}_gcg_coco_caption_gt.json``."""
    images = [{"id": f"T{i}_0_800_0_800", "file_name": f"T{i}_0_800_0_800.png", "width": W, "height": H}
              for i in OBJECTS]
    anns: list[dict[str, Any]] = []
    caps: list[dict[str, Any]] = []
    for k in range(2):  # interleave images: the k-th object of every image, then the next
        for iid, objs in OBJECTS.items():
            phrase, b, _ids, _kind = objs[k]
            anns.append({"id": len(anns) + 1, "image_id": f"T{iid}_0_800_0_800", "category_id": 1,
                         "segmentation": rle(*b), "area": float((b[1] - b[0]) * (b[3] - b[2])),
                         "bbox": [b[2], b[0], b[3] - b[2], b[1] - b[0]], "iscrowd": 0})
    for iid, objs in OBJECTS.items():
        plain = CAPTIONS[iid].replace("<p> ", "").replace(" </p> [SEG]", "")
        caps.append({"id": iid, "image_id": f"T{iid}_0_800_0_800", "caption": plain, "labels": [o[0] for o in objs]})
    inst, cap = folder / "test_gcg_coco_mask_gt.json", folder / "test_gcg_coco_caption_gt.json"
    inst.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}))
    cap.write_text(json.dumps({"images": images, "annotations": caps}))
    return inst, cap


def test_glamm_form_ground_truth_scores_like_ours(tmp_path: Path) -> None:
    (tmp_path / "ours").mkdir()
    (tmp_path / "glamm").mkdir()
    ours = load_ground_truth(*write_gt(tmp_path / "ours"))
    glamm = load_ground_truth(*write_glamm_gt(tmp_path / "glamm"))
    assert sorted(glamm.images) == ["T1_0_800_0_800", "T2_0_800_0_800"]
    assert glamm.images["T1_0_800_0_800"].phrases == ["tennis court-1", "small vehicles"]  # from labels
    # GLaMM's prediction files: {image_id}.json holding {"image_id": stem, ...}, ids as GLaMM writes them
    folder = tmp_path / "preds"
    folder.mkdir()
    for rec in perfect_predictions():
        rec = {**rec, "image_id": f"T{rec['image_id']}_0_800_0_800" if isinstance(rec["image_id"], int)
               else rec["image_id"]}
        (folder / f"{rec['image_id']}.json").write_text(json.dumps(rec))
    preds = read_predictions(folder)
    a = evaluate_gcg(ours, preds, meteor="python")
    b = evaluate_gcg(glamm, preds, meteor="python")
    assert b.info["unknown"] == 0 and b.info["missing"] == 0
    assert b.rows["overall"] == a.rows["overall"]  # GLaMM's GT has no kinds: overall only
    assert b.rows["overall"]["AP50"] == pytest.approx(1.0) and b.rows["overall"]["Recall"] == 1.0
    # an imperfect model scores the same against both forms
    half = [{**p, "phrases": p["phrases"][:1], "pred_masks": p["pred_masks"][:1]} for p in preds]
    ra, rb = evaluate_gcg(ours, half, meteor="python"), evaluate_gcg(glamm, half, meteor="python")
    for metric in ("AP50", "mIoU", "Recall", "mIoU_glamm", "CIDEr", "METEOR"):
        assert rb.rows["overall"][metric] == pytest.approx(ra.rows["overall"][metric]), metric


def test_ground_truth_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    inst, cap = write_glamm_gt(tmp_path)
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_ground_truth(bad, cap)
    data = json.loads(inst.read_text())
    data["annotations"][0]["image_id"] = "T9_0_800_0_800"
    inst.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"test_gcg_coco_mask_gt.json: annotation 1 refers to image 'T9_0_800_0_800'"):
        load_ground_truth(inst, cap)


def test_imperfect_predictions_by_hand(tmp_path: Path) -> None:
    gt = load_ground_truth(*write_gt(tmp_path))
    preds: list[dict[str, Any]] = [
        # image 1: masks listed in the other order; tennis court half covered (IoU 0.5), cluster exact but
        # named "cars" (token-F1 0 with "small vehicles": not recalled)
        {"image_id": "T1_0_800_0_800.png", "caption": "A court and cars.", "phrases": ["cars", "tennis court-2"],
         "pred_masks": [rle(12, 20, 0, 20), rle(0, 10, 0, 5)]},
        # image 2: only plane-2, IoU 50/100 … (10×5 inside 10×10)
        {"image_id": 2, "caption": "A plane.", "phrases": ["plane"], "pred_masks": [rle(10, 20, 10, 15)]},
        {"image_id": "not-in-gt", "caption": "", "phrases": [], "pred_masks": []},
    ]
    r = evaluate_gcg(gt, preds, meteor="python")
    # per GT: court 0.5, cluster 1.0, plane-1 0 (no prediction left), plane-2 0.5
    assert r.rows["overall"]["mIoU"] == pytest.approx((0.5 + 1.0 + 0.0 + 0.5) / 4)
    assert r.rows["uni"]["mIoU"] == pytest.approx((0.5 + 0.0 + 0.5) / 3)
    assert r.rows["multi"]["mIoU"] == pytest.approx(1.0)
    # GLaMM: per image mean over pairs: image 1 (0.5 + 1) / 2, image 2 0.5
    assert r.rows["overall"]["mIoU_glamm"] == pytest.approx((0.75 + 0.5) / 2)
    # recall: court (IoU 0.5, "tennis court-2" vs "tennis court-1" F1 2/3) and plane-2 ("plane" vs
    # "plane-2": F1 2/3); the cluster fails the phrase test
    assert r.rows["overall"]["Recall"] == pytest.approx(2 / 4)
    assert r.rows["uni"]["Recall"] == pytest.approx(2 / 3) and r.rows["multi"]["Recall"] == 0.0
    # AP50 (all scores 1): every prediction is a true positive at IoU ≥ 0.5; 3 of 4 GT found →
    # precision 1 up to recall 0.75 → 76 of the 101 recall points
    assert r.rows["overall"]["AP50"] == pytest.approx(76 / 101)
    # uni: cluster GT ignored (its exact prediction neither TP nor FP); 2 of 3 → 67/101
    assert r.rows["uni"]["AP50"] == pytest.approx(67 / 101)
    # multi: the predictions matching uni GT are ignored, the cluster's is a true positive
    assert r.rows["multi"]["AP50"] == pytest.approx(1.0)
    assert r.info["unknown"] == 1 and r.info["missing"] == 0


def test_missing_image_and_false_positives(tmp_path: Path) -> None:
    gt = load_ground_truth(*write_gt(tmp_path))
    preds = [{"image_id": 2, "caption": "<p> plane-1 </p> [SEG] <p> plane-2 </p> [SEG] <p> plane-3 </p> [SEG]",
              "pred_masks": [rle(0, 5, 0, 5), rle(10, 20, 10, 20), rle(6, 9, 6, 9)], "scores": [0.9, 0.8, 0.95]}]
    r = evaluate_gcg(gt, preds, matching="glamm", meteor="python")
    assert r.info["missing"] == 1
    # phrases parsed from the markup; image 1's GT scores 0
    assert r.rows["overall"]["Recall"] == pytest.approx(2 / 4) and r.rows["overall"]["mIoU"] == pytest.approx(0.5)
    # ranked by score: FP (0.95), TP, TP → precision 1/2, 2/3 at recall 1/4, 2/4; interpolated: 2/3 up to 0.5
    assert r.rows["overall"]["AP50"] == pytest.approx(51 * (2 / 3) / 101)


def test_prediction_folder_layout(tmp_path: Path) -> None:
    folder = tmp_path / "preds"
    folder.mkdir()
    for rec in perfect_predictions():
        key = str(rec.pop("image_id"))
        (folder / f"{key}.json").write_text(json.dumps({key: rec}))  # GLaMM's per-image files
    recs = read_predictions(folder)
    assert len(recs) == 2
    gt = load_ground_truth(*write_gt(tmp_path))
    assert evaluate_gcg(gt, recs, captions=False).rows["overall"]["Recall"] == 1.0


def test_cli_eval(tmp_path: Path) -> None:
    inst, cap = write_gt(tmp_path)
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(perfect_predictions()))
    out = tmp_path / "m" / "metrics.json"
    res = CliRunner().invoke(app, ["eval", "--gt-instances", str(inst), "--gt-captions", str(cap),
                                   "--pred", str(pred), "--out", str(out), "--similarity", "char-trigram"])
    assert res.exit_code == 0, res.output
    assert "overall" in res.output and "100.0" in res.output
    metrics = json.loads(out.read_text())
    assert metrics["rows"]["overall"]["AP50"] == pytest.approx(1.0)
    assert metrics["rows"]["overall"]["Recall"] == 1.0 and metrics["info"]["similarity"] == "char-trigram"
    # METEOR as coco-caption scores it (the jar) when Java is here, said so on screen and in the JSON
    from geopixel.eval.meteor_jar import meteor_jar_available

    expected = "METEOR 1.5 jar" if meteor_jar_available() else "reimplementation"
    assert f"METEOR: {expected}" in res.output and metrics["info"]["meteor"].startswith(expected)
    assert metrics["rows"]["overall"]["METEOR"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def isaid_export(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The bundled iSAID samples through the repo's pipeline: prepare → describe (offline) → export."""
    from pipeline.config import PrepareConfig
    from pipeline.describe import DescribeConfig, describe
    from pipeline.export import export
    from pipeline.prepare import prepare

    root = tmp_path_factory.mktemp("gcg_isaid")
    prepare([data_dir / "isaid"], PrepareConfig(format="isaid"), root / "isaid", progress=False)
    describe(root / "isaid", DescribeConfig(), progress=False)
    export(root / "isaid", root / "export", ratios=(0.0, 0.0, 1.0))
    return root / "export"


@pytest.mark.slow
def test_cli_on_the_exporters_ground_truth(isaid_export: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    rows = pq.read_table(sorted((isaid_export / "data").glob("test-*.parquet"))).to_pylist()
    inst, cap = isaid_export / "coco" / "instances_test.json", isaid_export / "coco" / "captions_test.json"
    # predictions straight from the dataset rows (markup caption, phrases, masks): a perfect model
    perfect = [{"image_id": r["tile_id"], "caption": r["gcg_caption"], "phrases": [p["text"] for p in r["phrases"]],
                "pred_masks": r["masks"]} for r in rows]
    (tmp_path / "perfect.json").write_text(json.dumps(perfect))
    out = tmp_path / "metrics.json"
    res = CliRunner().invoke(app, ["eval", "--gt-instances", str(inst), "--gt-captions", str(cap),
                                   "--pred", str(tmp_path / "perfect.json"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())["rows"]
    n_gt = sum(len(r["masks"]) for r in rows)
    assert m["overall"]["phrases"] == n_gt and m["uni"]["phrases"] + m["multi"]["phrases"] == n_gt
    assert m["multi"]["phrases"] > 0  # clusters of small vehicles
    for row in ("uni", "multi", "overall"):
        assert m[row]["AP50"] == pytest.approx(1.0) and m[row]["mIoU"] == 1.0 and m[row]["Recall"] == 1.0
    # a degraded model: every other mask dropped → mIoU and Recall fall to the share kept
    half = [{**p, "phrases": p["phrases"][::2], "pred_masks": p["pred_masks"][::2]} for p in perfect]
    kept = sum(len(p["pred_masks"]) for p in half)
    r = evaluate_gcg(load_ground_truth(inst, cap), half, captions=False)
    assert r.rows["overall"]["mIoU"] == pytest.approx(kept / n_gt)
    assert r.rows["overall"]["Recall"] == pytest.approx(kept / n_gt)


def test_eval_and_cli_import_no_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, geopixel.eval, geopixel.eval.gcg, geopixel.cli, geopixel.model.hd; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
