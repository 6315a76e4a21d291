"""Merging part files: streamed row group by row group, a truncated part named, a rerun redoing only it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import tables
from pipeline.config import PrepareConfig
from pipeline.prepare import prepare
from pipeline.tables import CLUSTERS_SCHEMA, PartFileError, concat_parts

ROOT = Path(__file__).resolve().parents[2]


def _cluster_rows(n: int, tag: str, pad: int = 0) -> list[dict[str, object]]:
    return [
        {"cluster_id": f"{tag}#c{k}" + "x" * pad, "tile_id": tag, "image_id": tag, "category": "Small_Vehicle",
         "category_name": "small vehicle", "instance_ids": [k, k + 1], "position": "center", "count": 2,
         "count_word": "two", "bbox": [0.0, 0.0, 1.0, 1.0]}
        for k in range(n)
    ]


def test_parts_are_concatenated_in_order_and_conformed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables, "MERGE_ROW_GROUP", 5)
    paths = []
    for k in range(4):
        p = tmp_path / f"part{k}.parquet"
        tables.write_table(_cluster_rows(3, f"t{k}"), CLUSTERS_SCHEMA, p)
        paths.append(p)
    # An older part without the `bbox` column (written before it existed) comes back with nulls.
    old = pa.Table.from_pylist(_cluster_rows(2, "old"), schema=CLUSTERS_SCHEMA).drop_columns(["bbox"])
    pq.write_table(old, tmp_path / "old.parquet")
    paths += [tmp_path / "old.parquet", tmp_path / "missing.parquet"]
    out = tmp_path / "clusters.parquet"
    assert concat_parts(paths, CLUSTERS_SCHEMA, out) == 14
    merged = pq.read_table(out)
    assert merged.schema.equals(CLUSTERS_SCHEMA)
    assert merged.column("tile_id").to_pylist() == [f"t{k}" for k in range(4) for _ in range(3)] + ["old", "old"]
    assert merged.column("bbox").to_pylist()[-2:] == [None, None]
    assert pq.ParquetFile(out).num_row_groups > 1  # written as it was read, not as one table
    assert not list(tmp_path.glob("*.tmp"))


def test_a_truncated_part_is_named_and_nothing_is_replaced(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    tables.write_table(_cluster_rows(3, "a"), CLUSTERS_SCHEMA, good)
    tables.write_table(_cluster_rows(3, "b"), CLUSTERS_SCHEMA, bad)
    bad.write_bytes(bad.read_bytes()[:-40])  # cut short, as by a crash or a full disk
    out = tmp_path / "clusters.parquet"
    out.write_bytes(b"previous")
    with pytest.raises(PartFileError, match="bad.parquet: part file is truncated"):
        concat_parts([good, bad], CLUSTERS_SCHEMA, out)
    assert out.read_bytes() == b"previous"
    assert not list(tmp_path.glob("*.tmp"))


def test_a_rerun_redoes_only_the_image_whose_part_is_truncated(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "out"
    first = prepare([data_dir / "isaid"], PrepareConfig(format="isaid"), out, progress=False)
    part = out / "parts" / "P0005" / "instances.parquet"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    second = prepare([data_dir / "isaid"], PrepareConfig(format="isaid"), out, progress=False)
    status = {r["image_id"]: r["status"] for r in json.loads((out / "prepare_report.json").read_text())["images"]}
    assert status == {"P0003": "reused", "P0005": "ok"}
    assert second.instances == first.instances
    assert pq.read_table(out / "instances.parquet").num_rows == first.instances


MERGE_CHILD = """
import resource, sys
from pathlib import Path
from pipeline import tables
tables.MERGE_ROW_GROUP = 2000
parts = sorted(Path(sys.argv[1]).glob("part*.parquet"))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows = tables.concat_parts(parts, tables.CLUSTERS_SCHEMA, Path(sys.argv[2]))
print(rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def _merge_growth_mb(folder: Path, parts: int) -> float:
    folder.mkdir()
    rows = _cluster_rows(2000, "t", pad=1000)  # ~1 KB a row, ~2 MB a part
    for k in range(parts):
        tables.write_table(rows, CLUSTERS_SCHEMA, folder / f"part{k:03d}.parquet")
    proc = subprocess.run([sys.executable, "-c", MERGE_CHILD, str(folder), str(folder / "merged.parquet")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    n, growth_kb = proc.stdout.split()
    assert int(n) == 2000 * parts
    return int(growth_kb) / 1024


def test_merge_memory_does_not_grow_with_the_number_of_parts(tmp_path: Path) -> None:
    small = _merge_growth_mb(tmp_path / "small", 6)  # ~12 MB of rows
    large = _merge_growth_mb(tmp_path / "large", 24)  # ~48 MB of rows
    assert large < small + 12, (small, large)
    assert large < 30, large  # far less than the 48 MB of rows
