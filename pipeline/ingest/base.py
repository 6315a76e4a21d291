"""The adapter contract and the vector annotation source shared by the vector formats.

An adapter turns the user's SOURCE arguments into ``ImageItem``s (``discover``) and an item into an
``AnnotationSource`` (``load``). Items are small picklable records of paths, so a process pool or a
Prefect task can carry them; sources are opened where the work happens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import shapely
from shapely.strtree import STRtree

from ..errors import Skip
from ..geometry import clip_to_window, rasterize_local, repair
from ..records import SourceInstance, TileInstance
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


class VectorAnnotations:
    """Instances with outlines, clipped and rasterised per tile through an STR-tree lookup.

    Invalid outlines are repaired (``make_valid``) and counted in ``repairs``; outlines with no area
    or entirely outside the ``width × height`` image become counted ``skips``.
    """

    def __init__(self, instances: Iterable[SourceInstance], width: int, height: int) -> None:
        self.instances: list[SourceInstance] = []
        self.repairs = 0
        self.skips: list[Skip] = []
        frame = shapely.box(0, 0, width, height)
        for inst in instances:
            where = inst.where or inst.source_ref
            geom, repaired = repair(inst.geometry)
            self.repairs += int(repaired)
            if geom is None or geom.area <= 0:
                self.skips.append(Skip(where, "annotations", "degenerate geometry (no area)", "annotation"))
                continue
            if not geom.intersects(frame) or geom.intersection(frame).area <= 0:
                self.skips.append(Skip(where, "annotations", "annotation lies outside the image", "annotation"))
                continue
            inst.geometry = geom
            self.instances.append(inst)
        self._tree = STRtree([i.geometry for i in self.instances]) if self.instances else None

    def instances_in(self, tile: Tile) -> list[TileInstance]:
        if self._tree is None:
            return []
        window = shapely.box(tile.x0, tile.y0, tile.x1, tile.y1)
        hits = sorted(int(i) for i in self._tree.query(window, predicate="intersects"))
        out = []
        for idx in hits:
            inst = self.instances[idx]
            clip = clip_to_window(inst.geometry, tile.x0, tile.y0, tile.x1, tile.y1)
            if clip is None:
                continue
            mask = rasterize_local(clip.geometry, tile.width, tile.height)
            box = None
            if inst.prompt_box is not None:
                box = [v - (tile.x0 if k % 2 == 0 else tile.y0) for k, v in enumerate(inst.prompt_box)]
            out.append(
                TileInstance(
                    instance_id=inst.instance_id,
                    category=inst.category,
                    mask=mask,
                    visible_fraction=clip.visible_fraction,
                    truncated=clip.truncated,
                    geometry_kind=inst.geometry_kind,
                    source_ref=inst.source_ref,
                    prompt_box=box,
                )
            )
        return out

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
