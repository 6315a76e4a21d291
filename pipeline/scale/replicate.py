"""A described folder replicated under new tile ids: ``k`` copies of every sample, same images.

This is how the memory guards grow a dataset without running prepare and describe again: copy ``c``
of tile ``T`` of image ``I`` becomes tile ``R{c:05d}_T`` of image ``R{c:05d}_I`` (so copies land in
different splits), its PNG a hard link to the original (a copy where links are not possible). Tables are
written a copy at a time, never held whole.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

TABLES = ("samples", "tiles", "instances", "clusters")
ID_COLUMNS = ("tile_id", "image_id", "cluster_id")


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _renamed(table: pa.Table, prefix: str, path_columns: tuple[str, ...]) -> pa.Table:
    """``table`` with its id columns prefixed and tile paths pointing at the renamed files."""
    for name in (*ID_COLUMNS, *path_columns):
        if name not in table.schema.names:
            continue
        col = table.column(name)
        if name in path_columns:
            new = pc.replace_substring_regex(col, r"^(\w+)/", rf"\1/{prefix}")
        else:
            new = pc.binary_join_element_wise(pa.scalar(prefix), col, "")
        table = table.set_column(table.schema.get_field_index(name), name, new.cast(table.schema.field(name).type))
    return table


def replicate(src: str | Path, dst: str | Path, copies: int) -> int:
    """Write ``dst`` with the tables of ``src`` (samples, tiles, instances, clusters when present) and its
    tile PNGs, ``copies`` times each under new ids. Returns the number of samples written.
    """
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    paths = ("tile_path", "marks_path")
    tables = {n: pq.read_table(src / f"{n}.parquet") for n in TABLES if (src / f"{n}.parquet").is_file()}
    tile_paths = [
        rel for col in paths if col in tables["tiles"].schema.names for rel in tables["tiles"].column(col).to_pylist()
    ]
    writers = {n: pq.ParquetWriter(dst / f"{n}.parquet.tmp", t.schema) for n, t in tables.items()}
    try:
        for c in range(copies):
            prefix = f"R{c:05d}_"
            for n, t in tables.items():
                writers[n].write_table(_renamed(t, prefix, paths))
            for rel in tile_paths:
                folder, name = rel.split("/", 1)
                _link(src / rel, dst / folder / f"{prefix}{name}")
    finally:
        for w in writers.values():
            w.close()
    for n in tables:
        (dst / f"{n}.parquet.tmp").replace(dst / f"{n}.parquet")
    return copies * tables["samples"].num_rows
