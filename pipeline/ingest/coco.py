"""COCO instance JSON: polygons, RLE (compressed or not) and bbox-only annotations.

SOURCE is the JSON file; images are found under ``--images DIR`` (default: the JSON's folder, then
``images/`` beside it). RLE masks are traced into exact pixel-edge polygons, so every format goes
through the same clipping path. An annotation with only a ``bbox`` becomes a box (``geometry_kind =
"box"``, kept as the SAM prompt box).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rasterio import features
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry import box as shapely_box

from ..errors import InputError, Skip
from ..records import SourceInstance
from ..rle import decode
from .base import ImageItem, LoadedAnnotations, VectorAnnotations


def load_coco(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable COCO JSON ({exc})") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise InputError(path, "not a COCO instance file: needs 'images' and 'annotations'")
    return data


def mask_to_geometry(mask: np.ndarray) -> shapely.Geometry | None:
    """Exact pixel-edge outline of a boolean mask (holes kept), or ``None`` when empty."""
    polys = [
        shape(geom)
        for geom, value in features.shapes(mask.astype(np.uint8), mask=mask.astype(bool))
        if value == 1
    ]
    return shapely.union_all(polys) if polys else None


def _segmentation_geometry(seg: Any, height: int, width: int) -> shapely.Geometry | None:
    if isinstance(seg, list):
        parts = [Polygon(list(zip(p[0::2], p[1::2], strict=False))) for p in seg if len(p) >= 6]
        if not parts:
            return None
        # Invalid outlines are left as they are: VectorAnnotations repairs and counts them.
        return parts[0] if len(parts) == 1 else MultiPolygon(parts)
    if isinstance(seg, dict) and "counts" in seg:
        size = list(seg.get("size", [height, width]))
        if size != [height, width]:
            raise ValueError(f"RLE size {size} differs from the image size {[height, width]}")
        counts = seg["counts"]
        if isinstance(counts, list):
            from pycocotools import mask as mask_utils

            rle = mask_utils.frPyObjects(seg, height, width)
            mask = mask_utils.decode(rle).astype(bool)
        else:
            mask = decode(seg)
        return mask_to_geometry(mask)
    return None


class CocoAdapter:
    name = "coco"
    help = "COCO instance JSON (polygons, RLE or bbox-only); images from --images or beside the JSON"

    def discover(self, sources: list[Path], options: dict[str, Any]) -> tuple[list[ImageItem], list[Skip]]:
        items, skips = [], []
        for path in sources:
            try:
                data = load_coco(path)
            except InputError as exc:
                skips.append(Skip(exc.path, "discover", exc.problem))
                continue
            roots = [Path(options["images"])] if options.get("images") else [path.parent, path.parent / "images"]
            for img in data["images"]:
                name = img.get("file_name", "")
                found = next((r / name for r in roots if (r / name).exists()), None)
                if found is None:
                    skips.append(Skip(str(roots[0] / name), "discover", f"image listed in {path.name} not found"))
                    continue
                items.append(ImageItem(found.stem, str(found), self.name, {"json": str(path)}, {"image_id": img["id"]}))
        return items, skips

    def load(self, item: ImageItem, width: int, height: int, crs: str | None, transform: tuple[float, ...]) -> LoadedAnnotations:
        path = Path(item.annotations["json"])
        data = load_coco(path)
        cats = {c["id"]: c.get("name", str(c["id"])) for c in data.get("categories", [])}
        image_id = item.options["image_id"]
        instances: list[SourceInstance] = []
        skips: list[Skip] = []
        for ann in data["annotations"]:
            if ann.get("image_id") != image_id:
                continue
            ref = f"{path.name}#ann{ann.get('id')}"
            where = f"{path}#annotation {ann.get('id')}"
            category = cats.get(ann.get("category_id"), str(ann.get("category_id")))
            seg = ann.get("segmentation")
            kind = "polygon"
            try:
                geom = _segmentation_geometry(seg, height, width) if seg else None
            except (ValueError, TypeError) as exc:
                skips.append(Skip(where, "annotations", f"bad segmentation: {exc}", "annotation"))
                continue
            box = None
            if geom is None and ann.get("bbox"):
                x, y, w, h = (float(v) for v in ann["bbox"])
                if w <= 0 or h <= 0:
                    skips.append(Skip(where, "annotations", "empty bbox", "annotation"))
                    continue
                geom, kind = shapely_box(x, y, x + w, y + h), "box"
                box = [x, y, x + w, y, x + w, y + h, x, y + h]
            if geom is None:
                skips.append(Skip(where, "annotations", "no segmentation and no bbox", "annotation"))
                continue
            inst_id = int(ann.get("id", len(instances) + 1))
            instances.append(SourceInstance(inst_id, category, geom, kind, ref, box, where))
        source = VectorAnnotations(instances, width, height)
        return LoadedAnnotations(source=source, skips=skips + source.skips, repairs=source.repairs)
