"""Annotation adapters, one module per format, registered by name.

``ADAPTERS[name]`` gives the adapter for ``--format name``; every adapter yields the same records
(``ImageItem`` to find work, ``TileInstance`` per tile), so the rest of the pipeline never looks at
the source format. Adapter modules are imported when first asked for: preparing iSAID masks never loads
the vector formats' geometry stack (shapely clipping, GeoJSON, COCO parsing).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from .items import Adapter, ImageItem, LoadedAnnotations

# format name → (module, adapter class), in the order `geopixeld formats` lists them.
_REGISTRY: dict[str, tuple[str, str]] = {
    "isaid": (".isaid", "IsaidAdapter"),
    "coco": (".coco", "CocoAdapter"),
    "dota": (".dota", "DotaAdapter"),
    "boxes": (".boxes", "BoxesAdapter"),
    "geojson": (".geojson", "GeoJSONAdapter"),
    "raster": (".raster", "RasterAdapter"),
}


class _Adapters(Mapping[str, Adapter]):
    """Format name → adapter instance, each imported on first access."""

    def __init__(self) -> None:
        self._loaded: dict[str, Adapter] = {}

    def __getitem__(self, name: str) -> Adapter:
        if name not in self._loaded:
            module, cls = _REGISTRY[name]
            self._loaded[name] = getattr(importlib.import_module(module, __name__), cls)()
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_REGISTRY)

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __contains__(self, name: object) -> bool:
        return name in _REGISTRY


ADAPTERS: Mapping[str, Adapter] = _Adapters()


def get_adapter(name: str) -> Adapter:
    try:
        return ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; choose one of: {', '.join(ADAPTERS)}") from None


__all__ = ["ADAPTERS", "Adapter", "ImageItem", "LoadedAnnotations", "get_adapter"]
