"""Box CSV: ``image_path,xmin,ymin,xmax,ymax,label`` (the DeepForest / NEON convention).

``image_path`` is relative to the CSV's folder (or absolute). Boxes become rectangle polygons with
``geometry_kind = "box"``; the corners are kept as the SAM prompt box.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

from shapely.geometry import box as shapely_box

from ..errors import InputError, Skip
from ..records import SourceInstance
from .base import ImageItem, LoadedAnnotations, VectorAnnotations

REQUIRED = ("image_path", "xmin", "ymin", "xmax", "ymax", "label")


def read_box_csv(path: Path) -> dict[str, list[tuple[int, dict[str, str]]]]:
    """Rows grouped by image path, each with its 1-based data row number."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(path, f"missing column(s) {missing}; expected {','.join(REQUIRED)}")
            groups: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
            for n, row in enumerate(reader, start=1):
                groups[row["image_path"]].append((n, row))
            return groups
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc})") from None


class BoxesAdapter:
    name = "boxes"
    help = "box CSV files: image_path,xmin,ymin,xmax,ymax,label (image paths relative to the CSV)"

    def discover(self, sources: list[Path], options: dict[str, Any]) -> tuple[list[ImageItem], list[Skip]]:
        items, skips = [], []
        csvs = [q for s in sources for q in (sorted(s.glob("*.csv")) if s.is_dir() else [s])]
        for path in csvs:
            try:
                groups = read_box_csv(path)
            except InputError as exc:
                skips.append(Skip(exc.path, "discover", exc.problem))
                continue
            for image_path in groups:
                img = Path(image_path) if Path(image_path).is_absolute() else path.parent / image_path
                if not img.exists():
                    skips.append(Skip(str(img), "discover", f"image named in {path.name} not found"))
                    continue
                items.append(ImageItem(img.stem, str(img), self.name, {"csv": str(path), "key": image_path}))
        return items, skips

    def load(self, item: ImageItem, width: int, height: int, crs: str | None, transform: tuple[float, ...]) -> LoadedAnnotations:
        path = Path(item.annotations["csv"])
        rows = read_box_csv(path)[item.annotations["key"]]
        instances, skips = [], []
        for n, row in rows:
            where = f"{path}:{n + 1}"  # +1 for the header line
            try:
                x0, y0, x1, y1 = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError):
                skips.append(Skip(where, "annotations", "non-numeric box coordinates", "annotation"))
                continue
            if x1 <= x0 or y1 <= y0:
                skips.append(Skip(where, "annotations", "empty box (max ≤ min)", "annotation"))
                continue
            corners = [x0, y0, x1, y0, x1, y1, x0, y1]
            label = row["label"] or "object"
            ref = f"{path.name}:{n + 1}"
            instances.append(SourceInstance(n, label, shapely_box(x0, y0, x1, y1), "box", ref, corners, where))
        source = VectorAnnotations(instances, width, height)
        return LoadedAnnotations(source=source, skips=skips + source.skips, repairs=source.repairs)
