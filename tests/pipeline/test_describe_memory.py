"""Describe holds one batch in memory: its peak RSS does not grow with the number of tiles.

Measured from outside, in a fresh process (the embedded offline describer runs in it), at 16 and 64 tiles
(the bundled sample replicated under new ids, same images).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.describe import DescribeConfig, describe
from pipeline.scale.measure import run_measured
from pipeline.scale.replicate import replicate

ROOT = Path(__file__).resolve().parents[2]


def _describe_peak(data: Path) -> float:
    code = (
        "import sys; from pipeline.describe import DescribeConfig, describe; "
        f"s = describe({str(data)!r}, DescribeConfig(batch_tiles=8), progress=False); print(s.samples)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return run_measured([sys.executable, "-c", code], cwd=ROOT, env=env, timeout=900).check("describe").peak_mb


@pytest.mark.slow
def test_describe_memory_does_not_grow_with_tiles(tmp_path: Path, isaid_prepared: Path) -> None:
    seed = tmp_path / "seed"
    shutil.copytree(isaid_prepared, seed, ignore=shutil.ignore_patterns("lmm_cache", "samples.parquet", "lmm_calls.parquet"))
    describe(seed, DescribeConfig(), progress=False)  # replicate copies a described folder
    peaks = {}
    for copies in (2, 8):
        data = tmp_path / f"x{copies}"
        replicate(seed, data, copies)
        for name in ("samples.parquet", "lmm_calls.parquet"):
            (data / name).unlink(missing_ok=True)
        peaks[copies] = _describe_peak(data)
        assert pq.read_metadata(data / "samples.parquet").num_rows == 8 * copies
    small, large = peaks[2], peaks[8]
    print(f"describe peak RSS: 16 tiles {small:.0f} MB, 64 tiles {large:.0f} MB")
    assert large < 1.25 * small and large - small < 40, peaks
