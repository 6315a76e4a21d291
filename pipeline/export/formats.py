"""Writers of the non-Parquet formats: COCO, GeoPixel's training format, GLaMM's GCG format and its
evaluation ground truth, and the shared tile images.

Each writer takes rows one at a time (``add``) and streams them to disk, so memory does not grow with
the number of samples; ``close`` finishes the files (temporary names renamed), ``abort`` removes them.
"""

from __future__ import annotations

import contextlib
import json
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..rle import area, decode
from .atomic import writing
from .polygons import polygons_and_iou

# The GCG question of the official GeoPixelD sample, and plain variants of it.
GCG_QUESTIONS = (
    "Could you perform an in-depth analysis of this photo, including interleaved segmentation masks to map "
    "each part of your answer to specific image object?",
    "Can you provide a thorough description of this aerial image? Please output with interleaved segmentation "
    "masks for the corresponding phrases.",
    "Please describe this remote sensing image in detail, with interleaved segmentation masks for the objects "
    "you mention.",
)


def _bbox(rle: dict[str, Any]) -> list[float]:
    from pycocotools import mask as mask_utils

    obj = {"size": rle["size"], "counts": rle["counts"].encode()}
    return [float(v) for v in mask_utils.toBbox(obj)]


class JsonArray:
    """A JSON array written one item at a time to ``path`` (``[``, items joined by ``,``, ``]``).

    Nothing but the current item is held in memory. ``indent`` indents each item as ``json.dumps`` would.
    """

    def __init__(self, path: Path, indent: int | None = None) -> None:
        self.path, self.indent, self.count = path, indent, 0
        path.parent.mkdir(parents=True, exist_ok=True)
        with writing(path):
            self._fh: IO[str] | None = path.open("w", encoding="utf-8")
            self._fh.write("[")

    def add(self, item: Any) -> None:
        assert self._fh is not None, f"{self.path} is closed"
        text = json.dumps(item, indent=self.indent)
        with writing(self.path):
            if self.count:
                self._fh.write(",")
            if self.indent is not None:
                text = "\n" + textwrap.indent(text, " " * self.indent)
            self._fh.write(text)
        self.count += 1

    def close(self) -> Path:
        if self._fh is not None:
            with writing(self.path):
                self._fh.write("\n]" if self.indent is not None and self.count else "]")
                self._fh.close()
            self._fh = None
        return self.path

    def abort(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
        self.path.unlink(missing_ok=True)


def _copy_array_body(src: Path, dst: IO[str]) -> None:
    """Copy the items of a :class:`JsonArray` file (without its brackets) into ``dst``, 1 MiB at a time."""
    with src.open("r", encoding="utf-8") as fh:
        first = fh.read(1)
        assert first == "[", f"{src} is not a JSON array"
        pending = ""
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            dst.write(pending)
            pending = chunk
        dst.write(pending[:-1])  # drop the closing bracket


class CocoWriter:
    """``instances_{split}.json`` (one annotation per grounded mask) and ``captions_{split}.json``, streamed.

    Images, annotations and caption entries go to three part files as rows arrive; :meth:`close` joins
    them into the two COCO files (categories, which are few, are kept in memory).
    """

    def __init__(self, split: str, out: Path) -> None:
        self.split, self.out = split, out
        out.mkdir(parents=True, exist_ok=True)
        self.categories: dict[str, int] = {}
        self.images = JsonArray(out / f".images_{split}.part")
        self.anns = JsonArray(out / f".instances_{split}.part")
        self.caps = JsonArray(out / f".captions_{split}.part")

    def add(self, r: dict[str, Any]) -> None:
        img_id = self.images.count + 1
        self.images.add({"id": img_id, "file_name": f"{r['tile_id']}.png", "width": r["width"],
                         "height": r["height"], "tile_id": r["tile_id"], "source_image": r["source_image"]})
        for k, (p, m) in enumerate(zip(r["phrases"], r["masks"], strict=True)):
            cat = self.categories.setdefault(p["category"], len(self.categories) + 1)
            self.anns.add({
                "id": self.anns.count + 1, "image_id": img_id, "category_id": cat, "segmentation": dict(m),
                "area": float(area(m)), "bbox": _bbox(m), "iscrowd": 0, "phrase": p["text"], "seg_index": k,
                "kind": p["kind"], "instance_ids": list(p["instance_ids"]),
            })
        self.caps.add({"id": img_id, "image_id": img_id, "caption": r["caption"], "gcg_caption": r["gcg_caption"],
                       "labels": [p["text"] for p in r["phrases"]]})

    def close(self) -> list[Path]:
        parts = [a.close() for a in (self.images, self.anns, self.caps)]
        cats = [{"id": i, "name": n, "supercategory": "object"} for n, i in self.categories.items()]
        info = json.dumps({"description": f"geopixeld {self.split}", "version": "1"})
        p1, p2 = self.out / f"instances_{self.split}.json", self.out / f"captions_{self.split}.json"
        return _write_coco_pair(parts, info, json.dumps(cats), p1, p2)

    def abort(self) -> None:
        for a in (self.images, self.anns, self.caps):
            a.abort()


def _write_coco_pair(parts: list[Path], info: str, categories: str, instances: Path, captions: Path) -> list[Path]:
    """The COCO instances and captions files from the streamed array parts ``[images, annotations,
    captions]``: each written to a temporary name and renamed; the parts are removed."""
    for path, body, tail in ((instances, parts[1], f', "categories": {categories}}}'), (captions, parts[2], "}")):
        tmp = path.with_name(path.name + ".partial")
        with writing(tmp), tmp.open("w", encoding="utf-8") as fh:
            fh.write(f'{{"info": {info}, "images": [')
            _copy_array_body(parts[0], fh)
            fh.write('], "annotations": [')
            _copy_array_body(body, fh)
            fh.write("]" + tail)
        tmp.replace(path)
    for part in parts:
        part.unlink(missing_ok=True)
    return [instances, captions]


def write_coco(rows: Iterable[dict[str, Any]], split: str, out: Path) -> list[Path]:
    """``instances_{split}.json`` and ``captions_{split}.json`` of ``rows`` (any iterable, read once)."""
    writer = CocoWriter(split, out)
    for r in rows:
        writer.add(r)
    return writer.close()


@dataclass
class PolygonStats:
    """How well GeoPixel polygons reproduce the masks: count, minimum IoU, masks below 0.98."""

    masks: int = 0
    iou_min: float | None = None
    below_098: int = 0

    def add(self, value: float) -> None:
        self.masks += 1
        self.iou_min = value if self.iou_min is None else min(self.iou_min, value)
        self.below_098 += value < 0.98

    def merge(self, other: PolygonStats) -> None:
        self.masks += other.masks
        self.below_098 += other.below_098
        if other.iou_min is not None:
            self.iou_min = other.iou_min if self.iou_min is None else min(self.iou_min, other.iou_min)


def question_for(tile_id: str) -> str:
    """The GCG question a tile gets (stable: chosen by the last two bytes of its id)."""
    return GCG_QUESTIONS[int.from_bytes(tile_id.encode()[-2:], "big") % len(GCG_QUESTIONS)]


#: Where GeoPixel's docs put GeoPixelD, relative to its repository root (its loader resolves paths there).
GEOPIXEL_PREFIX = "data/GeoPixelD"


def _safe_prefix(prefix: str) -> str:
    """A relative folder path with ``/`` separators (GeoPixel's ``image`` / ``polygons`` paths start with it)."""
    parts = [p for p in prefix.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or prefix.startswith("/"):
        raise ValueError(f"GeoPixel prefix {prefix!r}: give a relative folder such as {GEOPIXEL_PREFIX}")
    return "/".join(parts)


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (the bytes stay on disk once), a copy where links are not possible."""
    import os
    import shutil

    with writing(dst):
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)


class ImageWriter:
    """``images/{split}/{tile_id}.png``: each tile image written once, for every format that needs files
    (COCO's ``file_name`` and GLaMM's ``file_name`` are relative to this folder; GeoPixel links to it)."""

    def __init__(self, split: str, out: Path) -> None:
        self.folder = out / split
        self.folder.mkdir(parents=True, exist_ok=True)
        self.files = 0

    def add(self, r: dict[str, Any]) -> Path:
        path = self.folder / f"{r['tile_id']}.png"
        with writing(path):
            path.write_bytes(r["image"]["bytes"])
        self.files += 1
        return path

    def close(self) -> list[Path]:
        return []

    def abort(self) -> None:
        pass


def count_seg(text: str) -> int:
    """``[SEG]`` tokens in a text, as GeoPixel's loader counts them."""
    return text.count("[SEG]")


class GeoPixelWriter:
    """GeoPixel's documented layout, streamed one tile at a time, under ``out``::

        {prefix}/GeoPixelD_{split}.json          the conversation list (GeoPixel's GeoPixelD.json)
        {prefix}/{split}/{tile_id}.json|.png      per-tile polygons and image

    ``image`` and ``polygons`` paths start with ``prefix`` (default ``data/GeoPixelD``), as in GeoPixel's own
    sample: its loader opens them from the directory it runs in, the GeoPixel repository root, so copying
    ``out``'s contents into a GeoPixel checkout is all it takes. GeoPixel's rules are kept: one polygon list
    per ``[SEG]`` (its loader asserts the counts match) and at least one ``[SEG]`` per sample (its training
    step fails without one): samples without are left out and counted in :attr:`skipped`.

    Args:
        images: the shared :class:`ImageWriter` of the split, which has written the tile's PNG already: it is
            linked from there. Without, the PNG is written here.
    """

    def __init__(self, split: str, out: Path, prefix: str = GEOPIXEL_PREFIX, images: ImageWriter | None = None) -> None:
        self.split, self.out, self.prefix = split, out, _safe_prefix(prefix)
        self.root = out / self.prefix
        self.folder = self.root / split
        self.folder.mkdir(parents=True, exist_ok=True)
        self.images = images
        self.index = JsonArray(self.root / f"GeoPixelD_{split}.json.partial", indent=1)
        self.stats = PolygonStats()
        self.files = 0
        self.skipped: dict[str, int] = {}

    @property
    def index_path(self) -> str:
        """The conversation list's path as GeoPixel's ``data.txt`` names it."""
        return f"{self.prefix}/GeoPixelD_{self.split}.json"

    def add(self, r: dict[str, Any]) -> None:
        tile_id = r["tile_id"]
        n_seg = count_seg(r["gcg_caption"])
        if n_seg == 0:
            self.skipped["no [SEG]"] = self.skipped.get("no [SEG]", 0) + 1
            return
        if n_seg != len(r["masks"]):
            self.skipped["[SEG] count differs from masks"] = self.skipped.get("[SEG] count differs from masks", 0) + 1
            return
        polygons = []
        for m in r["masks"]:
            polys, score = polygons_and_iou(decode(m))
            polygons.append(polys)
            self.stats.add(score)
        png, per_tile = self.folder / f"{tile_id}.png", self.folder / f"{tile_id}.json"
        if self.images is not None:  # written there first by the export (once for every format)
            link_or_copy(self.images.folder / f"{tile_id}.png", png)
        else:
            with writing(png):
                png.write_bytes(r["image"]["bytes"])
        rel = f"{self.prefix}/{self.split}/{tile_id}"
        with writing(per_tile):
            per_tile.write_text(json.dumps({"id": self.index.count, "img": f"{rel}.png",
                                            "gcg_description": r["gcg_caption"], "polygons": polygons}))
        self.index.add({
            "id": self.index.count,
            "conversations": [{"from": "human", "value": question_for(tile_id)},
                              {"from": "bot", "value": r["gcg_caption"]}],
            "image": f"{rel}.png",
            "polygons": f"{rel}.json",
        })
        self.files += 2

    def close(self) -> list[Path]:
        final = self.root / f"GeoPixelD_{self.split}.json"
        self.index.close().replace(final)
        return [final]

    def abort(self) -> None:
        self.index.abort()


def geopixel_data_txt(index_path: str, samples: int) -> str:
    """A line of GeoPixel's ``data.txt`` (``<json path> <k>``): its train scripts pass ``--given_num True``,
    which samples ``int(float(k) * 1000)`` conversations, so ``k`` is chosen to give exactly ``samples``."""
    k = (samples + 0.5) / 1000
    assert int(float(f"{k!r}") * 1000) == samples
    return f"{index_path} {k!r}\n"


def write_geopixel(rows: Iterable[dict[str, Any]], split: str, out: Path,
                   prefix: str = GEOPIXEL_PREFIX) -> tuple[list[Path], PolygonStats]:
    """The GeoPixel files of ``rows``; returns the index file and the polygon IoU statistics."""
    writer = GeoPixelWriter(split, out, prefix)
    for r in rows:
        writer.add(r)
    return writer.close(), writer.stats


def unique_labels(texts: list[str]) -> list[str]:
    """Phrase texts made unique: a repeated ``car`` becomes ``car (2)``, ``car (3)``..."""
    seen: dict[str, int] = {}
    out = []
    for t in texts:
        n = seen.get(t, 0) + 1
        seen[t] = n
        out.append(t if n == 1 else f"{t} ({n})")
    return out


class GlammWriter:
    """GLaMM's GCG training format, streamed: ``file_name, caption, groundings{phrase: token_positives,
    rle_masks}`` per tile in ``gcg_{split}.json``."""

    def __init__(self, split: str, out: Path) -> None:
        self.path = out / f"gcg_{split}.json"
        self.array = JsonArray(out / f"gcg_{split}.json.partial")

    def add(self, r: dict[str, Any]) -> None:
        labels = unique_labels([p["text"] for p in r["phrases"]])
        groundings = {
            label: {"token_positives": [p["start"], p["end"]], "rle_masks": [dict(m)]}
            for label, p, m in zip(labels, r["phrases"], r["masks"], strict=True)
        }
        self.array.add({"file_name": f"{r['tile_id']}.png", "caption": r["caption"], "groundings": groundings})

    def close(self) -> list[Path]:
        self.array.close().replace(self.path)
        return [self.path]

    def abort(self) -> None:
        self.array.abort()


class GlammGroundTruthWriter:
    """GCG evaluation ground truth in GLaMM's own form, streamed, beside the per-class COCO files:
    ``{split}_gcg_coco_mask_gt.json`` (COCO instances: one RLE annotation per ``[SEG]`` in ``[SEG]`` order,
    ``category_id`` 1 only — GLaMM's evaluator scores category 1) and ``{split}_gcg_coco_caption_gt.json``
    (``caption`` plus ``labels``, the phrases in the order of the image's annotations). Image ids are the
    tile ids, i.e. the image file stems, which is how GLaMM names its prediction files (``{stem}.json``) and
    looks them up (``{gt id}.json``). Samples without a grounded phrase are left out (counted in
    :attr:`skipped`): GLaMM's mIoU scores such an image 0 whatever the model does."""

    def __init__(self, split: str, out: Path) -> None:
        self.split, self.out = split, out
        out.mkdir(parents=True, exist_ok=True)
        self.skipped = 0
        self.images = JsonArray(out / f".glamm_images_{split}.part")
        self.anns = JsonArray(out / f".glamm_masks_{split}.part")
        self.caps = JsonArray(out / f".glamm_captions_{split}.part")

    def add(self, r: dict[str, Any]) -> None:
        stem = r["tile_id"]
        if not r["masks"]:
            self.skipped += 1
            return
        self.images.add({"id": stem, "file_name": f"{stem}.png", "width": r["width"], "height": r["height"]})
        for m in r["masks"]:
            self.anns.add({"id": self.anns.count + 1, "image_id": stem, "category_id": 1, "segmentation": dict(m),
                           "area": float(area(m)), "bbox": _bbox(m), "iscrowd": 0})
        self.caps.add({"id": self.caps.count + 1, "image_id": stem, "caption": r["caption"],
                       "labels": [p["text"] for p in r["phrases"]]})

    def close(self) -> list[Path]:
        parts = [a.close() for a in (self.images, self.anns, self.caps)]
        info = json.dumps({"description": f"geopixeld {self.split}, GLaMM GCG ground truth", "version": "1"})
        cats = json.dumps([{"id": 1, "name": "object", "supercategory": "object"}])
        p1 = self.out / f"{self.split}_gcg_coco_mask_gt.json"
        p2 = self.out / f"{self.split}_gcg_coco_caption_gt.json"
        return _write_coco_pair(parts, info, cats, p1, p2)

    def abort(self) -> None:
        for a in (self.images, self.anns, self.caps):
            a.abort()


def write_glamm(rows: Iterable[dict[str, Any]], split: str, out: Path) -> list[Path]:
    """GLaMM's GCG file of ``rows`` (any iterable, read once)."""
    writer = GlammWriter(split, out)
    for r in rows:
        writer.add(r)
    return writer.close()
