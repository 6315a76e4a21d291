"""Annotation adapters, one module per format, registered by name.

``ADAPTERS[name]`` gives the adapter for ``--format name``; every adapter yields the same records
(``ImageItem`` to find work, ``TileInstance`` per tile), so the rest of the pipeline never looks at
the source format.
"""

from __future__ import annotations

from .base import Adapter, ImageItem, LoadedAnnotations
from .boxes import BoxesAdapter
from .coco import CocoAdapter
from .dota import DotaAdapter
from .geojson import GeoJSONAdapter
from .isaid import IsaidAdapter
from .raster import RasterAdapter

ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in (IsaidAdapter(), CocoAdapter(), DotaAdapter(), BoxesAdapter(), GeoJSONAdapter(), RasterAdapter())
}


def get_adapter(name: str) -> Adapter:
    try:
        return ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; choose one of: {', '.join(ADAPTERS)}") from None


__all__ = ["ADAPTERS", "Adapter", "ImageItem", "LoadedAnnotations", "get_adapter"]
