"""The validate stage as a library call and a command: flags counted, a tile without a sample refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.describe import DescribeConfig, describe
from pipeline.flag_summary import MissingSamplesError, summarize


@pytest.fixture(scope="module")
def described(tmp_path_factory: pytest.TempPathFactory, isaid_prepared: Path) -> Path:
    data = tmp_path_factory.mktemp("v") / "d"
    shutil.copytree(isaid_prepared, data, ignore=shutil.ignore_patterns("lmm_cache", "samples.parquet", "lmm_calls.parquet"))
    describe(data, DescribeConfig(), progress=False)
    return data


def test_counts_match_the_samples(described: Path) -> None:
    rows = pq.read_table(described / "samples.parquet").to_pylist()
    summary = summarize(described, batch_rows=3)  # several batches
    assert summary["samples"] == len(rows)
    assert sum(summary["samples_by_severity"].values()) == len(rows)
    assert sum(f["count"] for f in summary["flags"]) == sum(len(r["flags"]) for r in rows)
    result = CliRunner().invoke(app, ["validate", str(described)])
    assert result.exit_code == 0 and f"validate: {len(rows)} samples" in result.output


def test_a_tile_without_sample_is_refused(tmp_path: Path, described: Path) -> None:
    data = tmp_path / "d"
    shutil.copytree(described, data, ignore=shutil.ignore_patterns("lmm_cache"))
    table = pq.read_table(data / "samples.parquet")
    pq.write_table(table.slice(1), data / "samples.parquet")
    with pytest.raises(MissingSamplesError, match="1 prepared tiles have no sample"):
        summarize(data)
    result = CliRunner().invoke(app, ["validate", str(data)])
    assert result.exit_code == 1 and "no sample" in result.output
    (data / "samples.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="samples.parquet"):
        summarize(data)
