"""The fidelity report: figures read back from a described folder, and shown in the run report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq

from flows.artifacts import summary_markdown
from pipeline.describe import DescribeConfig, describe
from pipeline.fidelity import GEOPIXELD, measure, report_text


def test_figures_match_the_samples_and_calls(tmp_path: Path, isaid_prepared: Path) -> None:
    data = tmp_path / "d"
    shutil.copytree(isaid_prepared, data, ignore=shutil.ignore_patterns("lmm_cache", "samples.parquet", "lmm_calls.parquet"))
    summary = describe(data, DescribeConfig(), progress=False)
    samples = pq.read_table(data / "samples.parquet").to_pylist()
    calls = pq.read_table(data / "lmm_calls.parquet").num_rows
    fid = measure(data)
    n = len(samples)
    assert fid["tiles"] == n
    assert abs(fid["caption_chars_mean"] - sum(len(s["caption"]) for s in samples) / n) < 1e-9
    assert abs(fid["phrases_per_tile"] - sum(len(s["phrases"]) for s in samples) / n) < 1e-9
    assert abs(fid["calls_per_tile"] - calls / n) < 1e-9
    assert sum(fid["calls_by_tier"].values()) * n == calls
    assert fid == summary.fidelity
    text = report_text(fid)
    assert "GeoPixelD" in text and f"{GEOPIXELD['caption_chars_mean']:.0f}" in text
    md = summary_markdown({"describe": {"fidelity": fid, "policy": "geopixeld", "samples": n, "phrases": 1,
                                        "flagged": 0}})
    assert "## GeoPixelD fidelity (policy `geopixeld`)" in md and "| LMM calls per tile |" in md


def test_missing_samples_give_an_empty_report(tmp_path: Path) -> None:
    assert measure(tmp_path) == {} and report_text({}) == ""
