"""The Dask runner (prefect-dask) on a local cluster of two processes gives the thread runner's outputs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

pytest.importorskip("prefect_dask")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """Two single-threaded worker processes on 127.0.0.1, as the flows' own local cluster."""
    from flows.runners import dask_scheduler

    with dask_scheduler(None, workers=2) as address:
        yield address


def executed_per_worker(address: str) -> dict[str, int]:
    from distributed import Client

    with Client(address) as client:
        return client.run(lambda dask_worker: dask_worker.state.executed_count)  # type: ignore[no-any-return]


def table(path: Path, sort: str) -> list[dict[str, Any]]:
    return sorted(pq.read_table(path).to_pylist(), key=lambda r: str(r[sort]))


def test_dask_build_matches_thread_build(
    isaid_threads_build: dict[str, Any], cluster: str, tmp_path: Path, kit: Any
) -> None:
    from flows.build import build_geopixeld

    before = sum(executed_per_worker(cluster).values())
    result = build_geopixeld(
        source=[str(kit.data / "isaid")],
        out=str(tmp_path / "out"),
        format="isaid",
        batch_tiles=2,
        store=str(tmp_path / "store"),
        name="isaid",
        runner="dask",
        dask_address=cluster,
    )
    executed = executed_per_worker(cluster)
    # 2 images + 4 batches of 2 tiles ran as tasks on the cluster, on both worker processes.
    assert sum(executed.values()) - before >= 6
    assert len(executed) == 2 and all(n > 0 for n in executed.values())
    assert result["this_run"]["batches"] == 4 and result["this_run"]["batches_run"] == 4

    threads, dask = Path(isaid_threads_build["out_dir"]), Path(result["out_dir"])
    assert kit.sample_table(dask) == kit.sample_table(threads)
    for name, key in (("tiles", "tile_id"), ("clusters", "cluster_id")):
        assert table(dask / f"{name}.parquet", key) == table(threads / f"{name}.parquet", key)
    inst = ["tile_id", "instance_id", "category", "rle", "mark", "cluster_id", "position", "size_class"]
    assert sorted(pq.read_table(dask / "instances.parquet", columns=inst).to_pylist(), key=str) == sorted(
        pq.read_table(threads / "instances.parquet", columns=inst).to_pylist(), key=str
    )
    calls = ["key", "ref", "status", "text"]
    assert sorted(pq.read_table(dask / "lmm_calls.parquet", columns=calls).to_pylist(), key=str) == sorted(
        pq.read_table(threads / "lmm_calls.parquet", columns=calls).to_pylist(), key=str
    )
    shards = sorted(
        p.relative_to(threads / "export") for p in (threads / "export" / "data").glob("*.parquet")
    )
    assert shards == sorted(
        p.relative_to(dask / "export") for p in (dask / "export" / "data").glob("*.parquet")
    )
    for shard in shards:
        assert pq.read_table(dask / "export" / shard).equals(pq.read_table(threads / "export" / shard))
    assert result["flags"] == isaid_threads_build["flags"]


def test_dask_runner_starts_its_own_local_cluster(tmp_path: Path, kit: Any) -> None:
    from flows.stages import prepare_stage

    threads = prepare_stage([str(kit.data / "dota")], str(tmp_path / "threads"), format="dota")
    dask = prepare_stage(
        [str(kit.data / "dota")], str(tmp_path / "dask"), format="dota", runner="dask", workers=1
    )
    keep = ["images", "images_ok", "tiles", "instances", "clusters", "marks", "skipped"]
    assert {k: dask[k] for k in keep} == {k: threads[k] for k in keep}
    assert table(tmp_path / "dask" / "tiles.parquet", "tile_id") == table(
        tmp_path / "threads" / "tiles.parquet", "tile_id"
    )
