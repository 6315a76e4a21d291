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
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from . import png
from .config import PrepareConfig
from .errors import InputError, Skip
from .ingest import ImageItem, get_adapter
from .marks import draw_marks
from .prepare_report import ImageReport, PrepareSummary, summarize
from .raster import RowBandReader, compute_stretch, rasterio, read_info, resolve_bands
from .records import TileInstance
from .tables import (
    CLUSTERS_SCHEMA,
    INSTANCES_SCHEMA,
    TILES_SCHEMA,
    PartFileError,
    check_part,
    concat_parts,
    write_table,
)
from .tile_rows import process_tile
from .tiling import Tile, tile_grid
from .workers import available_cpus, resolve_workers

PNG_COMPRESS_LEVEL = png.LEVEL  # deflate level of tiles and set-of-marks images (lossless at any level)
GDAL_CACHE_MB = 128
PNG_PENDING = 6  # images a worker may hold while they encode (~2 MB per 800² RGB tile)...
PNG_PENDING_MB = 96  # ...and at most this many MB of them (4096² tiles: one at a time)
NAMING_CALLS = "naming_calls.parquet"  # the category tier's LMM calls (automatic masks named by an LMM)
TILE_BAR_MIN = 50  # images with at least this many tiles get their own progress bar


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
