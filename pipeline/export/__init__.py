"""Export: described (and reviewed) samples → GCG Parquet shards, COCO, GeoPixel and GLaMM formats.

``export(DIR, EXPORT)`` reads ``DIR/samples.parquet`` and ``DIR/tiles.parquet``, applies review
decisions (rejected samples are left out, fixed ones use the fixed text and masks, every row carries its
review state), assigns deterministic splits by source image and writes::

    EXPORT/README.md                           dataset card (HF `configs:` YAML)
    EXPORT/data/{split}-{i:05d}-of-{n:05d}.parquet
    EXPORT/coco/instances_{split}.json, captions_{split}.json
    EXPORT/geopixel/GeoPixelD_{split}.json, geopixel/{split}/{tile_id}.json|.png
    EXPORT/glamm/gcg_{split}.json
    EXPORT/export.json                         metadata the release step reads
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .formats import write_coco, write_geopixel, write_glamm
from .hf import dataset_card, write_shards
from .splits import DEFAULT_SPLITS, assign_splits, read_split_file

FORMATS = ("gcg-parquet", "coco", "geopixel", "glamm")
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
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_review(data_dir: Path, decisions: str | Path | None) -> dict[str, dict[str, Any]]:
    """Decisions by tile id: from a Parquet file, else from the review app's database when present."""
    table: pa.Table | None = None
    if decisions:
        table = pq.read_table(decisions)
    elif (data_dir / "review.sqlite").exists():
        try:
            from annotations.export import load_decisions
        except ImportError:  # the review app is an optional part
            return {}
        table = load_decisions(data_dir)
    if table is None:
        return {}
    return {r["tile_id"]: r for r in table.to_pylist()}


def _image_meta(tiles: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for t in tiles:
        m = out.setdefault(t["image_id"], {"crs": t["crs"], "xs": [], "ys": [], "source": t["source_path"]})
        if t["crs"] and t["transform"]:
            a, b, c, d, e, f = t["transform"]
            for px, py in ((0, 0), (t["width"], t["height"])):
                m["xs"].append(a * px + b * py + c)
                m["ys"].append(d * px + e * py + f)
    for m in out.values():
        m["center"] = ((min(m["xs"]) + max(m["xs"])) / 2, (min(m["ys"]) + max(m["ys"])) / 2) if m["xs"] else None
    return out


def _wgs84_bbox(meta: dict[str, dict[str, Any]]) -> list[float] | None:
    from rasterio.warp import transform_bounds

    boxes = []
    for m in meta.values():
        if m["crs"] and m["xs"]:
            try:
                boxes.append(transform_bounds(m["crs"], "EPSG:4326", min(m["xs"]), min(m["ys"]), max(m["xs"]), max(m["ys"])))
            except Exception:  # noqa: BLE001 - an odd CRS only loses the coverage hint
                continue
    if not boxes:
        return None
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def export(
    data_dir: str | Path,
    out_dir: str | Path,
    formats: Sequence[str] = FORMATS,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    split_names: Sequence[str] = DEFAULT_SPLITS,
    seed: int = 0,
    split_by: str = "image",
    block_size: float | None = None,
    split_file: str | Path | None = None,
    decisions: str | Path | None = None,
    shard_mb: float = 256.0,
    name: str | None = None,
    overwrite: bool = True,
) -> ExportSummary:
    """Write the export folder (see the module docstring); returns what was written."""
    start = time.perf_counter()
    data, out = Path(data_dir), Path(out_dir)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown format(s) {bad}; choose from {', '.join(FORMATS)}")
    if not (data / "samples.parquet").exists():
        raise FileNotFoundError(f"{data}: no samples.parquet — run `geopixeld describe` first")
    if out.exists() and overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    samples = pq.read_table(data / "samples.parquet").to_pylist()
    tiles = {t["tile_id"]: t for t in pq.read_table(data / "tiles.parquet").to_pylist()}
    meta = _image_meta(list(tiles.values()))
    explicit = read_split_file(split_file) if split_file else None
    split_of = assign_splits(meta, ratios, split_names, seed, split_by, block_size, explicit)
    review = load_review(data, decisions)

    rows_by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in split_names}
    review_counts: Counter[str] = Counter()
    rejected = 0
    for s in samples:
        t = tiles[s["tile_id"]]
        d = review.get(s["tile_id"], {})
        status = d.get("review_status") or "unreviewed"
        review_counts[status] += 1
        if status == "rejected":
            rejected += 1
            continue
        if status == "fixed" and d.get("gcg_caption") is not None:
            s = {**s, **{k: d[k] for k in ("gcg_caption", "caption", "phrases", "masks")}}
        split = split_of[t["image_id"]]
        decided = d.get("decided_at")
        rows_by_split.setdefault(split, []).append({
            "id": s["tile_id"],
            "tile_id": s["tile_id"],
            "image": {"bytes": (data / s["tile_path"]).read_bytes(), "path": f"{s['tile_id']}.png"},
            "width": s["width"],
            "height": s["height"],
            "caption": s["caption"],
            "gcg_caption": s["gcg_caption"],
            "phrases": s["phrases"],
            "masks": s["masks"],
            "categories": [p["category"] for p in s["phrases"]],
            "crs": t["crs"],
            "transform": t["transform"],
            "gsd": t["gsd"],
            "source_image": t["source_path"],
            "image_id": t["image_id"],
            "split": split,
            "review_status": status,
            "reviewer": d.get("reviewer"),
            "decided_at": decided.isoformat() if decided is not None and hasattr(decided, "isoformat") else decided,
            "flags": s["flags"],
            "max_severity": s["max_severity"],
            "lmm_model": s["lmm_model"],
            "prompt_version": s["prompt_version"],
        })
    splits = {k: len(v) for k, v in rows_by_split.items() if v}
    files: list[Path] = []
    ious: list[float] = []
    for split, rows in rows_by_split.items():
        if not rows:
            continue
        if "gcg-parquet" in formats:
            files += write_shards(rows, split, out / "data", int(shard_mb * 2**20))
        if "coco" in formats:
            files += write_coco(rows, split, out / "coco")
        if "geopixel" in formats:
            written, split_ious = write_geopixel(rows, split, out / "geopixel")
            files += written
            ious += split_ious
        if "glamm" in formats:
            files += write_glamm(rows, split, out / "glamm")
    all_rows = [r for rows in rows_by_split.values() for r in rows]
    dataset_name = name or data.resolve().name
    info: dict[str, Any] = {
        "name": dataset_name,
        "splits": splits,
        "formats": list(formats),
        "crs": sorted({r["crs"] for r in all_rows if r["crs"]}),
        "gsd": sorted({round(r["gsd"], 6) for r in all_rows if r["gsd"]}),
        "bbox_wgs84": _wgs84_bbox(meta),
        "review": dict(review_counts),
        "lmm_models": sorted({r["lmm_model"] for r in all_rows if r["lmm_model"]}),
        "prompt_versions": sorted({r["prompt_version"] for r in all_rows if r["prompt_version"]}),
        "source": str(data),
    }
    if "gcg-parquet" in formats:
        (out / "README.md").write_text(dataset_card(dataset_name, splits, info))
    (out / "export.json").write_text(json.dumps(info, indent=1))
    return ExportSummary(
        out_dir=str(out), splits=splits, formats=list(formats), files=len(files) + 2, rejected=rejected,
        review=dict(review_counts), polygon_iou_min=min(ious) if ious else None,
        polygon_iou_below_098=sum(1 for v in ious if v < 0.98), seconds=time.perf_counter() - start,
    )


__all__ = ["FORMATS", "ExportSummary", "export"]
