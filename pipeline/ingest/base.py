"""The vector annotation source shared by the vector formats, and (re-exported) the adapter contract.

The contract itself (``ImageItem``, ``AnnotationSource``, ``Adapter``...) lives in
``pipeline.ingest.items``, which needs no geometry library.
"""

from __future__ import annotations

from collections.abc import Iterable

import shapely
from shapely.strtree import STRtree

from ..errors import Skip
from ..geometry import clip_to_window, rasterize_local, repair
from ..records import SourceInstance, TileInstance
from ..tiling import Tile
from .items import (
    IMAGE_SUFFIXES,
    Adapter,
    AnnotationSource,
    ImageItem,
    LoadedAnnotations,
    NoAnnotations,
    image_files,
)

__all__ = [
    "IMAGE_SUFFIXES", "Adapter", "AnnotationSource", "ImageItem", "LoadedAnnotations", "NoAnnotations",
    "VectorAnnotations", "image_files",
]

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
