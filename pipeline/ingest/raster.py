"""Imagery alone (``--format raster``): tiles without instances, for automatic masks later (SAM)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import Skip
from .items import ImageItem, LoadedAnnotations, NoAnnotations, image_files


class RasterAdapter:
    name = "raster"
    help = "imagery only (GeoTIFF/COG, PNG, JPEG files or folders); no annotations"

    def discover(self, sources: list[Path], options: dict[str, Any]) -> tuple[list[ImageItem], list[Skip]]:
        items, skips = [], []
        for path in image_files(sources):
            if not path.exists():
                skips.append(Skip(str(path), "discover", "file not found"))
                continue
            items.append(ImageItem(path.stem, str(path), self.name))
        return items, skips

    def load(self, item: ImageItem, width: int, height: int, crs: str | None, transform: tuple[float, ...]) -> LoadedAnnotations:
        return LoadedAnnotations(source=NoAnnotations())
