"""DOTA: ``images/P.png`` + ``labelTxt/P.txt`` (or both side by side).

Label files may start with ``imagesource:...`` and ``gsd:<metres per pixel or null>``; then one object
per line: ``x1 y1 x2 y2 x3 y3 x4 y4 class difficult`` (an oriented box in image pixels). Boxes become
polygons (``geometry_kind = "obb"``) and the corners are kept as the SAM prompt box.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError, Skip
from ..geometry import quad
from ..records import SourceInstance
from .base import IMAGE_SUFFIXES, ImageItem, LoadedAnnotations, VectorAnnotations


def _label_for(image: Path) -> Path | None:
    candidates = [image.with_suffix(".txt"), image.parent.parent / "labelTxt" / f"{image.stem}.txt"]
    return next((c for c in candidates if c.exists()), None)


def parse_label_file(path: Path, width: int, height: int) -> tuple[list[SourceInstance], list[Skip], float | None]:
    """Instances, skipped lines (with ``file:line`` and the reason) and the ``gsd:`` header."""
    instances: list[SourceInstance] = []
    skips: list[Skip] = []
    gsd: float | None = None
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise InputError(path, f"cannot read labels ({exc})") from None
    n = 0
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        key, _, value = line.partition(":")
        if key in ("imagesource", "gsd") and _:
            if key == "gsd" and value.strip().lower() not in ("null", "none", ""):
                try:
                    gsd = float(value)
                except ValueError:
                    skips.append(Skip(f"{path}:{lineno}", "annotations", f"unreadable gsd {value!r}", "annotation"))
            continue
        parts = line.split()
        ref = f"{path.name}:{lineno}"
        if len(parts) < 9:
            skips.append(Skip(f"{path}:{lineno}", "annotations", "expected 8 coordinates and a class", "annotation"))
            continue
        try:
            coords = [float(v) for v in parts[:8]]
        except ValueError:
            skips.append(Skip(f"{path}:{lineno}", "annotations", "non-numeric coordinates", "annotation"))
            continue
        n += 1
        instances.append(SourceInstance(n, parts[8], quad(coords), "obb", ref, coords, f"{path}:{lineno}"))
    return instances, skips, gsd


class DotaAdapter:
    name = "dota"
    help = "DOTA: a folder with images/ and labelTxt/ (or images beside their .txt labels), or image paths"

    def discover(self, sources: list[Path], options: dict[str, Any]) -> tuple[list[ImageItem], list[Skip]]:
        images: list[Path] = []
        skips: list[Skip] = []
        for src in sources:
            if src.is_dir():
                folder = src / "images" if (src / "images").is_dir() else src
                images.extend(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
            elif src.exists():
                images.append(src)
            else:
                skips.append(Skip(str(src), "discover", "file not found"))
        items = []
        for img in images:
            label = _label_for(img)
            if label is None:
                skips.append(Skip(str(img), "discover", "no labelTxt file found for this image"))
                continue
            items.append(ImageItem(img.stem, str(img), self.name, {"labels": str(label)}))
        return items, skips

    def load(self, item: ImageItem, width: int, height: int, crs: str | None, transform: tuple[float, ...]) -> LoadedAnnotations:
        instances, skips, gsd = parse_label_file(Path(item.annotations["labels"]), width, height)
        source = VectorAnnotations(instances, width, height)
        return LoadedAnnotations(source=source, skips=skips + source.skips, gsd=gsd, repairs=source.repairs)
