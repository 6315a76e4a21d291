"""What a release contains: the export scan, file checksums, the sample index and ``manifest.json``.

An EXPORT folder (written by the exporter) holds sample shards ``data/{split}-{i:05d}-of-{n:05d}.parquet``
with a unique string ``id`` column, a dataset card ``README.md``, side files (``coco/``, ``geopixel/``,
``glamm/``) and optionally ``export.json``. :func:`scan_export` validates it and gathers everything the
manifest, the Croissant file and the changelog need; :func:`build_manifest` writes the manifest model.

The manifest lists every file of the release except itself with sha256, size in bytes, row count (parquet
only) and split (``None`` for files that belong to no split).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import re
import subprocess
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from pipeline.release.errors import ExportError

#: Version of the manifest layout; bump when fields change meaning.
SCHEMA_VERSION = 1
#: Relative path of the per-sample index (id, split, content hash) inside a release.
SAMPLE_INDEX_PATH = "meta/samples.parquet"
#: Files the release tooling writes itself; an export may not contain them.
GENERATED_PATHS = frozenset({"manifest.json", "croissant.json", "CHANGELOG.md", SAMPLE_INDEX_PATH})
#: Columns whose distinct values are recorded in the manifest (provenance of the samples).
PROVENANCE_COLUMNS = ("lmm_model", "prompt_version")

_SHARD_RE = re.compile(r"^data/(?P<split>[A-Za-z0-9_.]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")
_CHUNK = 1 << 20
#: Rows per record batch when hashing sample shards: rows carry their tile PNG, so a batch is a few MB.
HASH_BATCH_ROWS = 32
#: Rows per batch when reading one small column (review status, CRS, GSD, ...).
COLUMN_BATCH_ROWS = 65536


class FileEntry(BaseModel):
    """One file of a release: relative posix path, sha256 (hex), size in bytes, parquet rows, split."""

    path: str
    sha256: str
    bytes: int
    rows: int | None = None
    split: str | None = None


class Manifest(BaseModel):
    """``manifest.json``: the self-description and checksum list of one release."""

    schema_version: int = SCHEMA_VERSION
    name: str
    version: str
    created: str = Field(description="UTC timestamp of the publish, ISO 8601")
    geopixeld_version: str
    git_commit: str | None = None
    lmm_models: list[str] = Field(default_factory=list)
    prompt_versions: list[str] = Field(default_factory=list)
    counts: dict[str, Any] = Field(default_factory=dict)
    review: dict[str, Any] = Field(default_factory=dict)
    columns: dict[str, str] = Field(default_factory=dict, description="parquet column -> arrow type")
    geo: dict[str, Any] = Field(default_factory=dict)
    previous_version: str | None = None
    bump: str | None = None
    files: list[FileEntry] = Field(default_factory=list)

    def file(self, path: str) -> FileEntry:
        """The entry for ``path``; ``KeyError`` if the release has no such file."""
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(f"{self.name}=={self.version} has no file {path!r}")

    def parquet_by_split(self) -> dict[str, list[str]]:
        """Sample shard paths grouped by split, in shard order."""
        shards: dict[str, list[str]] = {}
        for entry in sorted(self.files, key=lambda e: e.path):
            match = _SHARD_RE.match(entry.path)
            if match:
                shards.setdefault(match["split"], []).append(entry.path)
        return shards

    def to_json(self) -> bytes:
        """Canonical UTF-8 JSON bytes (indented, stable key order)."""
        return (json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=False) + "\n").encode()


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
        match = _SHARD_RE.match(path)
        if match:
            return match["split"]
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
    index, split_rows = build_sample_index(root, shards)
    scan = ExportScan(
        root=root,
        files=files,
        shards=shards,
        columns=columns,
        split_rows=split_rows,
        review=_review_stats(root, shards, export_meta),
        lmm_models=_distinct(root, shards, "lmm_model", export_meta.get("lmm_models")),
        prompt_versions=_distinct(root, shards, "prompt_version", export_meta.get("prompt_versions")),
        geo=_geo(root, shards, export_meta),
        export_meta=export_meta,
        index=index,
    )
    return scan


def build_sample_index(root: Path, shards: Mapping[str, list[str]]) -> tuple[pa.Table, dict[str, int]]:
    """Per-sample ``id``, ``split`` and ``content_sha256`` (see :func:`row_hashes`) plus rows per split.

    Shards are read one row group at a time and hashed ``HASH_BATCH_ROWS`` rows at a time, so memory
    follows one row group (the exporter writes them of at most 64 rows / 32 MB), not the shard; what is kept is the index itself (three short strings per sample).

    Raises :class:`ExportError` on a null or duplicated id, naming the id and the shard.
    """
    ids: list[str] = []
    splits: list[str] = []
    hashes: list[str] = []
    seen: dict[str, str] = {}
    rows: dict[str, int] = {}
    for split, paths in sorted(shards.items()):
        rows[split] = 0
        for rel in paths:
            for batch in _row_batches(root / rel):
                batch_ids = batch.column("id").to_pylist()
                for sample_id in batch_ids:
                    if sample_id is None:
                        raise ExportError(f"{rel}: null sample id")
                    sample_id = str(sample_id)
                    if sample_id in seen:
                        raise ExportError(f"duplicate sample id {sample_id!r} in {seen[sample_id]} and {rel}")
                    seen[sample_id] = rel
                    ids.append(sample_id)
                hashes.extend(row_hashes(batch))
                splits.extend([split] * batch.num_rows)
                rows[split] += batch.num_rows
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "split": pa.array(splits, pa.string()),
            "content_sha256": pa.array(hashes, pa.string()),
        }
    )
    return table, rows


def _row_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """A shard's rows, one row group at a time (``iter_batches`` reads ahead several), in small batches."""
    handle = pq.ParquetFile(path, pre_buffer=False)
    for group in range(handle.num_row_groups):
        yield from handle.read_row_group(group, use_threads=False).to_batches(max_chunksize=HASH_BATCH_ROWS)


def row_hashes(batch: pa.RecordBatch | pa.Table, key: str = "id") -> list[str]:
    """sha256 (hex) of each row's columns other than ``key``, independent of column order.

    Each column contributes its name and a type-tagged, length-prefixed encoding of its value (nested
    lists and structs included), so different values never encode to the same bytes.
    """
    names = sorted(n for n in batch.schema.names if n != key)
    columns = [batch.column(n).to_pylist() for n in names]
    encoded_names = [_encode(n) for n in names]
    out: list[str] = []
    for row in range(batch.num_rows):
        digest = hashlib.sha256()
        for name, values in zip(encoded_names, columns, strict=True):
            digest.update(name)
            digest.update(_encode(values[row]))
        out.append(digest.hexdigest())
    return out


def file_sha256(path: Path) -> tuple[str, int]:
    """sha256 (hex) and size in bytes of a local file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def copy_with_sha256(src: Path, dst: Path) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` and return sha256 and size of the bytes actually written."""
    digest = hashlib.sha256()
    size = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as reader, open(dst, "wb") as writer:
        for chunk in iter(lambda: reader.read(_CHUNK), b""):
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def geopixeld_version() -> str:
    """``pipeline.__version__``; the installed distribution's version if the package is shadowed.

    (A ``tests/pipeline`` folder on ``sys.path`` can turn ``pipeline`` into a namespace package without
    ``__version__`` while its submodules still import through the editable install.)
    """
    try:
        from pipeline import __version__
    except ImportError:
        return importlib.metadata.version("geopixeld")
    return __version__


def git_commit() -> str | None:
    """Commit of the checkout the ``pipeline`` package runs from; ``None`` outside a git checkout."""
    package_dir = Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "-C", str(package_dir), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def build_manifest(
    scan: ExportScan,
    *,
    name: str,
    version: str,
    created: str,
    files: list[FileEntry],
    previous_version: str | None,
    bump: str | None,
) -> Manifest:
    """Assemble the manifest of a release from its export scan and the staged file entries."""
    total = sum(scan.split_rows.values())
    return Manifest(
        name=name,
        version=version,
        created=created,
        geopixeld_version=geopixeld_version(),
        git_commit=git_commit(),
        lmm_models=scan.lmm_models,
        prompt_versions=scan.prompt_versions,
        counts={
            "samples": total,
            "splits": dict(sorted(scan.split_rows.items())),
            "files": len(files) + 1,
            "bytes": sum(f.bytes for f in files),
        },
        review=scan.review,
        columns=scan.columns,
        geo=scan.geo,
        previous_version=previous_version,
        bump=bump,
        files=sorted(files, key=lambda f: f.path),
    )


def _encode(value: Any) -> bytes:
    if value is None:
        return b"N"
    if isinstance(value, bool):
        return b"T" if value else b"F"
    if isinstance(value, int):
        return b"I" + _sized(str(value).encode())
    if isinstance(value, float):
        return b"D" + _sized(repr(value).encode())
    if isinstance(value, str):
        return b"S" + _sized(value.encode())
    if isinstance(value, bytes | bytearray | memoryview):
        return b"B" + _sized(bytes(value))
    if isinstance(value, list | tuple):
        return b"L" + _sized(b"".join(_encode(v) for v in value))
    if isinstance(value, dict):
        return b"M" + _sized(b"".join(_encode(str(k)) + _encode(value[k]) for k in sorted(value, key=str)))
    return b"O" + _sized(str(value).encode())


def _sized(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


def _group_shards(root: Path, files: list[str]) -> dict[str, list[str]]:
    shards: dict[str, dict[int, str]] = {}
    counts: dict[str, set[int]] = {}
    for rel in files:
        if not rel.endswith(".parquet") or not rel.startswith("data/"):
            continue
        match = _SHARD_RE.match(rel)
        if match is None:
            raise ExportError(
                f"{root / rel}: expected a shard named data/{{split}}-{{i:05d}}-of-{{n:05d}}.parquet"
            )
        shards.setdefault(match["split"], {})[int(match["index"])] = rel
        counts.setdefault(match["split"], set()).add(int(match["count"]))
    if not shards:
        raise ExportError(f"export {root} has no sample shards data/{{split}}-{{i:05d}}-of-{{n:05d}}.parquet")
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


def _iter_column(root: Path, shards: Mapping[str, list[str]], column: str) -> Iterator[tuple[str, pa.Array]]:
    """``(split, values)`` of one column of every shard, in batches (only that column is read)."""
    for split, paths in shards.items():
        for rel in paths:
            handle = pq.ParquetFile(root / rel)
            if column in handle.schema_arrow.names:
                for batch in handle.iter_batches(batch_size=COLUMN_BATCH_ROWS, columns=[column]):
                    yield split, batch.column(0)


def _review_stats(
    root: Path, shards: Mapping[str, list[str]], export_meta: Mapping[str, Any]
) -> dict[str, Any]:
    total: Counter[str] = Counter()
    by_split: dict[str, Counter[str]] = {}
    found = False
    for split, values in _iter_column(root, shards, "review_status"):
        found = True
        counts = Counter("none" if v is None else str(v) for v in values.to_pylist())
        total.update(counts)
        by_split.setdefault(split, Counter()).update(counts)
    if not found:
        fallback = export_meta.get("review")
        return {"source": "export.json", "total": dict(fallback)} if isinstance(fallback, dict) else {}
    return {
        "source": "review_status",
        "total": dict(sorted(total.items())),
        "by_split": {s: dict(sorted(c.items())) for s, c in sorted(by_split.items())},
    }


def _distinct(root: Path, shards: Mapping[str, list[str]], column: str, extra: Any) -> list[str]:
    values: set[str] = {str(v) for v in extra} if isinstance(extra, list) else set()
    for _, array in _iter_column(root, shards, column):
        values.update(str(v) for v in pc.unique(array).to_pylist() if v is not None)
    return sorted(values)


def _geo(root: Path, shards: Mapping[str, list[str]], export_meta: Mapping[str, Any]) -> dict[str, Any]:
    crs = set(_distinct(root, shards, "crs", export_meta.get("crs")))
    listed = export_meta.get("gsd")
    gsd: list[float] = [float(g) for g in listed if _finite(g)] if isinstance(listed, list) else []
    for _, array in _iter_column(root, shards, "gsd"):
        if pa.types.is_floating(array.type) or pa.types.is_integer(array.type):
            finite = [float(v) for v in array.to_pylist() if _finite(v)]
            gsd = [min([*gsd, *finite]), max([*gsd, *finite])] if gsd or finite else []  # a running range
    bbox = export_meta.get("bbox_wgs84")
    valid_bbox = isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)
    return {
        "crs": sorted(crs),
        "gsd_m": [min(gsd), max(gsd)] if gsd else None,
        "bbox_wgs84": [float(v) for v in bbox] if isinstance(bbox, list) and valid_bbox else None,
    }


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
