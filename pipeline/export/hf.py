"""Hugging Face ``datasets`` layout: ``data/{split}-{i:05d}-of-{n:05d}.parquet`` and a dataset card.

The Parquet files carry ``datasets`` feature metadata (the ``huggingface`` schema key) so the ``image``
column (struct ``bytes, path``) loads as an ``Image`` feature; the card's ``configs:`` YAML maps the
splits to their shards, so ``datasets.load_dataset(EXPORT)`` works offline on the folder.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..shards import shard_name
from ..tables import FLAG_TYPE, PHRASE_TYPE, RLE_TYPE
from .atomic import writing

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

GCG_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("tile_id", pa.string()),
        ("image", IMAGE_TYPE),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("caption", pa.string()),
        ("gcg_caption", pa.string()),
        ("phrases", pa.list_(PHRASE_TYPE)),
        ("masks", pa.list_(RLE_TYPE)),
        ("categories", pa.list_(pa.string())),
        ("crs", pa.string()),
        ("transform", pa.list_(pa.float64())),
        ("gsd", pa.float64()),
        ("source_image", pa.string()),
        ("image_id", pa.string()),
        ("split", pa.string()),
        ("review_status", pa.string()),
        ("reviewer", pa.string()),
        ("decided_at", pa.string()),
        ("flags", pa.list_(FLAG_TYPE)),
        ("max_severity", pa.string()),
        ("lmm_model", pa.string()),
        ("prompt_version", pa.string()),
    ]
)


def hf_feature(t: pa.DataType) -> Any:
    """``datasets`` feature JSON for an Arrow type (``List`` for lists, dicts for structs)."""
    if pa.types.is_struct(t):
        return {t.field(i).name: hf_feature(t.field(i).type) for i in range(t.num_fields)}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"_type": "List", "feature": hf_feature(t.value_type)}
    names = {pa.string(): "string", pa.int32(): "int32", pa.int64(): "int64", pa.float64(): "float64",
             pa.float32(): "float32", pa.bool_(): "bool", pa.binary(): "binary"}
    return {"_type": "Value", "dtype": names.get(t, str(t))}


def hf_metadata(schema: pa.Schema) -> dict[bytes, bytes]:
    features = {f.name: hf_feature(f.type) for f in schema}
    features["image"] = {"_type": "Image"}
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def row_bytes(row: dict[str, Any]) -> int:
    """Approximate encoded size of one export row in bytes (image + caption + mask RLE strings)."""
    return len(row["image"]["bytes"]) + len(row["gcg_caption"]) + sum(len(m["counts"]) for m in row["masks"])


class ShardWriter:
    """One split's rows → ``{split}-{i:05d}-of-{n:05d}.parquet`` shards, written row group by row group.

    Rows are buffered only until a row group is full (``row_group_rows`` rows or ``row_group_bytes``
    bytes, whichever comes first) and then written; a shard is closed when it reaches ``target_bytes``
    and the next one opened. Shards are written as ``{split}-{i:05d}.parquet.partial`` and take their
    final ``-of-{n}`` names in :meth:`close`, when ``n`` is known. Peak memory is one row group, whatever
    the number of rows.
    """

    def __init__(
        self,
        split: str,
        out: Path,
        target_bytes: int = 256 * 2**20,
        row_group_rows: int = 64,
        row_group_bytes: int = 16 * 2**20,
    ) -> None:
        self.split, self.out = split, out
        self.target_bytes = max(1, target_bytes)
        self.row_group_rows, self.row_group_bytes = max(1, row_group_rows), max(1, row_group_bytes)
        self.schema = GCG_SCHEMA.with_metadata(hf_metadata(GCG_SCHEMA))
        self.rows = 0
        self._buffer: list[dict[str, Any]] = []
        self._buffer_bytes = 0
        self._shard_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._partials: list[Path] = []

    def add(self, row: dict[str, Any]) -> None:
        """Queue one row; writes a row group when the buffer is full."""
        size = row_bytes(row)
        if self._writer is not None and self._shard_bytes + self._buffer_bytes + size > self.target_bytes:
            self._flush()
            self._close_shard()
        self._buffer.append(row)
        self._buffer_bytes += size
        self.rows += 1
        if len(self._buffer) >= self.row_group_rows or self._buffer_bytes >= self.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            self.out.mkdir(parents=True, exist_ok=True)
            path = self.out / f"{self.split}-{len(self._partials):05d}.parquet.partial"
            self._partials.append(path)
            with writing(path):
                # PNG bytes are compressed already: no dictionary and no codec for them (less memory and time)
                self._writer = pq.ParquetWriter(
                    path, self.schema, use_dictionary=[n for n in self.schema.names if n != "image"],
                    compression={n: "none" if n == "image" else "snappy" for n in self.schema.names},
                )
        path = self._partials[-1]
        with writing(path):
            table = pa.Table.from_pylist(self._buffer, schema=self.schema)
            self._writer.write_table(table, row_group_size=len(self._buffer))
        self._shard_bytes += self._buffer_bytes
        self._buffer, self._buffer_bytes = [], 0

    def _close_shard(self) -> None:
        if self._writer is not None:
            with writing(self._partials[-1]):
                self._writer.close()
            self._writer, self._shard_bytes = None, 0

    def close(self) -> list[Path]:
        """Write what is buffered, close the last shard and give every shard its final name."""
        self._flush()
        self._close_shard()
        n = len(self._partials)
        paths = []
        for i, partial in enumerate(self._partials):
            final = self.out / shard_name(self.split, i, n)
            partial.replace(final)
            paths.append(final)
        return paths

    def abort(self) -> None:
        """Close and delete whatever was written."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        for partial in self._partials:
            partial.unlink(missing_ok=True)


def write_shards(rows: Iterable[dict[str, Any]], split: str, out: Path, target_bytes: int) -> list[Path]:
    """Write one split's rows (any iterable, consumed once) as shards; returns the files written."""
    writer = ShardWriter(split, out, target_bytes)
    for row in rows:
        writer.add(row)
    return writer.close()


def dataset_card(name: str, splits: dict[str, int], meta: dict[str, Any]) -> str:
    """README.md with the ``configs:`` front matter ``datasets`` reads, and a human description."""
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: data/{split}-*"]
    lines += ["license: other", "task_categories:", "- image-segmentation", "- image-to-text", "tags:",
              "- remote-sensing", "- grounded-conversation-generation", "- geopixeld", "---", ""]
    lines += [
        f"# {name}",
        "",
        "A pixel-grounded remote-sensing caption dataset in the GeoPixelD style, built with geopixeld.",
        "Each row is one tile: `gcg_caption` marks grounded phrases as `<p> phrase </p> [SEG]`, `masks` holds",
        "one COCO RLE per `[SEG]` in order, `phrases` gives each phrase's character span in `caption`.",
        "",
        "| split | samples |",
        "|---|---|",
        *[f"| {s} | {n} |" for s, n in splits.items()],
        "",
        f"- LMM models: {', '.join(meta.get('lmm_models', [])) or 'n/a'}",
        f"- Prompt versions: {', '.join(meta.get('prompt_versions', [])) or 'n/a'}",
        f"- Review: {json.dumps(meta.get('review', {}))}",
        f"- CRS: {', '.join(c for c in meta.get('crs', []) if c) or 'not georeferenced'}",
        "",
        "Other formats in this folder: `coco/` (instances and captions, GCG evaluation ground truth),",
        "`geopixel/` (GeoPixel's own training format), `glamm/` (GLaMM's GCG format).",
        "",
        "Source imagery and annotations keep their own licences (for DOTA/iSAID: academic use).",
        "",
    ]
    return "\n".join(lines)
