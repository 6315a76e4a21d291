"""Scan an EXPORT folder: validate its layout and gather everything a release is written from.

An EXPORT folder (written by the exporter) holds sample shards ``data/{split}-{i:05d}-of-{n:05d}.parquet``
with a unique string ``id`` column, a dataset card ``README.md``, side files (``coco/``, ``geopixel/``,
``glamm/``) and optionally ``export.json``. :func:`scan_export` validates it and gathers everything the
manifest, the Croissant file and the changelog need.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.release.errors import ExportError
from pipeline.release.export_stats import distinct_values, geo_summary, review_stats
from pipeline.release.layout import GENERATED_PATHS
from pipeline.release.sample_index import build_sample_index
from pipeline.shards import SHARD_PATTERN, parse_shard_path


@dataclass
class ExportScan:
    """Everything gathered from an EXPORT folder before publishing.

    Attributes:
        root: the export folder.
        files: relative posix paths of every file to publish, sorted.
        shards: ``{split: [shard paths]}``.
        columns: ``{column: arrow type}`` of the sample parquet schema.
        split_rows: ``{split: rows}``.
        review: ``{"total": {status: n}, "by_split": {split: {status: n}}}``.
        lmm_models / prompt_versions: distinct provenance values, sorted.
        geo: ``{"crs": [...], "gsd_m": [min, max] | None, "bbox_wgs84": [minx, miny, maxx, maxy] | None}``.
        export_meta: parsed ``export.json`` (empty if absent).
        index: sample index table (``id``, ``split``, ``content_sha256``).
    """

    root: Path
    files: list[str]
    shards: dict[str, list[str]]
    columns: dict[str, str]
    split_rows: dict[str, int]
    review: dict[str, Any]
    lmm_models: list[str]
    prompt_versions: list[str]
    geo: dict[str, Any]
    index: pa.Table
    export_meta: dict[str, Any] = field(default_factory=dict)

    def split_of(self, path: str) -> str | None:
        """The split a file belongs to: its shard split, a path component or a ``_{split}`` stem suffix."""
        shard = parse_shard_path(path)
        if shard is not None:
            return shard.split
        parts = path.split("/")
        stem = parts[-1].rsplit(".", 1)[0]
        for split in self.shards:
            if split in parts[:-1]:
                return split
        for split in sorted(self.shards, key=len, reverse=True):
            if stem == split or stem.endswith(f"_{split}"):
                return split
        return None


def scan_export(root: Path) -> ExportScan:
    """Validate an EXPORT folder and collect its statistics and sample index.

    Raises :class:`ExportError` if the folder has no sample shards, shards are missing or misnamed, the
    ``id`` column is absent, null or duplicated, or the export contains a file the release writes itself.
    """
    root = Path(root)
    if not root.is_dir():
        raise ExportError(f"export folder {root} does not exist")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    clashes = sorted(GENERATED_PATHS.intersection(files))
    if clashes:
        raise ExportError(f"export {root} contains {', '.join(clashes)}, which the release writes itself")
    shards = _group_shards(root, files)
    columns = _common_columns(root, shards)
    if "id" not in columns:
        raise ExportError(f"export {root}: the sample parquet files have no 'id' column")
    export_meta = _read_export_json(root)
    sample_index = build_sample_index(root, shards)
    return ExportScan(
        root=root,
        files=files,
        shards=shards,
        columns=columns,
        split_rows=sample_index.split_rows,
        review=review_stats(root, shards, export_meta),
        lmm_models=distinct_values(root, shards, "lmm_model", export_meta.get("lmm_models")),
        prompt_versions=distinct_values(root, shards, "prompt_version", export_meta.get("prompt_versions")),
        geo=geo_summary(root, shards, export_meta),
        export_meta=export_meta,
        index=sample_index.table,
    )


def _group_shards(root: Path, files: list[str]) -> dict[str, list[str]]:
    shards: dict[str, dict[int, str]] = {}
    counts: dict[str, set[int]] = {}
    for rel in files:
        if not rel.endswith(".parquet") or not rel.startswith("data/"):
            continue
        shard = parse_shard_path(rel)
        if shard is None:
            raise ExportError(f"{root / rel}: expected a shard named {SHARD_PATTERN}")
        shards.setdefault(shard.split, {})[shard.index] = rel
        counts.setdefault(shard.split, set()).add(shard.count)
    if not shards:
        raise ExportError(f"export {root} has no sample shards {SHARD_PATTERN}")
    for split, by_index in shards.items():
        declared = counts[split]
        if len(declared) != 1 or set(by_index) != set(range(next(iter(declared)))):
            raise ExportError(
                f"export {root}: split {split!r} has shards {sorted(by_index)} "
                f"but declares -of- {sorted(declared)}"
            )
    return {s: [by_index[i] for i in sorted(by_index)] for s, by_index in sorted(shards.items())}


def _common_columns(root: Path, shards: Mapping[str, list[str]]) -> dict[str, str]:
    """Column -> arrow type; a column typed ``null`` in one shard takes its type from another shard."""
    columns: dict[str, str] = {}
    for paths in shards.values():
        for rel in paths:
            for schema_field in pq.read_schema(root / rel):
                current = columns.get(schema_field.name)
                if current is None or current == "null":
                    columns[schema_field.name] = str(schema_field.type)
    return columns


def _read_export_json(root: Path) -> dict[str, Any]:
    path = root / "export.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object")
    return data
