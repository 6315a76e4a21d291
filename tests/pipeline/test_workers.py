"""Process counts for prepare, and the pandas-free start-up of a process that only prepares."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.config import PrepareConfig
from pipeline.workers import available_cpus, resolve_workers


def test_auto_is_one_per_core_and_at_most_one_per_image(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.workers as workers

    monkeypatch.setattr(workers, "available_cpus", lambda: 4)
    config = PrepareConfig(format="isaid")
    assert resolve_workers("auto", 10, config) == 4
    assert resolve_workers("AUTO ", 3, config) == 3
    assert resolve_workers("auto", 0, config) == 1  # never zero processes
    assert resolve_workers("3", 1, config) == 3  # a number is taken as given
    assert resolve_workers(0, 5, config) == 1
    sam = PrepareConfig(format="raster", masks="sam", sam={"checkpoint": "w.pth"})
    assert resolve_workers("auto", 10, sam) == 1  # one model on one device


def test_a_bad_worker_count_is_named() -> None:
    with pytest.raises(ValueError, match="'many'"):
        resolve_workers("many", 2, PrepareConfig(format="isaid"))


def test_available_cpus_is_positive() -> None:
    assert available_cpus() >= 1


PROBE = """
import sys
from pipeline.workers import without_pandas_integration
without_pandas_integration()
import pyarrow as pa
schema = pa.schema([("a", pa.int64())])
pa.Table.from_pylist([{"a": 1}], schema=schema)  # typed rows, as prepare writes them
print("pandas" in sys.modules)
pa.Table.from_pylist([{"a": 1}], schema=schema).to_pandas()  # an explicit conversion still gets pandas
print("pandas" in sys.modules)
"""


def test_pyarrow_builds_tables_without_importing_pandas_until_asked() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True"]
