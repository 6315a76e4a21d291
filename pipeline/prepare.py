"""Prepare: source imagery + annotations → tiles, set-of-marks images and instance/cluster tables.

``prepare_image`` handles one source image (it is what a process pool or a Prefect task runs) and
writes its own part files under ``OUT/parts/{image_id}/``; ``prepare`` discovers the inputs, runs the
images (in parallel when asked), and merges the parts into ``OUT/tiles.parquet``,
``OUT/instances.parquet`` and ``OUT/clusters.parquet``. An image that fails is reported in
``OUT/prepare_report.json`` with the file and the problem, and never stops the others; an image
whose part files were made from the same inputs and settings is reused, so a crashed run resumes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from . import png, priors
from .config import PrepareConfig, category_name
from .errors import InputError, Skip
from .ingest import ImageItem, get_adapter
from .marks import Mark, draw_marks, font_size_for_objects, place_marks
from .raster import RowBandReader, compute_stretch, rasterio, read_info, resolve_bands
from .records import TileInstance
from .rle import encode_local
from .tables import (
    CLUSTERS_SCHEMA,
    INSTANCES_SCHEMA,
    TILES_SCHEMA,
    PartFileError,
    check_part,
    concat_parts,
    write_table,
)
from .tiling import Tile, tile_grid

PNG_COMPRESS_LEVEL = png.LEVEL  # deflate level of tiles and set-of-marks images (lossless at any level)
GDAL_CACHE_MB = 128
PNG_PENDING = 6  # images a worker may hold while they encode (~2 MB per 800² RGB tile)...
PNG_PENDING_MB = 96  # ...and at most this many MB of them (4096² tiles: one at a time)
NAMING_CALLS = "naming_calls.parquet"  # the category tier's LMM calls (automatic masks named by an LMM)
TILE_BAR_MIN = 50  # images with at least this many tiles get their own progress bar
REPORT_VERSION = 1


@dataclass
class ImageReport:
    """What happened to one source image."""

    image_id: str
    image_path: str
    status: str  # ok | failed | reused
    tiles: int = 0
    instances: int = 0
    clusters: int = 0
    marks: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    repairs: int = 0
    skips: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    naming: dict[str, int] = field(default_factory=dict)
    signature: str = ""
    config_digest: str = ""
    version: int = REPORT_VERSION


def input_signature(item: ImageItem) -> str:
    """Sizes and modification times of every input file of an item (cheap change detection)."""
    parts = []
    for p in [item.image_path, *sorted(item.annotations.values())]:
        try:
            st = os.stat(p)
            parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{p}:missing")
    parts.append(json.dumps(item.options, sort_keys=True, default=str))
    return "|".join(parts)


def _tile_transform(t: tuple[float, ...], x0: int, y0: int) -> list[float]:
    a, b, c, d, e, f = t[:6]
    return [a, b, a * x0 + b * y0 + c, d, e, d * x0 + e * y0 + f]


def _reading_order(points: list[tuple[float, float]], height: int) -> list[int]:
    band = max(1.0, height / 10)
    return sorted(range(len(points)), key=lambda i: (int(points[i][1] // band), points[i][0], points[i][1]))


@dataclass
class TileResult:
    """What :func:`process_tile` makes of one tile's instances.

    Attributes:
        instances: ``instances.parquet`` rows (priors, RLE, mark, cluster id).
        clusters: ``clusters.parquet`` rows.
        marks: the numbered marks to draw on the set-of-marks image.
        dropped: instances left out, by reason (``under_min_area``, ``under_min_visible_fraction``).
        font_size: mark digit size in px (shrinks for small, crowded objects).
    """

    instances: list[dict[str, Any]]
    clusters: list[dict[str, Any]]
    marks: list[Mark]
    dropped: Counter[str]
    font_size: int


def process_tile(
    tile: Tile,
    instances: list[TileInstance],
    config: PrepareConfig,
    gsd: float | None,
) -> TileResult:
    """Priors, clusters and marks for one tile's instances → instance rows, cluster rows, marks, drops."""
    w, h = tile.width, tile.height
    dropped: Counter[str] = Counter()
    kept: list[TileInstance] = []
    areas: list[float] = []
    for inst in instances:
        area = inst.mask.area
        if area < config.min_area:
            dropped["under_min_area"] += 1
        elif inst.visible_fraction < config.min_visible_fraction:
            dropped["under_min_visible_fraction"] += 1
        else:
            kept.append(inst)
            areas.append(float(area))
    shapes = priors.measure_all([i.mask for i in kept])
    names = [category_name(i.category) for i in kept]

    # Clusters per cluster category.
    cluster_of: dict[int, str] = {}
    cluster_rows: list[dict[str, Any]] = []
    by_cat: dict[str, list[int]] = {}
    for k, name in enumerate(names):
        if name in config.cluster_categories:
            by_cat.setdefault(name, []).append(k)
    for name in sorted(by_cat):
        idxs = by_cat[name]
        mode = config.cluster_categories[name]
        pts = np.array([[shapes[k].cx, shapes[k].cy] for k in idxs])
        sizes = np.sqrt(np.array([areas[k] for k in idxs]))
        groups = priors.cluster_points(pts, sizes, max(w, h), config.cluster_link)
        groups = sorted(groups, key=lambda g: (min(pts[j][1] for j in g), min(pts[j][0] for j in g)))
        for g in groups:
            if mode == "dense" and len(g) < config.min_cluster_size:
                continue
            members = [idxs[j] for j in g]
            cid = f"{tile.tile_id}#c{len(cluster_rows) + 1}"
            for m in members:
                cluster_of[m] = cid
            gp = pts[g]
            boxes = np.array([kept[m].mask.bbox() for m in members])
            x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
            x1, y1 = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
            cluster_rows.append(
                {
                    "cluster_id": cid,
                    "tile_id": tile.tile_id,
                    "image_id": tile.image_id,
                    "category": kept[members[0]].category,
                    "category_name": name,
                    "instance_ids": [kept[m].instance_id for m in members],
                    "position": priors.cluster_position(gp, w, h),
                    "count": len(members),
                    "count_word": priors.count_word(len(members)),
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                }
            )

    # Marks for every instance not described through a cluster.
    to_mark = [k for k in range(len(kept)) if k not in cluster_of]
    font_size = font_size_for_objects([kept[k].mask for k in to_mark], w, h)
    placements = place_marks([kept[k].mask for k in to_mark], w, h, font_size)
    order = _reading_order([(p[0], p[1]) for p in placements], h)
    marks: list[Mark] = []
    mark_of: dict[int, Mark] = {}
    for number, j in enumerate(order, start=1):
        x, y, box = placements[j]
        placed = Mark(number, x, y, box)
        marks.append(placed)
        mark_of[to_mark[j]] = placed

    rows = []
    for k, inst in enumerate(kept):
        s = shapes[k]
        mk = mark_of.get(k)
        elong = s.elongation if s.width_px > 0 else None
        angle = s.angle_deg if elong is not None and elong >= 1.2 else None
        rows.append(
            {
                "tile_id": tile.tile_id,
                "image_id": tile.image_id,
                "instance_id": inst.instance_id,
                "category": inst.category,
                "category_name": names[k],
                "rle": encode_local(inst.mask, h, w),
                "bbox": list(inst.mask.bbox()),
                "area": areas[k],
                "visible_fraction": round(inst.visible_fraction, 6),
                "truncated": inst.truncated,
                "position": priors.position_word(s.cx, s.cy, w, h),
                "size_class": priors.size_class(areas[k], w, h),
                "centroid_x": s.cx,
                "centroid_y": s.cy,
                "length_px": s.length_px,
                "width_px": s.width_px,
                "length_m": s.length_px * gsd if gsd else None,
                "width_m": s.width_px * gsd if gsd else None,
                "orientation_deg": angle,
                "orientation_word": priors.orientation_word(angle, elong or 0.0),
                "elongation": elong if elong is not None and np.isfinite(elong) else None,
                "mark": mk.number if mk else None,
                "mark_x": mk.x if mk else None,
                "mark_y": mk.y if mk else None,
                "mark_box": list(mk.box) if mk else None,
                "cluster_id": cluster_of.get(k),
                "geometry_kind": inst.geometry_kind,
                "prompt_box": inst.prompt_box,
                "mask_source": inst.mask_source,
                "mask_model": inst.mask_model,
                "mask_score": inst.mask_score,
                "source_ref": inst.source_ref,
                **_sam_columns(inst),
            }
        )
    return TileResult(rows, cluster_rows, marks, dropped, font_size)


# The SAM and naming columns of an instance without SAM extras (what ``pipeline.sam.quality.instance_columns``
# and ``pipeline.sam.naming.naming_columns`` return for empty extras), so label-only runs never import the
# SAM modules (shapely geometry, prompts, the LMM client types).
_NO_SAM_COLUMNS: dict[str, Any] = {
    "sam_predicted_iou": None, "sam_stability": None, "sam_box_iou": None, "sam_box_fill": None,
    "category_source": "annotation", "category_answer": None,
}


def _sam_columns(inst: TileInstance) -> dict[str, Any]:
    if not inst.extras:
        return {**_NO_SAM_COLUMNS, "sam_flags": [], "category_flags": []}
    from .sam.naming import naming_columns
    from .sam.quality import instance_columns

    return {**instance_columns(inst.extras), **naming_columns(inst.extras, inst.mask_source)}


def prepare_image(
    item: ImageItem,
    config: PrepareConfig,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = False,
    encode_threads: int | None = None,
) -> ImageReport:
    """Tile one image and write its tiles, marks and part tables. Never raises for bad input.

    ``progress`` shows a per-tile bar for images of many tiles (a 20000² scene has over a thousand).
    ``encode_threads``: threads encoding PNGs while this one prepares the next tile (default: the CPU
    cores this process may use).
    """
    if encode_threads is None:
        encode_threads = available_cpus()
    out = Path(out_dir)
    part_dir = out / "parts" / item.image_id
    signature = input_signature(item)
    digest = config.digest()
    report_path = part_dir / "report.json"
    if resume and report_path.exists():
        try:
            old = json.loads(report_path.read_text())
            if old.get("signature") == signature and old.get("config_digest") == digest and old["status"] == "ok":
                for name in ("tiles", "instances", "clusters"):  # a part cut short by a crash is redone
                    check_part(part_dir / f"{name}.parquet")
                old["status"] = "reused"
                return ImageReport(**old)
        except (json.JSONDecodeError, KeyError, TypeError, PartFileError):
            pass
    report = ImageReport(item.image_id, item.image_path, "ok", signature=signature, config_digest=digest)
    written: list[Path] = []
    try:
        # GDAL's block cache defaults to 5 % of RAM; rows are read once, so a small cache suffices and
        # keeps peak memory independent of the image size.
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20):
            _prepare_into(item, config, out, part_dir, report, written, progress, encode_threads)
    except (InputError, ValueError, OSError) as exc:
        path = exc.path if isinstance(exc, InputError) else item.image_path
        problem = exc.problem if isinstance(exc, InputError) else str(exc)
        _fail(report, written, part_dir, path, problem)
    except Exception as exc:  # noqa: BLE001 - one bad image never stops the batch
        _fail(report, written, part_dir, item.image_path, f"unexpected {type(exc).__name__}: {exc}")
        report.skips[-1]["trace"] = traceback.format_exc(limit=5)
    part_dir.mkdir(parents=True, exist_ok=True)
    tmp = report_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(report), indent=1))
    tmp.replace(report_path)
    return report


def _fail(report: ImageReport, written: list[Path], part_dir: Path, path: str, problem: str) -> None:
    for p in written:
        p.unlink(missing_ok=True)
    for name in ("tiles", "instances", "clusters"):
        (part_dir / f"{name}.parquet").unlink(missing_ok=True)
    (part_dir / NAMING_CALLS).unlink(missing_ok=True)
    report.status = "failed"
    report.error = f"{path}: {problem}"
    report.skips.append(Skip(path, "prepare", problem, "image").to_dict())
    report.tiles = report.instances = report.clusters = report.marks = 0


def _prepare_into(
    item: ImageItem,
    config: PrepareConfig,
    out: Path,
    part_dir: Path,
    report: ImageReport,
    written: list[Path],
    progress: bool = False,
    encode_threads: int = 1,
) -> None:
    info = read_info(item.image_path)
    loaded = get_adapter(item.format).load(item, info.width, info.height, info.crs, info.transform)
    report.skips.extend(s.to_dict() for s in loaded.skips)
    report.repairs = loaded.repairs
    gsd = info.gsd or loaded.gsd or config.gsd
    bands = resolve_bands(info, config.bands)
    stretch = compute_stretch(item.image_path, bands, config.stretch, config.percentiles)
    tiles = tile_grid(item.image_id, info.width, info.height, config.tile_size, config.overlap)
    (out / "tiles").mkdir(parents=True, exist_ok=True)
    (out / "marks").mkdir(parents=True, exist_ok=True)
    tile_rows: list[dict[str, Any]] = []
    inst_rows: list[dict[str, Any]] = []
    cluster_rows: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    masked = info.nodata is not None
    masker = None
    if config.masks == "sam" and config.sam is not None:
        from .sam import SamAutoAnnotations, get_masker

        masker = get_masker(config.sam)
        if item.format == "raster":
            loaded.source.close()
            auto = SamAutoAnnotations(
                item.image_path, tiles, info.width, info.height, masker, bands, stretch, masked=masked
            )
            loaded.source = auto
            if config.sam.naming is not None:
                from .sam.naming import name_auto_objects

                calls = part_dir / NAMING_CALLS
                part_dir.mkdir(parents=True, exist_ok=True)
                written.append(calls)
                report.naming = name_auto_objects(auto, config.sam.naming, out, calls, progress=progress)

    def rendered() -> Iterator[tuple[tuple[Tile, float], np.ndarray, list[TileInstance]]]:
        """Tiles top to bottom, rendered to RGB, with their instances; nodata tiles are counted, not kept."""
        with RowBandReader(item.image_path, bands, masked=masked) as reader:
            for tile in tiles:
                data, valid = reader.rows(tile.y0, tile.y1)
                crop = data[:, :, tile.x0 : tile.x1]
                vcrop = valid[:, tile.x0 : tile.x1]
                instances = loaded.source.instances_in(tile)
                if not vcrop.any():
                    report.skips.append(
                        Skip(f"{item.image_path}#{tile.tile_id}", "tile", "tile is entirely nodata", "tile").to_dict()
                    )
                    dropped["instances_on_nodata_tiles"] += len(instances)
                    continue
                rgb = stretch.apply(crop, vcrop if masked else None)
                if rgb.shape[2] == 1:
                    rgb = np.repeat(rgb, 3, axis=2)
                yield (tile, 1.0 - float(vcrop.mean())), rgb, instances

    stream = rendered()
    tile_mb = max((t.width * t.height * 3 for t in tiles), default=1) / 2**20
    writer = png.PngWriter(threads=encode_threads, pending=max(1, min(PNG_PENDING, int(PNG_PENDING_MB // tile_mb))))
    if masker is not None:
        from .sam import refine_batches

        stream = refine_batches(stream, masker)  # box labels → SAM masks, tiles batched through the encoder
    bar = tqdm(total=len(tiles), desc=item.image_id, unit="tile", leave=False,
               disable=not progress or len(tiles) < TILE_BAR_MIN)
    try:
        for (tile, nodata_fraction), rgb, instances in stream:
            bar.update()
            result = process_tile(tile, instances, config, gsd)
            rows, crows, marks, drops, font_size = (
                result.instances, result.clusters, result.marks, result.dropped, result.font_size
            )
            dropped.update(drops)
            tile_path = out / "tiles" / f"{tile.tile_id}.png"
            marks_path = out / "marks" / f"{tile.tile_id}.png"
            written.append(tile_path)
            contours = None
            if config.marks_contours:
                marked = {r["instance_id"] for r in rows if r["mark"] is not None}
                contours = [i.mask for i in instances if i.instance_id in marked]
            written.append(marks_path)
            if marks or contours or config.marks_grid:
                writer.write(tile_path, rgb)
                marked_rgb = np.asarray(draw_marks(rgb, marks, contours, config.marks_grid, font_size))
                writer.write(marks_path, marked_rgb)
            else:  # nothing drawn: the set-of-marks image is the tile, the same bytes
                writer.write(tile_path, rgb, also=marks_path)
            tile_rows.append(
                {
                    "tile_id": tile.tile_id,
                    "image_id": item.image_id,
                    "source_path": item.image_path,
                    "x0": tile.x0,
                    "y0": tile.y0,
                    "x1": tile.x1,
                    "y1": tile.y1,
                    "width": tile.width,
                    "height": tile.height,
                    "crs": info.crs,
                    "transform": _tile_transform(info.transform, tile.x0, tile.y0),
                    "gsd": gsd,
                    "nodata_fraction": nodata_fraction,
                    "tile_path": f"tiles/{tile.tile_id}.png",
                    "marks_path": f"marks/{tile.tile_id}.png",
                    "n_instances": len(rows),
                    "n_marks": len(marks),
                    "n_clusters": len(crows),
                }
            )
            inst_rows.extend(rows)
            cluster_rows.extend(crows)
            report.marks += len(marks)
        writer.close()  # every image written (an encoding or disk error is raised here, naming the file)
    finally:
        writer.close(wait=False)
        bar.close()
        loaded.source.close()
    part_dir.mkdir(parents=True, exist_ok=True)
    write_table(tile_rows, TILES_SCHEMA, part_dir / "tiles.parquet")
    write_table(inst_rows, INSTANCES_SCHEMA, part_dir / "instances.parquet")
    write_table(cluster_rows, CLUSTERS_SCHEMA, part_dir / "clusters.parquet")
    report.tiles, report.instances, report.clusters = len(tile_rows), len(inst_rows), len(cluster_rows)
    report.dropped = dict(dropped)


@dataclass
class PrepareSummary:
    """Totals of a prepare run, and every skipped input with its reason."""

    out_dir: str
    images: int
    images_ok: int
    images_failed: int
    images_reused: int
    tiles: int
    instances: int
    clusters: int
    marks: int
    repairs: int
    dropped: dict[str, int]
    skipped: list[dict[str, str]]
    skipped_by_reason: dict[str, int]
    naming: dict[str, int] = field(default_factory=dict)

    def text(self) -> str:
        lines = [
            f"prepare → {self.out_dir}",
            f"  images   {self.images} ({self.images_ok} done, {self.images_reused} reused, {self.images_failed} failed)",
            f"  tiles    {self.tiles}",
            f"  instances {self.instances} ({self.marks} marked), clusters {self.clusters}",
            f"  polygons repaired {self.repairs}",
        ]
        if self.naming:
            named = ", ".join(f"{k} {v}" for k, v in sorted(self.naming.items()))
            lines.append(f"  automatic masks named by the LMM: {named}")
        if self.dropped:
            lines.append("  dropped pieces: " + ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())))
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)}:")
            for reason, n in sorted(self.skipped_by_reason.items(), key=lambda kv: -kv[1]):
                lines.append(f"    {n} × {reason}")
            for s in self.skipped[:10]:
                lines.append(f"    - {s['path']}: {s['reason']}")
            if len(self.skipped) > 10:
                lines.append(f"    ... {len(self.skipped) - 10} more in prepare_report.json")
        return "\n".join(lines)


def discover(sources: Sequence[str | Path], config: PrepareConfig) -> tuple[list[ImageItem], list[Skip]]:
    """Items to prepare and the inputs skipped while looking for them (duplicate image ids included)."""
    adapter = get_adapter(config.format)
    items, skips = adapter.discover([Path(s) for s in sources], dict(config.options))
    seen: dict[str, str] = {}
    unique = []
    for it in items:
        if it.image_id in seen:
            skips.append(Skip(it.image_path, "discover", f"duplicate image id {it.image_id!r} (also {seen[it.image_id]})"))
            continue
        seen[it.image_id] = it.image_path
        unique.append(it)
    return unique, skips


def merge(out_dir: str | Path, image_ids: Sequence[str]) -> dict[str, int]:
    """Concatenate the part tables of ``image_ids`` into the top-level tables; returns row counts."""
    out = Path(out_dir)
    counts = {}
    for name, schema in (("tiles", TILES_SCHEMA), ("instances", INSTANCES_SCHEMA), ("clusters", CLUSTERS_SCHEMA)):
        parts = [out / "parts" / i / f"{name}.parquet" for i in image_ids]
        counts[name] = concat_parts(parts, schema, out / f"{name}.parquet")
    calls = [out / "parts" / i / NAMING_CALLS for i in image_ids]
    if any(p.exists() for p in calls):  # only runs that named automatic masks have LMM calls here
        from .lmm.records import CALLS_SCHEMA

        counts["naming_calls"] = concat_parts(calls, CALLS_SCHEMA, out / NAMING_CALLS)
    else:
        (out / NAMING_CALLS).unlink(missing_ok=True)
    return counts


def summarize(out_dir: str | Path, reports: Sequence[ImageReport], discover_skips: Sequence[Skip]) -> PrepareSummary:
    skipped = [s.to_dict() for s in discover_skips] + [s for r in reports for s in r.skips]
    dropped: Counter[str] = Counter()
    naming: Counter[str] = Counter()
    for r in reports:
        dropped.update(r.dropped)
        naming.update(r.naming)
    return PrepareSummary(
        out_dir=str(out_dir),
        images=len(reports) + sum(1 for s in discover_skips if s.kind == "image"),
        images_ok=sum(r.status == "ok" for r in reports),
        images_failed=sum(r.status == "failed" for r in reports) + sum(1 for s in discover_skips if s.kind == "image"),
        images_reused=sum(r.status == "reused" for r in reports),
        tiles=sum(r.tiles for r in reports),
        instances=sum(r.instances for r in reports),
        clusters=sum(r.clusters for r in reports),
        marks=sum(r.marks for r in reports),
        repairs=sum(r.repairs for r in reports),
        dropped=dict(dropped),
        skipped=[{k: v for k, v in s.items() if k != "trace"} for s in skipped],
        skipped_by_reason=dict(Counter(_reason_key(s["reason"]) for s in skipped)),
        naming=dict(naming),
    )


def _reason_key(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]


def without_pandas_integration() -> None:
    """For a process that only prepares (``geopixeld prepare``): keep pyarrow from importing pandas.

    pyarrow looks for pandas the first time it builds any table (to recognise DataFrames), which costs
    about a quarter of a second at start-up although prepare never hands it pandas objects. Here that first
    look finds nothing, so pyarrow treats objects as non-pandas; an explicit conversion (``to_pandas``,
    ``from_pandas``) still imports pandas when asked. Library callers are left alone: only the command calls
    this.
    """
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    blocker = _NoPandas()
    sys.meta_path.insert(0, blocker)
    try:
        pa.schema([("probe", pa.int8())]).empty_table()  # pyarrow's one-time pandas check happens now
    finally:
        sys.meta_path.remove(blocker)


class _NoPandas:
    """An import finder that reports pandas as missing (used for a moment only)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | str, images: int, config: PrepareConfig) -> int:
    """Processes for ``workers``: ``auto`` is one per CPU core, at most one per image, and 1 with SAM
    (one model on one device); a number is taken as given (at least 1)."""
    if isinstance(workers, str):
        if workers.strip().lower() != "auto":
            try:
                workers = int(workers)
            except ValueError:
                raise ValueError(f"workers must be a number or 'auto', not {workers!r}") from None
        elif config.masks == "sam":
            return 1
        else:
            return max(1, min(available_cpus(), images))
    return max(1, int(workers))


def prepare(
    sources: Sequence[str | Path],
    config: PrepareConfig,
    out_dir: str | Path,
    workers: int | str = 1,
    resume: bool = True,
    progress: bool = True,
) -> PrepareSummary:
    """Prepare every image found in ``sources``; see the module docstring for the outputs.

    ``workers``: images prepared in parallel, in processes (``auto``: see ``resolve_workers``). Each
    process also encodes PNGs on its share of the CPU cores in threads, so one large image uses every core.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = with_sam_identity(config)
    items, discover_skips = discover(sources, config)
    workers = resolve_workers(workers, len(items), config)
    threads = max(1, available_cpus() // workers)
    reports: list[ImageReport] = []
    bar = tqdm(total=len(items), desc="prepare", unit="image", disable=not progress)
    if workers <= 1 or len(items) <= 1:
        for it in items:
            reports.append(prepare_image(it, config, out, resume, progress, threads))
            bar.set_postfix(tiles=sum(r.tiles for r in reports))
            bar.update()
    else:
        # fork where available: workers start at once with everything this process has imported
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(prepare_image, it, config, out, resume, False, threads): it for it in items}
            for fut in as_completed(futures):
                it = futures[fut]
                try:
                    reports.append(fut.result())
                except Exception as exc:  # noqa: BLE001 - a crashed worker is one failed image
                    rep = ImageReport(it.image_id, it.image_path, "failed", error=str(exc))
                    rep.skips.append(Skip(it.image_path, "prepare", f"worker crashed: {exc}").to_dict())
                    reports.append(rep)
                bar.set_postfix(tiles=sum(r.tiles for r in reports))
                bar.update()
    bar.close()
    order = {it.image_id: k for k, it in enumerate(items)}
    reports.sort(key=lambda r: order.get(r.image_id, 0))
    merge(out, [r.image_id for r in reports if r.status in ("ok", "reused")])
    summary = summarize(out, reports, discover_skips)
    payload = {"summary": asdict(summary), "config": config.model_dump(mode="json"), "images": [asdict(r) for r in reports]}
    report = out / "prepare_report.json"
    tmp = report.with_name(report.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(report)
    return summary


def with_sam_identity(config: PrepareConfig) -> PrepareConfig:
    """Check the SAM checkpoint once, up front (a bad one fails before any image), and record its identity.

    Raises ``pipeline.sam.SamError`` (a missing or wrong checkpoint, torch not installed) naming the file.
    """
    if config.masks != "sam" or config.sam is None:
        return config
    from .sam import check_checkpoint

    model_type, mask_model = check_checkpoint(config.sam)
    return config.model_copy(update={"sam_mask_model": mask_model})


def clean_outputs(out_dir: str | Path) -> None:
    """Remove everything prepare writes (used by ``--fresh``)."""
    out = Path(out_dir)
    for sub in ("tiles", "marks", "parts"):
        shutil.rmtree(out / sub, ignore_errors=True)
    for name in ("tiles.parquet", "instances.parquet", "clusters.parquet", "prepare_report.json"):
        (out / name).unlink(missing_ok=True)
