"""Arrow schemas of the prepare outputs (``tiles``, ``instances``, ``clusters``) and their writers.

The schemas are the contract with describe, export and review; the README lists every column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

RLE_TYPE = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])

TILES_SCHEMA = pa.schema(
    [
        ("tile_id", pa.string()),
        ("image_id", pa.string()),
        ("source_path", pa.string()),
        ("x0", pa.int32()),
        ("y0", pa.int32()),
        ("x1", pa.int32()),
        ("y1", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("crs", pa.string()),
        ("transform", pa.list_(pa.float64())),
        ("gsd", pa.float64()),
        ("nodata_fraction", pa.float64()),
        ("tile_path", pa.string()),
        ("marks_path", pa.string()),
        ("n_instances", pa.int32()),
        ("n_marks", pa.int32()),
        ("n_clusters", pa.int32()),
    ]
)

INSTANCES_SCHEMA = pa.schema(
    [
        ("tile_id", pa.string()),
        ("image_id", pa.string()),
        ("instance_id", pa.int64()),
        ("category", pa.string()),
        ("category_name", pa.string()),
        ("rle", RLE_TYPE),
        ("bbox", pa.list_(pa.float64())),
        ("area", pa.float64()),
        ("visible_fraction", pa.float64()),
        ("truncated", pa.bool_()),
        ("position", pa.string()),
        ("size_class", pa.string()),
        ("centroid_x", pa.float64()),
        ("centroid_y", pa.float64()),
        ("length_px", pa.float64()),
        ("width_px", pa.float64()),
        ("length_m", pa.float64()),
        ("width_m", pa.float64()),
        ("orientation_deg", pa.float64()),
        ("orientation_word", pa.string()),
        ("elongation", pa.float64()),
        ("mark", pa.int32()),
        ("mark_x", pa.float64()),
        ("mark_y", pa.float64()),
        ("mark_box", pa.list_(pa.float64())),
        ("cluster_id", pa.string()),
        ("geometry_kind", pa.string()),
        ("prompt_box", pa.list_(pa.float64())),
        ("mask_source", pa.string()),
        ("mask_model", pa.string()),
        ("mask_score", pa.float64()),
        ("source_ref", pa.string()),
        ("sam_predicted_iou", pa.float64()),
        ("sam_stability", pa.float64()),
        ("sam_box_iou", pa.float64()),
        ("sam_box_fill", pa.float64()),
        ("sam_flags", pa.list_(pa.string())),
        ("category_source", pa.string()),
        ("category_answer", pa.string()),
        ("category_flags", pa.list_(pa.string())),
    ]
)

CLUSTERS_SCHEMA = pa.schema(
    [
        ("cluster_id", pa.string()),
        ("tile_id", pa.string()),
        ("image_id", pa.string()),
        ("category", pa.string()),
        ("category_name", pa.string()),
        ("instance_ids", pa.list_(pa.int64())),
        ("position", pa.string()),
        ("count", pa.int32()),
        ("count_word", pa.string()),
        ("bbox", pa.list_(pa.float64())),
    ]
)

SCHEMAS = {"tiles": TILES_SCHEMA, "instances": INSTANCES_SCHEMA, "clusters": CLUSTERS_SCHEMA}


def write_table(rows: list[dict[str, Any]], schema: pa.Schema, path: Path) -> None:
    """Rows (dicts keyed by column) → Parquet, atomically (a temp file renamed into place)."""
    table = pa.Table.from_pylist(rows, schema=schema)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def concat_parts(paths: list[Path], schema: pa.Schema, out: Path) -> int:
    """Concatenate per-image part files into one table; returns its row count."""
    tables = [pq.read_table(p, schema=schema) for p in paths if p.exists()]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(out)
    return table.num_rows

PHRASE_TYPE = pa.struct(
    [
        ("text", pa.string()),
        ("start", pa.int32()),
        ("end", pa.int32()),
        ("instance_ids", pa.list_(pa.int64())),
        ("category", pa.string()),
        ("kind", pa.string()),
    ]
)
#: A validation flag. ``phrase`` (index into the sample's ``phrases``) and ``instance_ids`` say which object
#: a flag is about; both are null for sample-level flags (and in files written before they existed).
FLAG_TYPE = pa.struct(
    [
        ("code", pa.string()),
        ("severity", pa.string()),
        ("detail", pa.string()),
        ("phrase", pa.int32()),
        ("instance_ids", pa.list_(pa.int64())),
    ]
)

SAMPLES_SCHEMA = pa.schema(
    [
        ("tile_id", pa.string()),
        ("image_id", pa.string()),
        ("tile_path", pa.string()),
        ("marks_path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("gcg_caption", pa.string()),
        ("caption", pa.string()),
        ("phrases", pa.list_(PHRASE_TYPE)),
        ("masks", pa.list_(RLE_TYPE)),
        ("flags", pa.list_(FLAG_TYPE)),
        ("max_severity", pa.string()),
        ("holistic", pa.string()),
        ("n_instances", pa.int32()),
        ("n_grounded_instances", pa.int32()),
        ("lmm_model", pa.string()),
        ("prompt_version", pa.string()),
        # needs-review score in [0, 1) (pipeline.validate.review_score); absent in files written before it
        ("review_score", pa.float64()),
    ]
)
SCHEMAS["samples"] = SAMPLES_SCHEMA
