"""Batch mode against a loopback Files + Batches server: resume, partial output, expiry, discount."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from batch_server import BatchServer, running_batch_server

from pipeline.lmm.batch import STATE_FILENAME, BatchRunner
from pipeline.lmm.client import LMMClient
from pipeline.lmm.grouped import describe_grouped
from pipeline.lmm.pricing import ModelPrice, PriceTable, RunTotals
from pipeline.lmm.types import LMMRequest, LMMSettings

MakeSettings = Callable[..., LMMSettings]
MakeRequests = Callable[..., list[LMMRequest]]


@pytest.fixture
def batch_server() -> Iterator[BatchServer]:
    with running_batch_server() as server:
        yield server


def runner(settings: LMMSettings, tmp_path: Path, **more: object) -> BatchRunner:
    return BatchRunner(settings, tmp_path / "batches", poll_interval_s=0.01, **more)  # type: ignore[arg-type]


def test_batch_answers_everything_once_and_fills_the_cache(
    batch_server: BatchServer, make_settings: MakeSettings, make_requests: MakeRequests, tmp_path: Path
) -> None:
    settings = make_settings(batch_server.base_url)
    requests = make_requests(["a", "b", "c", "a"])  # a duplicate is sent once
    results = runner(settings, tmp_path).describe_all_sync(requests, progress=False)
    assert [r.ref for r in results] == ["ref-a", "ref-b", "ref-c", "ref-a"]
    assert all(r.ok and r.batch for r in results[:3]) and results[3].from_cache
    assert all("No measured facts" in (r.text or "") for r in results)  # the offline describer answered
    assert batch_server.custom_ids(0) == [r.key for r in results[:3]]
    line = json.loads(batch_server.files["file-0001"]["bytes"].decode().splitlines()[0])
    assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
    assert line["body"] == LMMClient(settings).body_for(requests[0])  # the same body as a live call
    # the cache is shared with live calls: a live client, or a second batch run, sends nothing
    assert all(r.from_cache for r in LMMClient(settings).describe_all_sync(requests, progress=False))
    again = runner(settings, tmp_path)
    assert all(r.from_cache for r in again.describe_all_sync(requests, progress=False)) and again.submitted == 0
    assert len(batch_server.batches) == 1
    state = json.loads((tmp_path / "batches" / STATE_FILENAME).read_text())
    assert [b["status"] for b in state["batches"]] == ["completed"] and state["batches"][0]["collected"]
    assert not list((tmp_path / "batches").glob("*.jsonl"))  # input files are removed once uploaded


def test_expired_batch_keeps_its_partial_output_and_resubmits_only_the_rest(
    batch_server: BatchServer, make_settings: MakeSettings, make_requests: MakeRequests, tmp_path: Path
) -> None:
    batch_server.script = ["expire:2", "expire_silent:1", "complete"]
    requests = make_requests([f"r{i}" for i in range(5)])
    results = runner(make_settings(batch_server.base_url), tmp_path).describe_all_sync(requests, progress=False)
    assert all(r.ok for r in results)
    keys = [r.key for r in results]
    assert batch_server.custom_ids(0) == keys
    assert batch_server.custom_ids(1) == keys[2:]  # the three the expired batch did not answer
    assert batch_server.custom_ids(2) == keys[3:]  # the silent expiry answered one more
    assert len(batch_server.batches) == 3


def test_partial_output_file_retries_transient_failures_only(
    batch_server: BatchServer, make_settings: MakeSettings, make_requests: MakeRequests, tmp_path: Path
) -> None:
    batch_server.script = ["partial"]
    requests = make_requests([f"r{i}" for i in range(5)])
    results = runner(make_settings(batch_server.base_url), tmp_path).describe_all_sync(requests, progress=False)
    status = [r.status for r in results]
    assert status == ["ok", "ok", "error", "ok", "ok"]  # line 2 (500) and line 4 (cut short) resubmitted
    assert results[2].error == "HTTP 400: injected 400"  # a 400 would fail again: not resubmitted
    assert batch_server.custom_ids(1) == [results[1].key, results[3].key]


def test_a_rerun_resumes_polling_instead_of_resubmitting(
    batch_server: BatchServer, make_settings: MakeSettings, make_requests: MakeRequests, tmp_path: Path
) -> None:
    batch_server.script = ["hold"]
    settings = make_settings(batch_server.base_url)
    requests = make_requests(["a", "b", "c"])
    first = runner(settings, tmp_path, max_wait_s=0.3).describe_all_sync(requests, progress=False)
    assert all(r.status == "error" and "still in_progress" in (r.error or "") and "rerun" in (r.error or "")
               for r in first)  # fmt: skip
    state = json.loads((tmp_path / "batches" / STATE_FILENAME).read_text())
    assert [b["id"] for b in state["batches"]] == ["batch-0002"] and not state["batches"][0]["collected"]
    batch_server.release()
    second = runner(settings, tmp_path)
    results = second.describe_all_sync(requests, progress=False)
    assert all(r.ok for r in results) and second.submitted == 0 and len(batch_server.batches) == 1


def test_failed_batch_is_reported_not_resubmitted(
    batch_server: BatchServer, make_settings: MakeSettings, make_requests: MakeRequests, tmp_path: Path
) -> None:
    batch_server.script = ["fail"]
    results = runner(make_settings(batch_server.base_url), tmp_path).describe_all_sync(
        make_requests(["a", "b"]), progress=False
    )
    assert all("failed: model not available for batch" in (r.error or "") for r in results)
    assert len(batch_server.batches) == 1


def test_input_files_are_split_at_the_request_limit(
    batch_server: BatchServer, make_settings: MakeSettings, make_requests: MakeRequests, tmp_path: Path
) -> None:
    run = runner(make_settings(batch_server.base_url), tmp_path, max_requests=2)
    results = run.describe_all_sync(make_requests([f"r{i}" for i in range(5)]), progress=False)
    assert all(r.ok for r in results) and run.submitted == 3
    assert [len(batch_server.custom_ids(n)) for n in range(3)] == [2, 2, 1]


def test_batch_answers_cost_half_and_grouping_works_through_batches(
    batch_server: BatchServer, make_settings: MakeSettings, tiny_png: bytes, tmp_path: Path
) -> None:
    settings = make_settings(batch_server.base_url)
    requests = [
        LMMRequest("instance", f"Describe the plane marked {m}.", tiny_png,
                   {"tier": "instance", "category": "plane", "position": "top", "mark": m}, f"t|instance|{m}")
        for m in (1, 2, 3)
    ]  # fmt: skip
    run = describe_grouped(runner(settings, tmp_path), requests, 3)
    assert len(run.calls) == 1 and run.calls[0].batch and run.calls[0].tier == "instance_group"
    assert all(r.ok and "plane" in (r.text or "") for r in run.results)
    call = run.calls[0]
    assert call.model == "geopixeld-offline-describer-v1"
    prices = PriceTable({call.model: ModelPrice(2.0, 8.0)})
    full = (call.input_tokens * 2.0 + call.output_tokens * 8.0) / 1e6
    assert RunTotals.from_results(run.calls, prices).cost_usd == pytest.approx(full / 2) and full > 0


def test_streaming_enqueue_submits_as_files_fill_then_wait_fills_the_cache(
    batch_server: BatchServer, make_settings: MakeSettings, make_requests: MakeRequests, tmp_path: Path
) -> None:
    settings = make_settings(batch_server.base_url)
    run = runner(settings, tmp_path, max_requests=2)
    requests = make_requests([f"r{i}" for i in range(5)])
    assert [run.enqueue(r) for r in requests[:3]] == ["queued"] * 3
    assert run.submitted == 1  # the first file filled up and went out; the third request waits in the next
    assert run.enqueue(requests[0]) == "in_flight" and run.enqueue(requests[2]) == "in_flight"
    for r in requests[3:]:
        run.enqueue(r)
    counts = run.wait(progress=False)
    run.close()
    assert counts == {"answered": 5, "failed": 0, "running": 0} and run.submitted == 3
    client = LMMClient(settings)
    assert all(r.from_cache and r.ok for r in client.describe_all_sync(requests, progress=False))
    assert runner(settings, tmp_path).enqueue(requests[0]) == "cached"
