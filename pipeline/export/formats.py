"""Writers of the non-Parquet formats: COCO, GeoPixel's training format and GLaMM's GCG format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..rle import area, decode
from .polygons import fill_polygons, iou, mask_to_polygons

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


def write_coco(rows: list[dict[str, Any]], split: str, out: Path) -> list[Path]:
    """``instances_{split}.json`` (one annotation per grounded mask) and ``captions_{split}.json``."""
    out.mkdir(parents=True, exist_ok=True)
    categories: dict[str, int] = {}
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    caps: list[dict[str, Any]] = []
    for img_id, r in enumerate(rows, start=1):
        images.append({"id": img_id, "file_name": f"{r['tile_id']}.png", "width": r["width"], "height": r["height"],
                       "tile_id": r["tile_id"], "source_image": r["source_image"]})
        for k, (p, m) in enumerate(zip(r["phrases"], r["masks"], strict=True)):
            cat = categories.setdefault(p["category"], len(categories) + 1)
            anns.append({
                "id": len(anns) + 1, "image_id": img_id, "category_id": cat, "segmentation": dict(m),
                "area": float(area(m)), "bbox": _bbox(m), "iscrowd": 0, "phrase": p["text"], "seg_index": k,
                "kind": p["kind"], "instance_ids": list(p["instance_ids"]),
            })
        caps.append({"id": img_id, "image_id": img_id, "caption": r["caption"], "gcg_caption": r["gcg_caption"],
                     "labels": [p["text"] for p in r["phrases"]]})
    cats = [{"id": i, "name": n, "supercategory": "object"} for n, i in categories.items()]
    info = {"description": f"geopixeld {split}", "version": "1"}
    p1, p2 = out / f"instances_{split}.json", out / f"captions_{split}.json"
    p1.write_text(json.dumps({"info": info, "images": images, "annotations": anns, "categories": cats}))
    p2.write_text(json.dumps({"info": info, "images": images, "annotations": caps}))
    return [p1, p2]


def write_geopixel(rows: list[dict[str, Any]], split: str, out: Path) -> tuple[list[Path], list[float]]:
    """``GeoPixelD_{split}.json`` plus ``{split}/{tile_id}.json`` and ``.png``; returns files and mask IoUs."""
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    entries, files, ious = [], [], []
    for k, r in enumerate(rows):
        tile_id = r["tile_id"]
        polygons = []
        for m in r["masks"]:
            mask = decode(m)
            polys = mask_to_polygons(mask)
            polygons.append(polys)
            ious.append(iou(fill_polygons(polys, r["height"], r["width"]), mask))
        png = folder / f"{tile_id}.png"
        png.write_bytes(r["image"]["bytes"])
        per_tile = folder / f"{tile_id}.json"
        per_tile.write_text(json.dumps({"id": tile_id, "img": f"{tile_id}.png", "gcg_description": r["gcg_caption"],
                                        "polygons": polygons}))
        question = GCG_QUESTIONS[int.from_bytes(tile_id.encode()[-2:], "big") % len(GCG_QUESTIONS)]
        entries.append({
            "id": k,
            "conversations": [{"from": "human", "value": question}, {"from": "bot", "value": r["gcg_caption"]}],
            "image": f"{split}/{tile_id}.png",
            "polygons": f"{split}/{tile_id}.json",
        })
        files += [png, per_tile]
    index = out / f"GeoPixelD_{split}.json"
    index.write_text(json.dumps(entries, indent=1))
    return [index, *files], ious


def unique_labels(texts: list[str]) -> list[str]:
    """Phrase texts made unique: a repeated ``car`` becomes ``car (2)``, ``car (3)``..."""
    seen: dict[str, int] = {}
    out = []
    for t in texts:
        n = seen.get(t, 0) + 1
        seen[t] = n
        out.append(t if n == 1 else f"{t} ({n})")
    return out


def write_glamm(rows: list[dict[str, Any]], split: str, out: Path) -> list[Path]:
    """GLaMM's GCG training format: ``file_name, caption, groundings{phrase: token_positives, rle_masks}``."""
    out.mkdir(parents=True, exist_ok=True)
    data = []
    for r in rows:
        labels = unique_labels([p["text"] for p in r["phrases"]])
        groundings = {
            label: {"token_positives": [p["start"], p["end"]], "rle_masks": [dict(m)]}
            for label, p, m in zip(labels, r["phrases"], r["masks"], strict=True)
        }
        data.append({"file_name": f"{r['tile_id']}.png", "caption": r["caption"], "groundings": groundings})
    path = out / f"gcg_{split}.json"
    path.write_text(json.dumps(data))
    return [path]
