"""Hugging Face ``datasets`` layout: ``data/{split}-{i:05d}-of-{n:05d}.parquet`` and a dataset card.

The Parquet files carry ``datasets`` feature metadata (the ``huggingface`` schema key) so the ``image``
column (struct ``bytes, path``) loads as an ``Image`` feature; the card's ``configs:`` YAML maps the
splits to their shards, so ``datasets.load_dataset(EXPORT)`` works offline on the folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..tables import FLAG_TYPE, PHRASE_TYPE, RLE_TYPE

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


def shard_rows(sizes: list[int], target_bytes: int) -> list[list[int]]:
    """Contiguous groups of row indexes of similar total size, about ``target_bytes`` each."""
    total = sum(sizes)
    n = max(1, math.ceil(total / max(1, target_bytes)))
    n = min(n, max(1, len(sizes)))
    per = total / n
    groups: list[list[int]] = [[] for _ in range(n)]
    acc = 0
    for i, s in enumerate(sizes):
        k = min(n - 1, int((acc + s / 2) // per)) if per > 0 else 0
        groups[k].append(i)
        acc += s
    return [g for g in groups if g]


def write_shards(rows: list[dict[str, Any]], split: str, out: Path, target_bytes: int) -> list[Path]:
    """Write one split's rows as shards; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    sizes = [len(r["image"]["bytes"]) + len(r["gcg_caption"]) + sum(len(m["counts"]) for m in r["masks"]) for r in rows]
    groups = shard_rows(sizes, target_bytes) if rows else []
    schema = GCG_SCHEMA.with_metadata(hf_metadata(GCG_SCHEMA))
    paths = []
    for i, g in enumerate(groups):
        path = out / f"{split}-{i:05d}-of-{len(groups):05d}.parquet"
        table = pa.Table.from_pylist([rows[j] for j in g], schema=schema)
        pq.write_table(table, path, row_group_size=64)
        paths.append(path)
    return paths


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
