"""Writers of the non-Parquet formats: COCO, GeoPixel's training format and GLaMM's GCG format.

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
        for path, body, tail in ((p1, parts[1], f', "categories": {json.dumps(cats)}}}'), (p2, parts[2], "}")):
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
        return [p1, p2]

    def abort(self) -> None:
        for a in (self.images, self.anns, self.caps):
            a.abort()


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


class GeoPixelWriter:
    """``GeoPixelD_{split}.json`` plus ``{split}/{tile_id}.json`` and ``.png``, one tile at a time."""

    def __init__(self, split: str, out: Path) -> None:
        self.split, self.out = split, out
        self.folder = out / split
        self.folder.mkdir(parents=True, exist_ok=True)
        self.index = JsonArray(out / f"GeoPixelD_{split}.json.partial", indent=1)
        self.stats = PolygonStats()
        self.files = 0

    def add(self, r: dict[str, Any]) -> None:
        tile_id = r["tile_id"]
        polygons = []
        for m in r["masks"]:
            polys, score = polygons_and_iou(decode(m))
            polygons.append(polys)
            self.stats.add(score)
        png, per_tile = self.folder / f"{tile_id}.png", self.folder / f"{tile_id}.json"
        with writing(png):
            png.write_bytes(r["image"]["bytes"])
        with writing(per_tile):
            per_tile.write_text(json.dumps({"id": tile_id, "img": f"{tile_id}.png",
                                            "gcg_description": r["gcg_caption"], "polygons": polygons}))
        self.index.add({
            "id": self.index.count,
            "conversations": [{"from": "human", "value": question_for(tile_id)},
                              {"from": "bot", "value": r["gcg_caption"]}],
            "image": f"{self.split}/{tile_id}.png",
            "polygons": f"{self.split}/{tile_id}.json",
        })
        self.files += 2

    def close(self) -> list[Path]:
        final = self.out / f"GeoPixelD_{self.split}.json"
        self.index.close().replace(final)
        return [final]

    def abort(self) -> None:
        self.index.abort()


def write_geopixel(rows: Iterable[dict[str, Any]], split: str, out: Path) -> tuple[list[Path], PolygonStats]:
    """The GeoPixel files of ``rows``; returns the index file and the polygon IoU statistics."""
    writer = GeoPixelWriter(split, out)
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


def write_glamm(rows: Iterable[dict[str, Any]], split: str, out: Path) -> list[Path]:
    """GLaMM's GCG file of ``rows`` (any iterable, read once)."""
    writer = GlammWriter(split, out)
    for r in rows:
        writer.add(r)
    return writer.close()
