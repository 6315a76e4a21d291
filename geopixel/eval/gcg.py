"""Grounded conversation generation (GCG) metrics: AP50, mIoU, Recall, CIDEr and METEOR.

Ground truth is either of two COCO pairs: the exporter's per-class one (``EXPORT/coco/instances_{split}.json``
— one annotation per grounded mask with ``segmentation`` (RLE), ``phrase``, ``seg_index``, ``kind``,
``instance_ids`` — and ``EXPORT/coco/captions_{split}.json`` with ``caption`` and ``labels``), or GLaMM's own
form (``EXPORT/glamm/{split}_gcg_coco_mask_gt.json`` / ``{split}_gcg_coco_caption_gt.json``: string image ids
= file stems, category 1, phrases only in ``labels``). Categories are ignored either way.

Predictions are GLaMM's format, one record per image::

    {"image_id": 3 | "P0003_0_800_0_800" | "P0003_0_800_0_800.png",
     "caption": "... <p> tennis court-1 </p> [SEG] ...",    # markup is stripped for caption metrics
     "phrases": ["tennis court-1", ...],                    # phrases[k] names pred_masks[k]
     "pred_masks": [{"size": [h, w], "counts": "..."}, ...],
     "scores": [0.9, ...]}                                  # optional; 1.0 each otherwise (as GLaMM)

``image_id`` may be the COCO image id, the ``tile_id`` or the file name (with or without extension). A
missing ``phrases`` list is parsed from the caption's ``<p> … </p> [SEG]`` markup.

Rules (all per image, then pooled; "uni" / "multi" split by the *ground-truth* phrase):

* **Target kind**: a ground-truth phrase is *uni-target* when its ``instance_ids`` has one id, *multi-target*
  when it has several; without ``instance_ids``, ``kind`` ``instance`` → uni, ``cluster`` → multi; GT with
  neither counts in ``overall`` only.
* **AP50**: pycocotools ``COCOeval`` (``segm``), every category mapped to 1, IoU 0.5, area ``all``, up to
  ``max(100, most predictions in an image)`` detections per image, AP = mean precision over the 101
  recall points. For ``uni`` (``multi``) the other kind's ground truth is set to *ignore*: predictions
  matched to it count neither as true nor as false positives; unmatched predictions are false positives.
* **mIoU** (``hungarian``, the default): per image, predictions and GT masks are paired one-to-one by the
  Hungarian algorithm maximising the summed IoU; each GT mask scores the IoU of its prediction, 0 when it
  has none; mIoU is the mean over all GT masks (of that kind). ``mIoU_glamm`` reproduces GLaMM's
  ``compute_miou``: greedy pairing by largest IoU, per-image mean over the pairs with IoU > 0 (0 for an
  image without any), then the mean over images (for a kind: over images holding GT of that kind, using
  the pairs whose GT is of that kind). With ``matching="glamm"`` the ``mIoU`` column uses GLaMM's greedy
  pairing instead of the Hungarian one, still with unmatched GT counted as 0.
* **Recall**: a GT phrase is recalled when it is paired one-to-one with a prediction whose mask IoU ≥ 0.5
  and whose phrase similarity ≥ 0.5 (see :mod:`geopixel.eval.similarity`); pairs chosen to maximise the
  number of recalled phrases (``hungarian``) or by GLaMM's greedy rule (``glamm``). Recall = recalled /
  GT phrases.
* **CIDEr, METEOR**: :mod:`geopixel.eval.captions` on captions with markup removed, one reference (the GT
  caption) per image; an image without a prediction scores against an empty caption. Reported overall
  only (a caption mixes both kinds). METEOR is the METEOR 1.5 jar's when Java is available (as
  coco-caption), else the reimplementation's; ``info["meteor"]`` says which.

All metrics are fractions in [0, 1] except CIDEr (CIDEr units); :meth:`GCGResult.table` prints them × 100
as in the GeoPixel paper.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.gcg import phrase_texts

from .captions import caption_scores, strip_markup, tokenize
from .matching import Rle, glamm_greedy_pairs, iou_matrix, match_gt_ious, recall_matches, to_rle
from .similarity import PhraseSimilarity, get_similarity

KINDS = ("uni", "multi")
ROWS = ("uni", "multi", "overall")


#: A ground-truth image id: the exporter's integer COCO id, or a string (GLaMM's file stems).
ImageId = int | str


@dataclass
class GTImage:
    """Ground truth of one image: masks in ``[SEG]`` order with their phrases and target kinds."""

    image_id: ImageId
    tile_id: str | None
    file_name: str | None
    height: int
    width: int
    caption: str
    masks: list[Rle] = field(default_factory=list)
    phrases: list[str] = field(default_factory=list)
    kinds: list[str | None] = field(default_factory=list)


@dataclass
class Prediction:
    """One image's prediction; ``phrases[k]`` names ``masks[k]``; ``scores`` default to 1.0."""

    caption: str
    phrases: list[str]
    masks: list[Rle]
    scores: list[float]


@dataclass
class GroundTruth:
    """The GT images by id (as written in the files: int or str) plus the lookup from other names to ids."""

    images: dict[ImageId, GTImage]
    aliases: dict[str, ImageId]

    def resolve(self, key: Any) -> ImageId | None:
        """GT image id of a prediction's ``image_id``: the id itself, the tile id, the file name or the file
        stem (a GLaMM prediction file ``{stem}.json``), or an integer id written as text."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            key = int(key)
            if key in self.images:
                return key
        if isinstance(key, str) and key in self.images:
            return key
        text = str(key)
        for k in (text, Path(text).name, Path(text).stem):
            if k in self.aliases:
                return self.aliases[k]
        if text.isdigit() and int(text) in self.images:
            return int(text)
        return None


def _image_key(value: Any, source: str) -> ImageId:
    """An image id as stored: ints stay ints, everything else is its text."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{source}: image id {value!r} is not an integer or a string")
    return int(value) if isinstance(value, (int, np.integer)) else str(value)


def target_kind(ann: Mapping[str, Any]) -> str | None:
    """``"uni"``, ``"multi"`` or ``None`` for a GT annotation (rule in the module docstring)."""
    ids = ann.get("instance_ids")
    if ids:
        return "uni" if len(ids) == 1 else "multi"
    kind = ann.get("kind")
    return {"instance": "uni", "cluster": "multi"}.get(kind) if isinstance(kind, str) else None


def _load_json(source: str | Path | Mapping[str, Any], what: str) -> tuple[Mapping[str, Any], str]:
    if isinstance(source, Mapping):
        return source, f"<{what}>"
    path = Path(source)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a COCO {what} file is a JSON object with 'images' and 'annotations'")
    return data, str(path)


def _image_size(img: Mapping[str, Any], anns: Sequence[Mapping[str, Any]], source: str) -> tuple[int, int]:
    """``(height, width)`` from the image record, else from the first RLE's ``size``."""
    if img.get("height") and img.get("width"):
        return int(img["height"]), int(img["width"])
    for a in anns:
        seg = a.get("segmentation")
        if isinstance(seg, Mapping) and seg.get("size"):
            return int(seg["size"][0]), int(seg["size"][1])
    raise ValueError(f"{source}: image {img.get('id')!r} has no height/width and no RLE mask to take them from")


def load_ground_truth(instances: str | Path | Mapping[str, Any], captions: str | Path | Mapping[str, Any]) -> GroundTruth:
    """Read the COCO instances and captions files (paths or loaded dicts) into :class:`GroundTruth`.

    Both forms work: the exporter's (integer ids, one category per class, ``phrase``/``seg_index``/``kind``/
    ``instance_ids`` on every annotation) and GLaMM's (string ids = file stems, category 1, phrases only in
    the caption annotation's ``labels``, in the order of the image's annotations). Categories are ignored
    (GCG is class-agnostic). Annotations keep ``seg_index`` order when every one of an image has it, else
    their order in the file (GLaMM pairs ``labels[k]`` with the image's k-th annotation).
    """
    inst, inst_src = _load_json(instances, "instances")
    caps, caps_src = _load_json(captions, "captions")
    cap_by_image: dict[ImageId, Mapping[str, Any]] = {}
    for a in caps.get("annotations", []):
        cap_by_image.setdefault(_image_key(a.get("image_id"), caps_src), a)
    anns_by_image: dict[ImageId, list[Mapping[str, Any]]] = {}
    for a in inst.get("annotations", []):
        anns_by_image.setdefault(_image_key(a.get("image_id"), inst_src), []).append(a)
    images: dict[ImageId, GTImage] = {}
    aliases: dict[str, ImageId] = {}
    listed = [(img, inst_src) for img in inst.get("images", [])] + [(img, caps_src) for img in caps.get("images", [])]
    for img, src in listed:
        iid = _image_key(img.get("id"), src)
        if iid in images:
            continue
        height, width = _image_size(img, anns_by_image.get(iid, []), src)
        cap = cap_by_image.get(iid, {})
        text = cap.get("caption") or strip_markup(cap.get("gcg_caption", "") or "")
        images[iid] = GTImage(iid, img.get("tile_id"), img.get("file_name"), height, width, strip_markup(text))
        file_name = img.get("file_name")
        for alias in (str(iid), img.get("tile_id"), file_name, Path(file_name).stem if file_name else None):
            if alias:
                aliases.setdefault(str(alias), iid)
    for iid, anns in anns_by_image.items():
        if iid not in images:
            raise ValueError(f"{inst_src}: annotation {anns[0].get('id')} refers to image {iid!r}, which is not listed")
        g = images[iid]
        if all("seg_index" in a for a in anns):
            anns = sorted(anns, key=lambda a: int(a["seg_index"]))
        labels = list(cap_by_image.get(iid, {}).get("labels") or [])
        for k, a in enumerate(anns):
            seg = a.get("segmentation")
            if seg is None:
                raise ValueError(f"{inst_src}: annotation {a.get('id')} of image {iid!r} has no segmentation")
            if not isinstance(seg, dict):
                from pycocotools import mask as mask_utils  # polygons → RLE

                seg = mask_utils.merge(mask_utils.frPyObjects(seg, g.height, g.width))
            g.masks.append(to_rle(seg, g.height, g.width))
            g.phrases.append(str(a.get("phrase") or (labels[k] if k < len(labels) and len(labels) == len(anns) else "")))
            g.kinds.append(target_kind(a))
    return GroundTruth(images, aliases)


def _records(data: Any, source: str) -> Iterable[dict[str, Any]]:
    if isinstance(data, list):
        yield from data
    elif isinstance(data, dict) and isinstance(data.get("predictions"), list):
        yield from data["predictions"]
    elif isinstance(data, dict) and "pred_masks" in data:
        yield data
    elif isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), dict):
        # GLaMM's per-image files: {image_id: {...}}
        key, rec = next(iter(data.items()))
        yield {"image_id": key, **rec}
    elif isinstance(data, dict):
        for key, rec in data.items():
            if isinstance(rec, dict):
                yield {"image_id": key, **rec}
    else:
        raise ValueError(f"{source}: not a prediction list or mapping")


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """Prediction records from a JSON file (a list, ``{"predictions": [...]}`` or ``{image_id: record}``),
    a JSON Lines file, or a folder of per-image JSON files (GLaMM's ``{image_id}.json``)."""
    p = Path(path)
    out: list[dict[str, Any]] = []
    if p.is_dir():
        for f in sorted(p.glob("*.json")):
            for rec in _records(json.loads(f.read_text()), str(f)):
                out.append({"image_id": f.stem, **rec} if "image_id" not in rec else rec)
        return out
    text = p.read_text()
    try:
        return list(_records(json.loads(text), str(p)))
    except json.JSONDecodeError:
        return [r for line in text.splitlines() if line.strip() for r in _records(json.loads(line), str(p))]


def to_prediction(rec: Mapping[str, Any], image: GTImage) -> Prediction:
    """Normalise one GLaMM-style record; masks are checked against the image size."""
    caption = str(rec.get("caption") or "")
    phrases = rec.get("phrases")
    if phrases is None:
        phrases = phrase_texts(caption)
    masks = [to_rle(m, image.height, image.width) for m in rec.get("pred_masks") or []]
    scores = rec.get("scores") or rec.get("pred_scores") or [1.0] * len(masks)
    if len(scores) != len(masks):
        raise ValueError(f"image {image.image_id}: {len(scores)} scores for {len(masks)} masks")
    return Prediction(strip_markup(caption), [str(p) for p in phrases], masks, [float(s) for s in scores])


class _SubsetCOCOeval(COCOeval):
    """COCOeval that marks GT annotations outside ``keep`` (annotation ids) as *ignore*."""

    def __init__(self, gt: COCO, dt: COCO, keep: set[int] | None) -> None:
        super().__init__(gt, dt, "segm")
        self._keep = keep

    def _prepare(self) -> None:
        super()._prepare()
        if self._keep is None:
            return
        for anns in self._gts.values():
            for g in anns:
                if g["id"] not in self._keep:
                    g["ignore"] = 1


def ap50(gt: GroundTruth, preds: Mapping[ImageId, Prediction], kind: str | None = None) -> float | None:
    """COCO segmentation AP at IoU 0.5, one category (``None`` when there is no GT of that kind)."""
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    keep: set[int] = set()
    number = {iid: n for n, iid in enumerate(gt.images, start=1)}  # pycocotools wants one id type
    for g in gt.images.values():
        images.append({"id": number[g.image_id], "height": g.height, "width": g.width})
        for m, k in zip(g.masks, g.kinds, strict=True):
            aid = len(anns) + 1
            anns.append({"id": aid, "image_id": number[g.image_id], "category_id": 1, "segmentation": m, "iscrowd": 0,
                         "area": float(_area(m))})
            if kind is None or k == kind:
                keep.add(aid)
    if not keep:
        return None
    dets = [{"image_id": number[iid], "category_id": 1, "segmentation": m, "score": s}
            for iid, p in preds.items() for m, s in zip(p.masks, p.scores, strict=True)]
    if not dets:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
        coco.createIndex()
        dt = coco.loadRes(dets)
        ev = _SubsetCOCOeval(coco, dt, None if kind is None else keep)
        ev.params.catIds = [1]
        ev.params.iouThrs = np.array([0.5])
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.params.maxDets = [max([100, *(len(p.masks) for p in preds.values())])]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][0, :, 0, 0, -1]
    prec = prec[prec > -1]
    return float(prec.mean()) if prec.size else None


def _area(m: Rle) -> int:
    from pycocotools import mask as mask_utils

    return int(mask_utils.area(m))


@dataclass
class GCGResult:
    """Metrics by row (``uni``, ``multi``, ``overall``) plus counts and settings."""

    rows: dict[str, dict[str, float | int | None]]
    info: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """A plain-text table, metrics × 100 as in the paper (CIDEr in CIDEr units × 100 too)."""
        cols = ("CIDEr", "METEOR", "AP50", "mIoU", "Recall", "mIoU_glamm")
        lines = [f"{'':8}" + "".join(f"{c:>11}" for c in cols) + f"{'phrases':>9}"]
        for row in ROWS:
            vals = self.rows[row]
            cells = "".join(f"{_pct(vals.get(c)):>11}" for c in cols)
            lines.append(f"{row:8}{cells}{vals.get('phrases', 0):>9}")
        i = self.info
        lines.append(f"images {i['images']} (predicted {i['predicted']}, missing {i['missing']}, "
                     f"unknown ids {i['unknown']}); matching {i['matching']}, similarity {i['similarity']}")
        if i.get("meteor"):
            lines.append(f"METEOR: {i['meteor']}")
        return "\n".join(lines)


def _pct(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.1f}"


def evaluate_gcg(
    gt: GroundTruth,
    predictions: Sequence[Mapping[str, Any]],
    similarity: PhraseSimilarity | str | None = None,
    matching: str = "hungarian",
    iou_threshold: float = 0.5,
    sim_threshold: float = 0.5,
    captions: bool = True,
    meteor: str | None = None,
) -> GCGResult:
    """Score GLaMM-format prediction records against ground truth (rules in the module docstring).

    Args:
        gt: from :func:`load_ground_truth`.
        predictions: records as read by :func:`read_predictions`.
        similarity: a :class:`PhraseSimilarity`, a registry name or a model folder (default ``token-f1``).
        matching: ``"hungarian"`` (default) or ``"glamm"`` for mIoU and Recall pairing.
        iou_threshold, sim_threshold: Recall's admissibility thresholds.
        captions: compute CIDEr and METEOR.
        meteor: METEOR backend: ``auto`` (the METEOR 1.5 jar when Java is available, else the
            reimplementation), ``jar`` or ``python``; ``None`` reads ``$GEOPIXEL_METEOR`` (default ``auto``).
            ``info["meteor"]`` says which scored.
    """
    sim = similarity if similarity is not None and not isinstance(similarity, str) else get_similarity(similarity)
    preds: dict[ImageId, Prediction] = {}
    unknown: list[Any] = []
    for rec in predictions:
        iid = gt.resolve(rec.get("image_id"))
        if iid is None:
            unknown.append(rec.get("image_id"))
            continue
        if iid in preds:
            raise ValueError(f"two predictions for image {rec.get('image_id')!r}")
        preds[iid] = to_prediction(rec, gt.images[iid])
    empty = Prediction("", [], [], [])

    gt_ious: dict[str, list[float]] = {k: [] for k in ROWS}
    recalled: dict[str, int] = dict.fromkeys(ROWS, 0)
    glamm_img: dict[str, list[float]] = {k: [] for k in ROWS}
    for iid, g in gt.images.items():
        p = preds.get(iid, empty)
        ious = iou_matrix(p.masks, g.masks)  # (n_pred, n_gt)
        per_gt = match_gt_ious(ious, "hungarian" if matching == "hungarian" else "glamm")
        per_gt = np.nan_to_num(per_gt, nan=0.0)
        greedy = glamm_greedy_pairs(ious)
        names = [p.phrases[k] if k < len(p.phrases) else "" for k in range(len(p.masks))]
        sims = sim.matrix(g.phrases, names) if g.phrases and names else np.zeros((len(g.phrases), len(names)))
        hits = {gi for gi, _ in recall_matches(ious.T, sims, iou_threshold, sim_threshold, matching)}
        for row in ROWS:
            idx = [k for k, kind in enumerate(g.kinds) if row == "overall" or kind == row]
            if not idx:
                continue
            gt_ious[row] += [float(per_gt[k]) for k in idx]
            recalled[row] += sum(1 for k in idx if k in hits)
            paired = [float(ious[pi, gi]) for pi, gi in greedy if gi in idx]
            glamm_img[row].append(float(np.mean(paired)) if paired else 0.0)

    rows: dict[str, dict[str, float | int | None]] = {}
    for row in ROWS:
        n = len(gt_ious[row])
        rows[row] = {
            "AP50": ap50(gt, preds, None if row == "overall" else row),
            "mIoU": float(np.mean(gt_ious[row])) if n else None,
            "Recall": recalled[row] / n if n else None,
            "mIoU_glamm": float(np.mean(glamm_img[row])) if glamm_img[row] else None,
            "phrases": n,
            "recalled": recalled[row],
        }
    meteor_label = None
    if captions:
        keys = {iid: str(n) for n, iid in enumerate(gt.images)}  # int and str ids may both occur
        refs = {keys[i]: [g.caption] for i, g in gt.images.items()}
        hyps = {keys[i]: preds.get(i, empty).caption for i in gt.images}
        scores, meteor_label = caption_scores(hyps, refs, tokenize, meteor)
        rows["overall"].update(scores)
    for row in KINDS:
        rows[row].update({"CIDEr": None, "METEOR": None})
    info = {"images": len(gt.images), "predicted": len(preds), "missing": len(gt.images) - len(preds),
            "unknown": len(unknown), "unknown_ids": [str(u) for u in unknown[:20]], "matching": matching,
            "similarity": sim.name, "iou_threshold": iou_threshold, "sim_threshold": sim_threshold,
            "meteor": meteor_label}
    return GCGResult(rows, info)


def evaluate_files(
    gt_instances: str | Path,
    gt_captions: str | Path,
    pred: str | Path,
    similarity: str | None = None,
    matching: str = "hungarian",
    meteor: str | None = None,
) -> GCGResult:
    """:func:`evaluate_gcg` on files (see :func:`read_predictions` for the accepted prediction layouts)."""
    return evaluate_gcg(load_ground_truth(gt_instances, gt_captions), read_predictions(pred), similarity, matching,
                        meteor=meteor)


__all__ = [
    "GCGResult",
    "GTImage",
    "GroundTruth",
    "Prediction",
    "ap50",
    "evaluate_files",
    "evaluate_gcg",
    "load_ground_truth",
    "read_predictions",
    "target_kind",
    "to_prediction",
]
