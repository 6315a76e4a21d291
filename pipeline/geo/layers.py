"""The GeoParquet layers of an export: ``geo/instances.parquet`` and ``geo/tiles.parquet``.

:func:`write_geo_layers` reads a dataset folder's ``tiles.parquet``, ``instances.parquet`` and (when
present) ``samples.parquet`` image by image (:mod:`pipeline.geo.groups`; never a whole table in memory) and
writes, through :class:`~pipeline.geo.parquet.GeoParquetWriter`:

* instances: one row per instance piece (an instance clipped to one tile) with its outline
  (:mod:`pipeline.geo.vectorize`) in the source raster's CRS, or in source-image pixels when the source
  has none; ``object_id`` = ``{image_id}#{instance_id}`` is the merge key: the pieces of one object cut by
  tile borders (and repeated in overlapping tiles) share it, and their union is the object;
* tiles: one row per tile with its footprint.

Coordinate systems: sources in one CRS give one pair of files. Several CRSs (or georeferenced and
pixel-only sources together) give one pair per CRS, named ``instances-{slug}.parquet`` (``epsg-32617``,
``pixel``), unless ``target_crs`` (``--geo-crs EPSG:n``) reprojects every georeferenced source into one
CRS; sources without a CRS cannot be reprojected and keep their own ``pixel`` pair.

Bad input is counted, never fatal: empty masks and geometries with no area left after repair or
reprojection (``degenerate``), instances of unknown tiles or images, failed reprojections.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from shapely.geometry.base import BaseGeometry
from tqdm import tqdm

from . import crs as crs_utils
from .errors import GeoError
from .groups import Aligned, GroupedTable, image_order
from .parquet import GeoParquetWriter
from .vectorize import clean, footprint, mask_outline, tile_affine

GEO_DIR = "geo"
MERGE_KEY = "object_id"

INSTANCE_ATTRIBUTES = pa.schema(
    [
        (MERGE_KEY, pa.string()),
        ("image_id", pa.string()),
        ("tile_id", pa.string()),
        ("instance_id", pa.int64()),
        ("category", pa.string()),
        ("category_name", pa.string()),
        ("split", pa.string()),
        ("sample_id", pa.string()),
        ("phrase_index", pa.int32()),
        ("phrase", pa.string()),
        ("area_px", pa.float64()),
        ("area_m2", pa.float64()),
        ("visible_fraction", pa.float64()),
        ("truncated", pa.bool_()),
        ("geometry_kind", pa.string()),
        ("mask_source", pa.string()),
        ("source_ref", pa.string()),
        ("source_crs", pa.string()),
    ]
)

TILE_ATTRIBUTES = pa.schema(
    [
        ("tile_id", pa.string()),
        ("image_id", pa.string()),
        ("split", pa.string()),
        ("sample_id", pa.string()),
        ("source_path", pa.string()),
        ("x0", pa.int32()),
        ("y0", pa.int32()),
        ("x1", pa.int32()),
        ("y1", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("gsd", pa.float64()),
        ("n_instances", pa.int32()),
        ("tile_path", pa.string()),
        ("acquired", pa.string()),
        ("source_crs", pa.string()),
        ("transform", pa.list_(pa.float64())),
    ]
)

_TILE_COLUMNS = ["tile_id", "image_id", "source_path", "x0", "y0", "x1", "y1", "width", "height", "crs",
                 "transform", "gsd", "tile_path"]
_INSTANCE_COLUMNS = ["tile_id", "image_id", "instance_id", "category", "category_name", "rle", "area",
                     "visible_fraction", "truncated", "geometry_kind", "mask_source", "source_ref"]
PIXEL_NOTE = ("source-image pixels: x to the right, y down, origin at the image's top-left pixel corner "
              "(tile offset added); the source has no CRS")


@dataclass
class GeoConfig:
    """Settings of the geo layers.

    Attributes:
        target_crs: reproject georeferenced sources into this CRS (``EPSG:n``, WKT); ``None`` keeps each
            source's CRS, one file per CRS.
        batch_rows: rows per Parquet row group (and per in-memory batch).
    """

    target_crs: str | None = None
    batch_rows: int = 4096


@dataclass
class GeoLayer:
    """One coordinate system's pair of files: ``crs`` (``None``: pixels), paths relative to the export."""

    slug: str
    crs: str | None
    instances: str
    tiles: str
    instance_rows: int = 0
    tile_rows: int = 0
    source_crs: list[str] = field(default_factory=list)


@dataclass
class GeoSummary:
    """What :func:`write_geo_layers` wrote and dropped.

    Attributes:
        layers: one entry per coordinate system.
        dropped: counts by reason (``empty_mask``, ``degenerate``, ``reprojection_failed``,
            ``unknown_tile``, ``unknown_image``, ``tile_without_sample``, ``rejected_tile`` (tiles) and
            ``instances_on_left_out_tiles``).
        repaired: geometries made valid by ``make_valid`` (kept).
        read_modes: per table, ``single-pass`` or ``per-image``.
    """

    layers: list[GeoLayer]
    dropped: dict[str, int]
    repaired: int
    read_modes: dict[str, str]
    target_crs: str | None

    @property
    def files(self) -> list[str]:
        return [p for layer in self.layers for p in (layer.instances, layer.tiles)]

    def text(self) -> str:
        lines = []
        for layer in self.layers:
            where = layer.crs if layer.crs is None or len(layer.crs) < 40 else layer.slug
            lines.append(f"  geo: {layer.instances} ({layer.instance_rows} pieces), {layer.tiles} "
                         f"({layer.tile_rows} tiles), CRS {where or 'none (pixel coordinates)'}")
        if self.dropped:
            lines.append("  geo dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())))
        if self.repaired:
            lines.append(f"  geo repaired geometries: {self.repaired}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _groups(tiles_path: Path, target: str | None) -> dict[str | None, set[str]]:
    """Output CRS (``None`` = pixels) → the source CRSs that go there, from the ``crs`` column (streamed)."""
    out: dict[str | None, set[str]] = {}
    for batch in pq.ParquetFile(tiles_path).iter_batches(columns=["crs"], batch_size=65536):
        for value in pc.unique(batch.column(0)).to_pylist():
            key = None if value is None else (target or value)
            out.setdefault(key, set())
            if value is not None:
                out[key].add(value)
    return out


def acquired(source_path: str | None) -> str | None:
    """Acquisition time from the source raster's ``TIFFTAG_DATETIME`` (RFC 3339, taken as UTC), if any."""
    if not source_path or not Path(source_path).is_file():
        return None
    try:
        import rasterio

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rasterio.open(source_path) as src:
                text = src.tags().get("TIFFTAG_DATETIME")
    except Exception:  # noqa: BLE001 - an unreadable source only loses the date
        return None
    if not text:
        return None
    try:
        return datetime.strptime(text.strip(), "%Y:%m:%d %H:%M:%S").strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None


def review_of(review: Any, tile_id: str) -> tuple[str | None, list[dict[str, Any]] | None]:
    """``(status, fixed phrases)`` of a tile from a mapping of decision dicts or a
    :class:`~pipeline.export.decisions.ReviewDecisions` (``get`` → ``.status``, ``fixed(tile_id)``)."""
    decision = review.get(tile_id) if review is not None else None
    if decision is None:
        return None, None
    if isinstance(decision, Mapping):
        status = decision.get("review_status")
        return status, decision.get("phrases") if status == "fixed" else None
    status = getattr(decision, "status", None)
    if status == "fixed" and hasattr(review, "fixed"):
        return status, (review.fixed(tile_id) or {}).get("phrases")
    return status, None


def _phrases_by_instance(phrases: list[dict[str, Any]] | None) -> dict[int, tuple[int, str]]:
    """Instance id → (index of the first ``[SEG]`` phrase grounding it, phrase text)."""
    out: dict[int, tuple[int, str]] = {}
    for k, p in enumerate(phrases or []):
        for iid in p.get("instance_ids") or []:
            out.setdefault(int(iid), (k, p.get("text") or ""))
    return out


class _Sink:
    """The two writers of one coordinate system with their row buffers."""

    def __init__(self, layer: GeoLayer, root: Path, batch_rows: int, crs_json: dict[str, Any] | None) -> None:
        self.layer = layer
        self.batch_rows = batch_rows
        base = {"coordinates": "pixel" if layer.crs is None else "crs", "crs": layer.crs,
                "source_crs": layer.source_crs}
        if layer.crs is None:
            base["pixel_coordinates"] = PIXEL_NOTE
        self.instances = GeoParquetWriter(root / layer.instances, INSTANCE_ATTRIBUTES, crs_json, {
            **base, "layer": "instances", "merge_key": MERGE_KEY,
            "merge": f"union the geometries of the rows sharing {MERGE_KEY} (= image_id#instance_id)",
            "area_m2": "area_px × gsd² (null when the GSD is unknown)"})
        self.tiles = GeoParquetWriter(root / layer.tiles, TILE_ATTRIBUTES, crs_json, {**base, "layer": "tiles"})
        self.inst_rows: list[dict[str, Any]] = []
        self.inst_geoms: list[BaseGeometry] = []
        self.tile_rows: list[dict[str, Any]] = []
        self.tile_geoms: list[BaseGeometry] = []

    def add_instance(self, row: dict[str, Any], geom: BaseGeometry) -> None:
        self.inst_rows.append(row)
        self.inst_geoms.append(geom)
        if len(self.inst_rows) >= self.batch_rows:
            self.flush()

    def add_tile(self, row: dict[str, Any], geom: BaseGeometry) -> None:
        self.tile_rows.append(row)
        self.tile_geoms.append(geom)
        if len(self.tile_rows) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        self.instances.write(self.inst_rows, self.inst_geoms)
        self.tiles.write(self.tile_rows, self.tile_geoms)
        self.layer.instance_rows = self.instances.rows
        self.layer.tile_rows = self.tiles.rows
        self.inst_rows, self.inst_geoms, self.tile_rows, self.tile_geoms = [], [], [], []

    def close(self, dropped: Mapping[str, int]) -> None:
        self.flush()
        self.instances.project["dropped"] = {k: v for k, v in sorted(dropped.items()) if v}
        self.instances.close()
        self.tiles.close()

    def abort(self) -> None:
        self.instances.abort()
        self.tiles.abort()


def write_geo_layers(
    data_dir: str | Path,
    out_dir: str | Path,
    config: GeoConfig | None = None,
    split_of: Mapping[str, str] | None = None,
    review: Any = None,
    progress: bool = False,
) -> GeoSummary:
    """Write ``OUT/geo/`` from the dataset folder ``DATA`` (module docstring); returns what was written.

    Args:
        data_dir: a folder written by ``geopixeld prepare`` (and ``describe``).
        out_dir: the export folder; files go to ``out_dir/geo/``.
        config: target CRS and batch size.
        split_of: image id → split (rows carry it; ``None`` when not given).
        review: the review decisions (:func:`review_of`): ``rejected`` tiles are left out, ``fixed``
            decisions' phrases replace the sample's.
        progress: show a progress bar over images.

    Raises:
        GeoError: missing tables or an invalid target CRS.
    """
    import rasterio

    with rasterio.Env():  # one GDAL environment for every polygonize call, not one per mask
        return _write_layers(data_dir, out_dir, config, split_of, review, progress)


def _write_layers(
    data_dir: str | Path,
    out_dir: str | Path,
    config: GeoConfig | None = None,
    split_of: Mapping[str, str] | None = None,
    review: Any = None,
    progress: bool = False,
) -> GeoSummary:
    """The body of :func:`write_geo_layers`."""
    config = config or GeoConfig()
    data, root = Path(data_dir), Path(out_dir)
    tiles_path, inst_path, samples_path = (data / f"{n}.parquet" for n in ("tiles", "instances", "samples"))
    for path in (tiles_path, inst_path):
        if not path.exists():
            raise GeoError(f"{path}: missing — run `geopixeld prepare` first")
    target = crs_utils.normalise(config.target_crs) if config.target_crs else None
    groups = _groups(tiles_path, target)
    several = len(groups) > 1
    layers: dict[str | None, GeoLayer] = {}
    for key in sorted(groups, key=lambda k: (k is None, k or "")):
        name = f"-{crs_utils.slug(key)}" if several else ""
        layers[key] = GeoLayer(crs_utils.slug(key), key, f"{GEO_DIR}/instances{name}.parquet",
                               f"{GEO_DIR}/tiles{name}.parquet", source_crs=sorted(groups[key]))
    order = image_order(tiles_path)
    tiles = GroupedTable(tiles_path, _TILE_COLUMNS, order)
    instances = GroupedTable(inst_path, _INSTANCE_COLUMNS, order)
    samples = GroupedTable(samples_path, ["tile_id", "phrases"], order) if samples_path.exists() else None
    dropped: Counter[str] = Counter()
    dropped["unknown_image"] += instances.unknown_rows
    repaired = 0
    sinks: dict[str | None, _Sink] = {}
    try:
        for key, layer in layers.items():
            sinks[key] = _Sink(layer, root, config.batch_rows, crs_utils.projjson(key) if key else None)
        reprojectors: dict[str, Any] = {}
        inst_rows, sample_rows = Aligned(instances), Aligned(samples)
        for image_id, tile_table in tqdm(tiles, total=len(order), desc="geo", unit="image", disable=not progress):
            split = split_of.get(image_id) if split_of else None
            tile_rows = tile_table.to_pylist()
            by_tile = {t["tile_id"]: t for t in tile_rows}
            phrases: dict[str, dict[int, tuple[int, str]]] | None = None
            sample_table = sample_rows.take(image_id)
            if samples is not None:
                phrases = {}
                for s in sample_table.to_pylist() if sample_table is not None else []:
                    status, fixed = review_of(review, s["tile_id"])
                    if status == "rejected":
                        continue
                    phrases[s["tile_id"]] = _phrases_by_instance(fixed if fixed is not None else s["phrases"])
            kept: set[str] = set()
            counts: Counter[str] = Counter()
            when = acquired(tile_rows[0]["source_path"]) if tile_rows else None
            for t in tile_rows:
                if phrases is not None and t["tile_id"] not in phrases:
                    rejected = review_of(review, t["tile_id"])[0] == "rejected"
                    dropped["rejected_tile" if rejected else "tile_without_sample"] += 1
                    continue
                kept.add(t["tile_id"])
            table = inst_rows.take(image_id)
            for start in range(0, table.num_rows if table is not None else 0, config.batch_rows):
                assert table is not None
                for r in table.slice(start, config.batch_rows).to_pylist():
                    tile = by_tile.get(r["tile_id"])
                    if tile is None:
                        dropped["unknown_tile"] += 1
                        continue
                    if r["tile_id"] not in kept:
                        dropped["instances_on_left_out_tiles"] += 1
                        continue
                    geom, note = _instance_geometry(r, tile, target, reprojectors)
                    if geom is None:
                        dropped[note or "degenerate"] += 1
                        continue
                    repaired += note == "repaired"
                    counts[r["tile_id"]] += 1
                    grounded = (phrases or {}).get(r["tile_id"], {}).get(int(r["instance_id"]))
                    gsd = tile["gsd"]
                    sinks[_key(tile["crs"], target)].add_instance({
                        MERGE_KEY: f"{image_id}#{r['instance_id']}",
                        "image_id": image_id,
                        "tile_id": r["tile_id"],
                        "instance_id": r["instance_id"],
                        "category": r["category"],
                        "category_name": r["category_name"],
                        "split": split,
                        "sample_id": r["tile_id"] if phrases is not None else None,
                        "phrase_index": grounded[0] if grounded else None,
                        "phrase": grounded[1] if grounded else None,
                        "area_px": r["area"],
                        "area_m2": r["area"] * gsd * gsd if gsd and r["area"] is not None else None,
                        "visible_fraction": r["visible_fraction"],
                        "truncated": r["truncated"],
                        "geometry_kind": r["geometry_kind"],
                        "mask_source": r["mask_source"],
                        "source_ref": r["source_ref"],
                        "source_crs": tile["crs"],
                    }, geom)
            for t in tile_rows:
                if t["tile_id"] not in kept:
                    continue
                geom, note = _tile_geometry(t, target, reprojectors)
                if geom is None:
                    dropped[f"tile_{note}"] += 1
                    continue
                sinks[_key(t["crs"], target)].add_tile({
                    "tile_id": t["tile_id"], "image_id": image_id, "split": split,
                    "sample_id": t["tile_id"] if phrases is not None else None,
                    "source_path": t["source_path"], "x0": t["x0"], "y0": t["y0"], "x1": t["x1"], "y1": t["y1"],
                    "width": t["width"], "height": t["height"], "gsd": t["gsd"],
                    "n_instances": counts[t["tile_id"]], "tile_path": t["tile_path"], "acquired": when,
                    "source_crs": t["crs"], "transform": t["transform"],
                }, geom)
        for sink in sinks.values():
            sink.close(dropped)
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        raise
    modes = {"tiles": tiles.mode, "instances": instances.mode}
    if samples is not None:
        modes["samples"] = samples.mode
    return GeoSummary(list(layers.values()), {k: v for k, v in sorted(dropped.items()) if v}, repaired, modes, target)


def _key(source_crs: str | None, target: str | None) -> str | None:
    return None if source_crs is None else (target or source_crs)


def _project(geom: BaseGeometry, source_crs: str | None, target: str | None,
             reprojectors: dict[str, Any]) -> tuple[BaseGeometry | None, str | None]:
    if source_crs is None or target is None or source_crs == target:
        return geom, None
    if source_crs not in reprojectors:
        reprojectors[source_crs] = crs_utils.reprojector(source_crs, target)
    try:
        return reprojectors[source_crs](geom), None
    except Exception:  # noqa: BLE001 - one geometry PROJ cannot map is counted, not fatal
        return None, "reprojection_failed"


def _instance_geometry(r: dict[str, Any], tile: dict[str, Any], target: str | None,
                       reprojectors: dict[str, Any]) -> tuple[BaseGeometry | None, str | None]:
    try:
        outline = mask_outline(r["rle"], tile_affine(tile, tile["crs"] is not None))
    except Exception:  # noqa: BLE001 - an undecodable mask is one bad row
        return None, "bad_mask"
    if outline is None:
        return None, "empty_mask"
    geom, note = _project(outline, tile["crs"], target, reprojectors)
    if geom is None:
        return None, note
    return clean(geom)


def _tile_geometry(t: dict[str, Any], target: str | None,
                   reprojectors: dict[str, Any]) -> tuple[BaseGeometry | None, str | None]:
    outline = footprint(t["width"], t["height"], tile_affine(t, t["crs"] is not None))
    geom, note = _project(outline, t["crs"], target, reprojectors)
    if geom is None:
        return None, note
    return clean(geom)


__all__ = ["GEO_DIR", "MERGE_KEY", "GeoConfig", "GeoError", "GeoLayer", "GeoSummary", "write_geo_layers"]
