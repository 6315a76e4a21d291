"""Export: described (and reviewed) samples → GCG Parquet shards, COCO, GeoPixel and GLaMM formats.

``export(DIR, EXPORT)`` reads ``DIR/samples.parquet`` and ``DIR/tiles.parquet``, applies review
decisions (rejected samples are left out, fixed ones use the fixed text and masks, every row carries its
review state; read by :mod:`pipeline.export.decisions` from a Parquet file or the review database),
assigns deterministic splits by source image and writes::

    EXPORT/README.md                           dataset card (HF `configs:` YAML)
    EXPORT/data/{split}-{i:05d}-of-{n:05d}.parquet
    EXPORT/images/{split}/{tile_id}.png        tile images, written once (COCO/GLaMM file_name root)
    EXPORT/coco/instances_{split}.json, captions_{split}.json          per-class COCO (+ phrase fields)
    EXPORT/coco/{split}_gcg_coco_mask_gt.json, {split}_gcg_coco_caption_gt.json   GLaMM's GCG GT form
    EXPORT/geopixel/data.txt                   GeoPixel's training list (the train split)
    EXPORT/geopixel/{prefix}/GeoPixelD_{split}.json, {prefix}/{split}/{tile_id}.json|.png
                                               GeoPixel's layout; prefix data/GeoPixelD by default
    EXPORT/glamm/gcg_{split}.json
    EXPORT/export.json                         metadata the release step reads

``max_severity`` / ``exclude_flags`` leave flagged samples out of every format (counted by reason); captions
never start with a quote mark (:func:`~pipeline.export.filters.unquote`); ``source_image`` is relative to the
folder the sources share.

Everything streams: samples are read a few rows at a time and each format is written as rows arrive
(Parquet row group by row group, the JSON files as streamed arrays), so memory stays flat as the
dataset grows. The folder is built under a hidden sibling and renamed into place when complete: a
missing tile image or a full disk ends in an error naming the file, and nothing half-written is left
where the release step would read it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .atomic import ExportWriteError, MissingTileError, staged_folder, writing
from .decisions import DecisionsError, ReviewDecisions, open_decisions
from .filters import SampleFilter, parse_codes, relative_source, source_root, unquote
from .formats import (
    GEOPIXEL_PREFIX,
    CocoWriter,
    GeoPixelWriter,
    GlammGroundTruthWriter,
    GlammWriter,
    ImageWriter,
    PolygonStats,
    geopixel_data_txt,
)
from .hf import ShardWriter, dataset_card
from .splits import DEFAULT_SPLITS, assign_splits, read_split_file

FORMATS = ("gcg-parquet", "coco", "geopixel", "glamm", "geo")  # geo: GeoParquet layers (pipeline.geo)
#: Train, val and test shares when none are given (the CLI, the flows and the library share them).
DEFAULT_RATIOS = (0.8, 0.1, 0.1)
REVIEW_STATES = ("unreviewed", "accepted", "fixed", "rejected")


@dataclass
class ExportSummary:
    out_dir: str
    splits: dict[str, int]
    formats: list[str]
    files: int
    rejected: int
    review: dict[str, int]
    polygon_iou_min: float | None
    polygon_iou_below_098: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"export → {self.out_dir}", "  splits: " + ", ".join(f"{k} {v}" for k, v in self.splits.items()),
                 f"  formats: {', '.join(self.formats)} ({self.files} files)",
                 "  review: " + ", ".join(f"{k} {v}" for k, v in self.review.items()) + f" (rejected left out: {self.rejected})"]
        if self.polygon_iou_min is not None:
            lines.append(f"  GeoPixel polygons: min IoU with masks {self.polygon_iou_min:.4f}, "
                         f"{self.polygon_iou_below_098} masks below 0.98 (holes cannot be expressed)")
        if self.extra.get("filtered"):
            lines.append("  left out by --max-severity/--exclude-flags: "
                         + ", ".join(f"{k} {v}" for k, v in sorted(self.extra["filtered"].items())))
        if self.extra.get("geopixel_left_out"):
            lines.append("  left out of the GeoPixel format: "
                         + ", ".join(f"{k} {v}" for k, v in sorted(self.extra["geopixel_left_out"].items())))
        if self.extra.get("glamm_gt_left_out"):
            lines.append(f"  left out of the GLaMM-form ground truth (no [SEG]): {self.extra['glamm_gt_left_out']}")
        if self.extra.get("captions_unquoted"):
            lines.append(f"  captions whose opening quote mark was removed: {self.extra['captions_unquoted']}")
        if self.extra.get("geo_text"):
            lines.append(self.extra["geo_text"])
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Columns of samples.parquet the exporter reads (read in batches of ``SAMPLE_BATCH`` rows).
SAMPLE_COLUMNS = ("tile_id", "tile_path", "width", "height", "caption", "gcg_caption", "phrases", "masks", "flags",
                  "max_severity", "lmm_model", "prompt_version")
TILE_COLUMNS = ("tile_id", "image_id", "source_path", "width", "height", "crs", "transform", "gsd")
SAMPLE_BATCH = 16


@dataclass(frozen=True)
class _Tile:
    image_id: str
    source_path: str
    crs: str | None
    transform: list[float] | None
    gsd: float | None


@dataclass
class _Image:
    crs: str | None
    bounds: list[float] | None = None  # min x, min y, max x, max y in CRS units

    @property
    def center(self) -> tuple[float, float] | None:
        b = self.bounds
        return ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) if b else None


def _read_tiles(data: Path) -> tuple[dict[str, _Tile], dict[str, _Image]]:
    """Per-tile metadata (no pixels, a few hundred bytes a tile) and per-image CRS extent, in batches."""
    path = data / "tiles.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{data}: no tiles.parquet — run `geopixeld prepare` first")
    tiles: dict[str, _Tile] = {}
    images: dict[str, _Image] = {}
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=list(TILE_COLUMNS)):
        for t in batch.to_pylist():
            tiles[t["tile_id"]] = _Tile(t["image_id"], t["source_path"], t["crs"], t["transform"], t["gsd"])
            m = images.setdefault(t["image_id"], _Image(t["crs"]))
            if t["crs"] and t["transform"]:
                a, b, c, d, e, f = t["transform"]
                for px, py in ((0, 0), (t["width"], t["height"])):
                    x, y = a * px + b * py + c, d * px + e * py + f
                    m.bounds = [x, y, x, y] if m.bounds is None else [
                        min(m.bounds[0], x), min(m.bounds[1], y), max(m.bounds[2], x), max(m.bounds[3], y)]
    return tiles, images


def _wgs84_bbox(images: dict[str, _Image]) -> list[float] | None:
    from rasterio.warp import transform_bounds

    boxes = []
    for m in images.values():
        if m.crs and m.bounds:
            try:
                boxes.append(transform_bounds(m.crs, "EPSG:4326", *m.bounds))
            except Exception:  # noqa: BLE001 - an odd CRS only loses the coverage hint
                continue
    if not boxes:
        return None
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def _read_png(data: Path, sample: dict[str, Any]) -> bytes:
    path = data / sample["tile_path"]
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise MissingTileError(
            f"{path}: tile image of sample {sample['tile_id']} is missing (removed or moved after describe); "
            "restore it or rerun `geopixeld prepare`, then export again — nothing was written"
        ) from None


class _SplitWriters:
    """The writers of one split, opened on its first row."""

    def __init__(self, split: str, out: Path, formats: Sequence[str], shard_bytes: int, group_bytes: int,
                 geopixel_prefix: str = GEOPIXEL_PREFIX) -> None:
        self.writers: list[Any] = []
        self.geopixel: GeoPixelWriter | None = None
        # tile images once, for every format that refers to image files (Parquet embeds them)
        self.images = ImageWriter(split, out / "images") if {"coco", "geopixel", "glamm"} & set(formats) else None
        if self.images is not None:
            self.writers.append(self.images)
        if "gcg-parquet" in formats:
            self.writers.append(ShardWriter(split, out / "data", shard_bytes, row_group_bytes=group_bytes))
        self.glamm_gt: GlammGroundTruthWriter | None = None
        if "coco" in formats:
            self.writers.append(CocoWriter(split, out / "coco"))
            self.glamm_gt = GlammGroundTruthWriter(split, out / "coco")
            self.writers.append(self.glamm_gt)
        if "geopixel" in formats:
            self.geopixel = GeoPixelWriter(split, out / "geopixel", geopixel_prefix, self.images)
            self.writers.append(self.geopixel)
        if "glamm" in formats:
            self.writers.append(GlammWriter(split, out / "glamm"))
        self.rows = 0

    def add(self, row: dict[str, Any]) -> None:
        for w in self.writers:
            w.add(row)
        self.rows += 1

    def close(self) -> int:
        """Finish every file; returns the number of files written."""
        files = sum(len(w.close()) for w in self.writers)
        return files + (self.geopixel.files if self.geopixel else 0) + (self.images.files if self.images else 0)

    def abort(self) -> None:
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.abort()


class _Filtered:
    """Review decisions as the geo layers see them: samples the export's filters left out count as rejected."""

    def __init__(self, review: ReviewDecisions, excluded: set[str]) -> None:
        self.review, self.excluded = review, excluded

    def get(self, tile_id: str) -> Any:
        return {"review_status": "rejected"} if tile_id in self.excluded else self.review.get(tile_id)

    def fixed(self, tile_id: str) -> dict[str, Any] | None:
        return self.review.fixed(tile_id)


def _export_rows(
    data: Path, tiles: dict[str, _Tile], split_of: dict[str, str], review: ReviewDecisions,
    counts: Counter[str], keep: SampleFilter | None = None, dropped: Counter[str] | None = None,
    excluded: set[str] | None = None, notes: Counter[str] | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(split, row)`` per kept sample, read from samples.parquet a batch at a time.

    ``keep`` leaves samples out by their flags (reasons counted in ``dropped``, tile ids added to
    ``excluded``); ``notes`` counts captions whose opening quote mark was removed (``unquoted``).
    """
    root = source_root(t.source_path for t in tiles.values())
    path = data / "samples.parquet"
    handle = pq.ParquetFile(path)
    missing = [c for c in SAMPLE_COLUMNS if c not in handle.schema_arrow.names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} — rerun `geopixeld describe`")
    for batch in handle.iter_batches(batch_size=SAMPLE_BATCH, columns=list(SAMPLE_COLUMNS)):
        for s in batch.to_pylist():
            t = tiles.get(s["tile_id"])
            if t is None:
                raise ValueError(f"{path}: sample {s['tile_id']} has no row in {data / 'tiles.parquet'}; "
                                 "the folder mixes two runs — rerun `geopixeld describe`")
            d = review.get(s["tile_id"])
            status = d.status if d else "unreviewed"
            counts[status] += 1
            if status == "rejected":
                continue
            if status == "fixed":
                s.update(review.fixed(s["tile_id"]) or {})
            why = keep.reason(s) if keep is not None and keep.active else None
            if why is not None:
                if dropped is not None:
                    dropped[why] += 1
                if excluded is not None:
                    excluded.add(s["tile_id"])
                continue
            if unquote(s) and notes is not None:
                notes["unquoted"] += 1
            split = split_of[t.image_id]
            yield split, {
                "id": s["tile_id"],
                "tile_id": s["tile_id"],
                "image": {"bytes": _read_png(data, s), "path": f"{s['tile_id']}.png"},
                "width": s["width"],
                "height": s["height"],
                "caption": s["caption"],
                "gcg_caption": s["gcg_caption"],
                "phrases": s["phrases"],
                "masks": s["masks"],
                "categories": [p["category"] for p in s["phrases"]],
                "crs": t.crs,
                "transform": t.transform,
                "gsd": t.gsd,
                "source_image": relative_source(t.source_path, root),
                "image_id": t.image_id,
                "split": split,
                "review_status": status,
                "reviewer": d.reviewer if d else None,
                "decided_at": d.decided_at if d else None,
                "flags": s["flags"],
                "max_severity": s["max_severity"],
                "lmm_model": s["lmm_model"],
                "prompt_version": s["prompt_version"],
            }


def _write_geopixel_list(stage: Path, writers: dict[str, _SplitWriters], split_names: Sequence[str]) -> None:
    """``geopixel/data.txt``: GeoPixel's list of training JSON files, naming the train split (else the first
    split written) with its exact sample count."""
    gp = [(s, writers[s].geopixel) for s in [*split_names, *sorted(set(writers) - set(split_names))] if s in writers]
    gp = [(s, g) for s, g in gp if g is not None and g.index.count]
    if not gp:
        return
    _, chosen = next(((s, g) for s, g in gp if s == "train"), gp[0])
    assert chosen is not None
    path = stage / "geopixel" / "data.txt"
    with writing(path):
        path.write_text(geopixel_data_txt(chosen.index_path, chosen.index.count))


def export(
    data_dir: str | Path,
    out_dir: str | Path,
    formats: Sequence[str] = FORMATS,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    split_names: Sequence[str] = DEFAULT_SPLITS,
    seed: int = 0,
    split_by: str = "image",
    block_size: float | None = None,
    split_file: str | Path | None = None,
    decisions: str | Path | None = None,
    shard_mb: float = 256.0,
    name: str | None = None,
    overwrite: bool = True,
    db_url: str | None = None,
    row_group_mb: float = 16.0,
    geo_crs: str | None = None,
    max_severity: str | None = None,
    exclude_flags: str | Sequence[str] | None = None,
    geopixel_prefix: str = GEOPIXEL_PREFIX,
) -> ExportSummary:
    """Write the export folder (see the module docstring); returns what was written.

    Streams: samples are read ``SAMPLE_BATCH`` rows at a time and every format is written as rows arrive,
    so peak memory is a Parquet row group per split (``shard_mb`` does not change it). The folder is built
    under a hidden sibling and renamed into place when complete.

    Args:
        decisions: review decisions as a Parquet file (``geopixeld review export-decisions``).
        db_url: the review database (SQLAlchemy URL); default ``DATA/review.sqlite`` when it exists.
        geo_crs: format ``geo``: reproject georeferenced sources into this CRS (``EPSG:n``); default one
            GeoParquet file per source CRS (see :mod:`pipeline.geo.layers`).
        shard_mb: target Parquet shard size in MB.
        row_group_mb: a Parquet row group is written when its rows reach this many MB (or 64 rows); with
            three splits, peak memory is about three row groups.
        max_severity: leave out samples with a flag more severe than this (``info``, ``warning``, ``error``),
            from every format; ``None`` keeps all.
        exclude_flags: leave out samples carrying any of these flag codes (``"sam_empty,refusal"`` or a list).
        geopixel_prefix: format ``geopixel``: the folder GeoPixel's paths start with, relative to the
            GeoPixel repository root (default ``data/GeoPixelD``, GeoPixel's documented place).

    Raises:
        ValueError: unknown format, bad split settings, inconsistent inputs, unreadable decisions.
        FileNotFoundError: no samples.parquet / tiles.parquet, or a tile image is gone
            (:class:`MissingTileError`, naming the file).
        ExportWriteError: writing a file failed (e.g. the disk filled), naming the file; nothing is left
            at ``out_dir`` but the previous complete export, if any.
    """
    start = time.perf_counter()
    data, out = Path(data_dir), Path(out_dir)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown format(s) {bad}; choose from {', '.join(FORMATS)}")
    if not (data / "samples.parquet").exists():
        raise FileNotFoundError(f"{data}: no samples.parquet — run `geopixeld describe` first")
    tiles, images = _read_tiles(data)
    explicit = read_split_file(split_file) if split_file else None
    split_of = assign_splits({k: {"crs": m.crs, "center": m.center} for k, m in images.items()},
                             ratios, split_names, seed, split_by, block_size, explicit)
    review = open_decisions(data, decisions, db_url)
    keep = SampleFilter(max_severity, parse_codes(exclude_flags))
    dropped: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    excluded: set[str] = set()
    skipped_geopixel: Counter[str] = Counter()
    review_counts: Counter[str] = Counter()
    crs: set[str] = set()
    gsd: set[float] = set()
    models: set[str] = set()
    prompts: set[str] = set()
    polygon = PolygonStats()
    files = 0
    extra: dict[str, Any] = {}
    splits: dict[str, int] = {}
    with staged_folder(out, overwrite) as stage:
        writers: dict[str, _SplitWriters] = {}
        try:
            for split, row in _export_rows(data, tiles, split_of, review, review_counts, keep, dropped, excluded,
                                           notes):
                w = writers.get(split)
                if w is None:
                    w = writers[split] = _SplitWriters(
                        split, stage, formats, int(shard_mb * 2**20), int(row_group_mb * 2**20), geopixel_prefix)
                w.add(row)
                crs.update([row["crs"]] if row["crs"] else [])
                gsd.update([round(row["gsd"], 6)] if row["gsd"] else [])
                models.update([row["lmm_model"]] if row["lmm_model"] else [])
                prompts.update([row["prompt_version"]] if row["prompt_version"] else [])
            for split in list(split_names) + sorted(set(writers) - set(split_names)):
                if split in writers:
                    files += writers[split].close()
                    splits[split] = writers[split].rows
                    geopixel = writers[split].geopixel
                    if geopixel is not None:
                        polygon.merge(geopixel.stats)
                        skipped_geopixel.update(geopixel.skipped)
                    glamm_gt = writers[split].glamm_gt
                    if glamm_gt is not None and glamm_gt.skipped:
                        notes["GLaMM-form ground truth: no [SEG]"] += glamm_gt.skipped
            _write_geopixel_list(stage, writers, split_names)
            if "geo" in formats:  # GeoParquet layers, streamed image by image (pipeline.geo)
                from ..geo import GeoConfig, write_geo_layers
                from ..geo.frames import copy_call_log

                geo_review = _Filtered(review, excluded) if excluded else review
                geo = write_geo_layers(data, stage, GeoConfig(target_crs=geo_crs), split_of, geo_review)
                files += len(geo.files) + copy_call_log(data, stage)  # + tables/lmm_calls.parquet for analysis
                extra = {"geo": geo.to_dict(), "geo_text": geo.text()}
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        finally:
            review.close()  # the review database's connections, if any
        dataset_name = name or data.resolve().name
        info: dict[str, Any] = {
            "name": dataset_name,
            "splits": splits,
            "formats": list(formats),
            "crs": sorted(crs),
            "gsd": sorted(gsd),
            "bbox_wgs84": _wgs84_bbox(images),
            "review": dict(review_counts),
            "lmm_models": sorted(models),
            "prompt_versions": sorted(prompts),
            "source": data.resolve().name,  # the folder's name only: no path of the building machine
            "filters": {"max_severity": max_severity, "exclude_flags": sorted(keep.exclude_flags),
                        "left_out": dict(dropped)},
            "captions_unquoted": notes.get("unquoted", 0),
            **({"geopixel": {"prefix": geopixel_prefix, "left_out": dict(skipped_geopixel)}}
               if "geopixel" in formats else {}),
            **({"geo": extra["geo"]} if "geo" in extra else {}),
        }
        if "gcg-parquet" in formats:
            with writing(stage / "README.md"):
                (stage / "README.md").write_text(dataset_card(dataset_name, splits, info))
        with writing(stage / "export.json"):
            (stage / "export.json").write_text(json.dumps(info, indent=1))
    rejected = review_counts.get("rejected", 0)
    extra = {**extra, "filtered": dict(dropped), "captions_unquoted": notes.get("unquoted", 0),
             "geopixel_left_out": dict(skipped_geopixel),
             "glamm_gt_left_out": notes.get("GLaMM-form ground truth: no [SEG]", 0)}
    return ExportSummary(
        out_dir=str(out), splits=splits, formats=list(formats), files=files + 2, rejected=rejected,
        review=dict(review_counts), polygon_iou_min=polygon.iou_min,
        polygon_iou_below_098=polygon.below_098, seconds=time.perf_counter() - start, extra=extra,
    )


__all__ = [
    "FORMATS", "DecisionsError", "ExportSummary", "ExportWriteError", "MissingTileError", "export", "open_decisions",
]
