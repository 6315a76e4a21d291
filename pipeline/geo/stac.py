"""STAC metadata of a release: ``stac/collection.json`` and one item per source image (needs pystac).

Built from the export's GeoParquet layers (:mod:`pipeline.geo.layers`), read image by image:

* item geometry and bbox: the union of the image's tile footprints in WGS 84 (``null`` for sources
  without a CRS, which STAC allows); ``datetime``: the source raster's acquisition time when it recorded
  one, otherwise the release's creation time with ``geopixeld:datetime_source`` = ``release`` (the
  acquisition time is unknown);
* projection extension: ``proj:code`` (or ``proj:wkt2``; ``null`` without a CRS), ``proj:shape`` and
  ``proj:transform`` of the source raster;
* label extension: ``label:type`` vector, ``label:properties`` [``category_name``], ``label:classes``,
  ``label:tasks`` [segmentation, caption], ``label:methods``, ``label:overviews`` (objects per class:
  distinct merge keys, i.e. an object cut by tile borders counts once);
* assets: ``labels`` (the instances GeoParquet), ``tiles`` (tile footprints GeoParquet), ``samples-*``
  (the split's GCG Parquet shards: tile images, captions, masks as RLE) and ``masks`` (the split's COCO
  instances file) when the export has them.

The collection holds the overall extent, the class list and per-class counts as summaries. Links are
relative (a self-contained catalog), so the folder can move with the release.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import shapely
from rasterio.warp import transform_geom
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from ..shards import parse_shard_path
from .errors import GeoError
from .groups import GroupedTable, image_order
from .layers import GEO_DIR, MERGE_KEY
from .parquet import read_geo_metadata

STAC_DIR = "stac"
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
LABEL_TASKS = ["segmentation", "caption"]


def _layers(export: Path) -> list[tuple[Path, Path, dict[str, Any]]]:
    """``(instances file, tiles file, geopixeld metadata)`` per coordinate system of the export."""
    out = []
    for inst in sorted((export / GEO_DIR).glob("instances*.parquet")):
        tiles = inst.with_name("tiles" + inst.name[len("instances"):])
        if tiles.exists():
            out.append((inst, tiles, read_geo_metadata(inst).get("geopixeld") or {}))
    return out


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _image_transform(tile: dict[str, Any]) -> list[float] | None:
    t = tile.get("transform")
    if not t or tile.get("source_crs") is None:
        return None
    a, b, c, d, e, f = t[:6]
    x0, y0 = tile["x0"], tile["y0"]
    return [a, b, c - a * x0 - b * y0, d, e, f - d * x0 - e * y0]


def _wgs84(geom: BaseGeometry, crs: str) -> BaseGeometry:
    return shape(transform_geom(crs, "EPSG:4326", mapping(geom)))


def _images(inst: Path, tiles: Path, layer_crs: str | None) -> Iterator[dict[str, Any]]:
    """Per image of one layer: footprint (WGS 84), shape, transform, split, time and objects per class."""
    order = image_order(tiles)
    tile_groups = GroupedTable(tiles, ["tile_id", "split", "x0", "y0", "x1", "y1", "acquired", "source_crs",
                                       "transform", "geometry"], order)
    inst_groups = iter(GroupedTable(inst, [MERGE_KEY, "category_name"], order))
    head = next(inst_groups, None)
    for image_id, table in tile_groups:
        rows = table.to_pylist()
        counts: Counter[str] = Counter()
        if head is not None and head[0] == image_id:
            objects = head[1].select([MERGE_KEY, "category_name"]).group_by([MERGE_KEY, "category_name"]).aggregate([])
            counts.update(v for v in objects.column("category_name").to_pylist() if v is not None)
            head = next(inst_groups, None)
        footprint = shapely.unary_union(shapely.from_wkb([r["geometry"] for r in rows]))
        source_crs = rows[0]["source_crs"]
        yield {
            "image_id": image_id,
            "geometry": _wgs84(footprint, layer_crs) if layer_crs else None,
            "source_crs": source_crs,
            "shape": [max(r["y1"] for r in rows), max(r["x1"] for r in rows)],
            "transform": _image_transform(rows[0]),
            "splits": sorted({r["split"] for r in rows if r["split"]}),
            "acquired": next((r["acquired"] for r in rows if r["acquired"]), None),
            "counts": counts,
            "tiles": len(rows),
        }


def write_stac(
    export_dir: str | Path,
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    created: str,
    description: str,
    license: str = "other",
) -> list[str]:
    """Write ``out_dir/stac/`` for the export; returns the written files relative to ``out_dir``.

    Args:
        export_dir: the export folder (its ``geo/`` layers, ``data/`` shards and ``coco/`` files).
        out_dir: the release folder (asset links are relative to it; usually holds a copy of the export).
        name / version: the release; the collection id is ``name`` and its version ``version``.
        created: ISO 8601 publish time (the datetime of items whose acquisition time is unknown).
        description: collection description.
        license: SPDX id, or ``other``.

    Raises:
        GeoError: pystac is not installed (``pip install 'geopixeld[geo]'``) or the export has no
            GeoParquet layers.
    """
    try:
        import pystac
        from pystac.extensions.projection import ProjectionExtension

        with warnings.catch_warnings():  # pystac marks the label extension "pilot"; it is what STAC has for labels
            warnings.simplefilter("ignore", DeprecationWarning)
            from pystac.extensions.label import (
                LabelClasses,
                LabelCount,
                LabelExtension,
                LabelOverview,
                LabelType,
            )
    except ImportError as exc:
        raise GeoError("STAC needs pystac: pip install 'geopixeld[geo]'") from exc
    export, out = Path(export_dir), Path(out_dir)
    layers = _layers(export)
    if not layers:
        raise GeoError(f"{export}: no GeoParquet layers under {GEO_DIR}/ (export with the 'geo' format)")
    released = _parse_time(created)
    files = sorted(p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file())
    shards: dict[str, list[str]] = {}
    for rel in files:
        shard = parse_shard_path(rel)
        if shard is not None:
            shards.setdefault(shard.split, []).append(rel)
    items: list[pystac.Item] = []
    totals: Counter[str] = Counter()
    for inst, tiles, meta in layers:
        layer_crs = meta.get("crs")
        for image in _images(inst, tiles, layer_crs):
            geom = image["geometry"]
            when = _parse_time(image["acquired"]) if image["acquired"] else released
            item = pystac.Item(
                id=image["image_id"],
                geometry=mapping(geom) if geom is not None else None,
                bbox=list(geom.bounds) if geom is not None else None,
                datetime=when,
                properties={
                    "geopixeld:datetime_source": "raster" if image["acquired"] else "release",
                    "geopixeld:splits": image["splits"],
                    "geopixeld:tiles": image["tiles"],
                    "geopixeld:coordinates": "crs" if layer_crs else "pixel",
                },
            )
            proj = ProjectionExtension.ext(item, add_if_missing=True)
            source_crs = image["source_crs"]
            if source_crs and re.fullmatch(r"EPSG:\d+", source_crs):
                proj.code = source_crs
            elif source_crs:
                proj.code = None
                proj.wkt2 = source_crs
            else:
                proj.code = None
            proj.shape = image["shape"]
            if image["transform"]:
                proj.transform = image["transform"]
            counts = image["counts"]
            totals.update(counts)
            label = LabelExtension.ext(item, add_if_missing=True)
            label.apply(
                label_description="Instance outlines (category_name) with GCG captions grounding them "
                "(phrase_index into the sample's [SEG] masks), GeoPixelD style, built with geopixeld.",
                label_type=LabelType.VECTOR,
                label_properties=["category_name"],
                label_classes=[LabelClasses.create(classes=sorted(counts), name="category_name")],
                label_tasks=list(LABEL_TASKS),
                label_methods=["manual", "automated"],
                label_overviews=[LabelOverview.create(
                    property_key="category_name",
                    counts=[LabelCount.create(name=k, count=v) for k, v in sorted(counts.items())],
                )],
            )
            _add_assets(pystac, item, inst, tiles, export, image["splits"], shards, files)
            items.append(item)
    collection = _collection(pystac, name, version, description, license, items, totals, released)
    for item in items:
        collection.add_item(item)
    return _save(pystac, collection, export, out)


def _href(path: Path, export: Path) -> str:
    """Asset href relative to an item file ``stac/{id}/{id}.json`` in the release folder."""
    return "../../" + path.relative_to(export).as_posix()


def _add_assets(pystac: Any, item: Any, inst: Path, tiles: Path, export: Path, splits: list[str],
                shards: dict[str, list[str]], files: list[str]) -> None:
    item.add_asset("labels", pystac.Asset(
        href=_href(inst, export), media_type=PARQUET_MEDIA_TYPE, roles=["labels"],
        title="Instance pieces (GeoParquet); merge pieces by object_id",
        extra_fields={"geopixeld:filter": f"image_id == {item.id!r}"}))
    item.add_asset("tiles", pystac.Asset(
        href=_href(tiles, export), media_type=PARQUET_MEDIA_TYPE, roles=["metadata"],
        title="Tile footprints (GeoParquet)"))
    for split in splits:
        for k, rel in enumerate(shards.get(split, [])):
            item.add_asset(f"samples-{split}-{k}", pystac.Asset(
                href="../../" + rel, media_type=PARQUET_MEDIA_TYPE, roles=["data", "labels"],
                title=f"GCG samples of split {split}: tile images (PNG), captions, [SEG] masks (COCO RLE)"))
        coco = f"coco/instances_{split}.json"
        if coco in files:
            item.add_asset(f"masks-{split}" if len(splits) > 1 else "masks", pystac.Asset(
                href="../../" + coco, media_type=pystac.MediaType.JSON, roles=["labels"],
                title=f"Masks of split {split} (COCO instances, RLE)"))


def _collection(pystac: Any, name: str, version: str, description: str, license: str, items: list[Any],
                totals: Counter[str], released: datetime) -> Any:
    boxes = [i.bbox for i in items if i.bbox]
    bbox = ([min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
            if boxes else [-180.0, -90.0, 180.0, 90.0])
    times = [i.datetime for i in items if i.datetime] or [released]
    collection = pystac.Collection(
        id=name,
        description=description,
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[min(times), max(times)]])),
        license=license if re.fullmatch(r"[A-Za-z0-9.+-]+", license or "") else "other",
        title=f"{name} {version}",
        extra_fields={"version": version, "geopixeld:objects_per_class": dict(sorted(totals.items()))},
        summaries=pystac.Summaries({
            "label:type": ["vector"],
            "label:tasks": list(LABEL_TASKS),
            "label:classes": [{"name": "category_name", "classes": sorted(totals)}],
        }),
    )
    return collection


def _save(pystac: Any, collection: Any, export: Path, out: Path) -> list[str]:
    tmp = out / f"{STAC_DIR}-partial-{uuid.uuid4().hex[:8]}"
    final = out / STAC_DIR
    try:
        collection.normalize_hrefs(str(tmp) + "/")
        collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        for path in tmp.rglob("*.json"):  # stable key order, UTF-8
            path.write_text(json.dumps(json.loads(path.read_text()), indent=2, ensure_ascii=False) + "\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(p.relative_to(out).as_posix() for p in final.rglob("*") if p.is_file())


def read_items_counts(collection_path: str | Path) -> dict[str, int]:
    """Objects per class summed over a collection's items (``label:overviews``), for checks."""
    import pystac

    collection = pystac.Collection.from_file(str(collection_path))
    totals: Counter[str] = Counter()
    for item in collection.get_items(recursive=True):
        for overview in item.properties.get("label:overviews", []):
            for c in overview.get("counts", []):
                totals[c["name"]] += int(c["count"])
    return dict(totals)


__all__ = ["STAC_DIR", "read_items_counts", "write_stac"]
