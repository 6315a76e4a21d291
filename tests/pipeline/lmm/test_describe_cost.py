"""Describe with a dry run, grouped instances and the Batch API, on the prepared iSAID samples (real servers)."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from batch_server import BatchServer, running_batch_server

from pipeline.batchmode import STATE_DIR
from pipeline.describe import DescribeConfig, describe
from pipeline.dryrun import dry_run


def _fresh(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("lmm_cache", "samples.parquet", "lmm_calls.parquet"))
    return dst


def _calls(data: Path) -> list[dict[str, object]]:
    return pq.read_table(data / "lmm_calls.parquet").to_pylist()


@pytest.fixture
def batch_server() -> Iterator[BatchServer]:
    with running_batch_server(polls=1) as server:
        yield server


@pytest.mark.parametrize("k", [1, 4])
def test_dry_run_counts_exactly_the_calls_a_run_sends(
    tmp_path: Path, isaid_prepared: Path, offline_url: str, k: int
) -> None:
    data = _fresh(isaid_prepared, tmp_path / "d")
    config = DescribeConfig(base_url=offline_url, instances_per_call=k)
    est = dry_run(data, config, progress=False)
    assert not (data / "samples.parquet").exists() and not (data / "lmm_cache").exists()  # nothing sent
    assert est.tiles == 8 and est.total().cached == 0
    describe(data, config, progress=False)
    sent = Counter(str(c["tier"]) for c in _calls(data))
    assert {tier: t.calls for tier, t in est.tiers.items()} == dict(sent)
    assert "compose" in sent and ("instance_group" in sent) == (k > 1)
    again = dry_run(data, config, progress=False)  # everything is cached now, the compose requests included
    assert again.total().cached == again.total().calls == est.total().calls and again.total().cost_usd == 0


def test_grouped_describe_writes_the_same_samples_with_fewer_calls(
    tmp_path: Path, isaid_prepared: Path, offline_url: str
) -> None:
    single, grouped = _fresh(isaid_prepared, tmp_path / "a"), _fresh(isaid_prepared, tmp_path / "b")
    config = DescribeConfig(base_url=offline_url, max_instances=8)
    describe(single, config, progress=False)
    describe(grouped, config.model_copy(update={"instances_per_call": 4}), progress=False)
    cols = ["tile_id", "gcg_caption", "phrases"]
    assert pq.read_table(single / "samples.parquet", columns=cols) == pq.read_table(grouped / "samples.parquet", columns=cols)
    single_tiers = Counter(str(c["tier"]) for c in _calls(single))
    grouped_tiers = Counter(str(c["tier"]) for c in _calls(grouped))
    assert single_tiers["instance"] > 40 and grouped_tiers["instance"] + grouped_tiers["instance_group"] * 4 >= 40
    assert grouped_tiers["instance_group"] <= single_tiers["instance"] / 3


def test_describe_batch_mode_answers_everything_through_batches(
    tmp_path: Path, isaid_prepared: Path, batch_server: BatchServer, offline_url: str
) -> None:
    live = _fresh(isaid_prepared, tmp_path / "live")
    describe(live, DescribeConfig(base_url=offline_url), progress=False)
    data = _fresh(isaid_prepared, tmp_path / "batch")
    config = DescribeConfig(base_url=batch_server.base_url, batch=True, batch_poll_s=0.01)
    summary = describe(data, config, progress=False)
    # pass 1: first round; pass 2: compose (built from the answers); nothing sent live
    assert len(batch_server.batches) == 2
    calls = _calls(data)
    assert all(c["status"] == "ok" and c["batch"] and not c["from_cache"] for c in calls)
    assert summary.lmm["batched"] == summary.lmm["sent"] == len(calls) == 48
    cols = ["tile_id", "gcg_caption"]
    assert pq.read_table(data / "samples.parquet", columns=cols) == pq.read_table(live / "samples.parquet", columns=cols)
    assert (data / STATE_DIR / "batches.json").exists()
    # a rerun submits nothing and counts nothing as sent in this run
    rerun = describe(data, config, progress=False)
    assert len(batch_server.batches) == 2 and rerun.lmm["sent"] == 0 and rerun.lmm["cached"] == 48
    est = dry_run(data, config, progress=False)
    assert est.batch and est.total().cached == 48


def test_batch_mode_needs_a_batch_endpoint(tmp_path: Path, isaid_prepared: Path) -> None:
    data = _fresh(isaid_prepared, tmp_path / "d")
    with pytest.raises(ValueError, match="--batch needs --base-url"):
        describe(data, DescribeConfig(batch=True), progress=False)


def test_dry_run_counts_second_samples(tmp_path: Path, isaid_prepared: Path, offline_url: str) -> None:
    data = _fresh(isaid_prepared, tmp_path / "d")
    config = DescribeConfig(base_url=offline_url, samples=2, temperature=0.7)
    est = dry_run(data, config, progress=False)
    describe(data, config, progress=False)
    seconds = [c for c in _calls(data) if str(c["ref"]).endswith("|second")]
    assert est.tiers["second_opinion"].calls == len(seconds) > 0
    assert est.total().calls == len(_calls(data))


def test_cli_dry_run_and_estimate_first_line(tmp_path: Path, isaid_prepared: Path, offline_url: str) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    data = _fresh(isaid_prepared, tmp_path / "d")
    dry = CliRunner().invoke(app, ["describe", str(data), "--dry-run", "--model", "gpt-4o-mini", "--no-progress",
                                   "--base-url", "https://api.openai.com/v1", "--instances-per-call", "2"])  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith("dry run: nothing sent. model gpt-4o-mini, 8 tiles; USD per 1M tokens: in 0.15")
    assert "2833 + 5667 per 512 px tile" in dry.output and "per 1,000 tiles" in dry.output
    assert not (data / "samples.parquet").exists() and not (data / "lmm_cache").exists()
    real = CliRunner().invoke(app, ["describe", str(data), "--base-url", offline_url, "--no-progress"])
    assert real.exit_code == 0, real.output
    first = real.output.splitlines()[0]
    assert first.startswith("estimate for geopixeld-offline-describer-v1: 8 tiles, 48 calls (48 to send, 0 cached)")
    assert (data / "samples.parquet").exists()
    bad = CliRunner().invoke(app, ["describe", str(data), "--batch", "--no-progress"])
    assert bad.exit_code == 2 and "--batch needs --base-url" in bad.output


def test_batches_still_running_write_nothing_and_a_rerun_resumes(
    tmp_path: Path, isaid_prepared: Path, batch_server: BatchServer
) -> None:
    from pipeline.batchmode import BatchesStillRunning

    batch_server.script = ["hold"]
    data = _fresh(isaid_prepared, tmp_path / "d")
    config = DescribeConfig(base_url=batch_server.base_url, batch=True, batch_poll_s=0.01, batch_max_wait_s=0.5)
    with pytest.raises(BatchesStillRunning, match="run the same describe --batch again later"):
        describe(data, config, progress=False)
    assert not (data / "samples.parquet").exists() and len(batch_server.batches) == 1
    batch_server.release()
    summary = describe(data, config.model_copy(update={"batch_max_wait_s": None}), progress=False)
    assert len(batch_server.batches) == 2  # the held first round was resumed, not resubmitted; then compose
    assert summary.lmm["batched"] == summary.lmm["sent"] == 48
