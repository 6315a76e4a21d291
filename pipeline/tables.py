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


MERGE_ROW_GROUP = 65_536  # rows per row group of a merged table (memory holds about one row group)


class PartFileError(OSError):
    """A part file that cannot be read back (truncated by a crash, overwritten, not Parquet)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


def check_part(path: Path) -> int:
    """Row count of a part file from its footer; raises ``PartFileError`` naming it when unreadable."""
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (pa.ArrowException, OSError) as exc:
        raise PartFileError(path, f"part file is truncated or not Parquet ({exc})") from None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in order (missing ones null, types cast)."""
    columns = []
    for f in schema:
        if f.name in table.column_names:
            col = table.column(f.name)
            columns.append(col if col.type == f.type else col.cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def concat_parts(paths: list[Path], schema: pa.Schema, out: Path) -> int:
    """Concatenate per-image part files into one table, one row group in memory at a time; returns rows.

    Missing parts are skipped. Every part's footer is checked before anything is written, so a truncated
    or unreadable part raises ``PartFileError`` naming it and leaves ``out`` as it was; the result is
    written to a temporary name and renamed when complete.
    """
    present = [p for p in paths if p.exists()]
    for p in present:
        check_part(p)
    tmp = out.with_name(out.name + ".tmp")
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            buffered: list[pa.Table] = []  # small parts are gathered into row groups of ~MERGE_ROW_GROUP rows
            for p in present:
                try:
                    part = pq.ParquetFile(p)
                    for i in range(part.num_row_groups):
                        group = _conform(part.read_row_group(i), schema)
                        buffered.append(group)
                        rows += group.num_rows
                        if sum(t.num_rows for t in buffered) >= MERGE_ROW_GROUP:
                            writer.write_table(pa.concat_tables(buffered))
                            buffered = []
                except (pa.ArrowException, OSError) as exc:
                    raise PartFileError(p, f"part file cannot be read ({exc})") from None
            if buffered:
                writer.write_table(pa.concat_tables(buffered))
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rows

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
