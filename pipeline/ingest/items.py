"""The adapter contract: the records and protocols every annotation format shares (no geometry library).

An adapter turns the user's SOURCE arguments into ``ImageItem``s (``discover``) and an item into an
``AnnotationSource`` (``load``). Items are small picklable records of paths, so a process pool or a
Prefect task can carry them; sources are opened where the work happens. Vector formats add
``VectorAnnotations`` (``pipeline.ingest.base``), which needs shapely; the mask and raster formats
import only this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import Skip
from ..records import TileInstance
from ..tiling import Tile

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".vrt", ".img")


@dataclass(frozen=True)
class ImageItem:
    """One source image and where its annotations are.

    Attributes:
        image_id: the id used in tile names (the image's file stem).
        image_path: the raster.
        format: the adapter name.
        annotations: adapter-specific annotation paths (``labels``, ``id_mask``, ``json``...).
        options: adapter-specific small values (a COCO image id, a DOTA gsd...).
    """

    image_id: str
    image_path: str
    format: str
    annotations: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedAnnotations:
    """What ``Adapter.load`` returns: the per-tile source, skips met while reading, a GSD hint."""

    source: AnnotationSource
    skips: list[Skip] = field(default_factory=list)
    gsd: float | None = None
    repairs: int = 0


class AnnotationSource(Protocol):
    """Yields the instances visible in a tile. Tiles are asked for in row-major order."""

    def instances_in(self, tile: Tile) -> list[TileInstance]: ...

    def close(self) -> None: ...


class Adapter(Protocol):
    name: str
    help: str

    def discover(self, sources: list[Path], options: dict[str, Any]) -> tuple[list[ImageItem], list[Skip]]: ...

    def load(self, item: ImageItem, width: int, height: int, crs: str | None, transform: tuple[float, ...]) -> LoadedAnnotations: ...


class NoAnnotations:
    """Imagery alone (the ``raster`` format): no instances."""

    def instances_in(self, tile: Tile) -> list[TileInstance]:
        return []

    def close(self) -> None:
        return None


def image_files(paths: Iterable[Path]) -> list[Path]:
    """Image files among ``paths`` (folders searched one level deep), sorted."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(p)
    return found
