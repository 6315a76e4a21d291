"""LMMClient against real loopback servers through the real `openai` client: faults end as results."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fault_server import FaultServer

from pipeline.lmm.client import LMMClient, backoff_delay, parse_retry_after
from pipeline.lmm.pricing import PriceTable, RunTotals
from pipeline.lmm.records import CALLS_SCHEMA, read_calls_parquet, write_calls_parquet
from pipeline.lmm.types import LMMRequest, LMMResult, LMMSettings

MakeSettings = Callable[..., LMMSettings]
MakeRequests = Callable[..., list[LMMRequest]]


def run(settings: LMMSettings, requests: list[LMMRequest]) -> list[LMMResult]:
    return LMMClient(settings).describe_all_sync(requests, progress=False)


# ---------------------------------------------------------------- happy path, order, request shape


def test_results_come_back_in_input_order(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    ids = [f"r{i}" for i in range(8)]
    # Earlier requests answer later, so completion order is the reverse of input order.
    fault_server.plan.update({i: f"delay:{0.05 * (8 - k)}" for k, i in enumerate(ids)})
    results = run(make_settings(fault_server.base_url, concurrency=8), make_requests(ids))
    assert [r.ref for r in results] == [f"ref-{i}" for i in ids]
    assert [r.text for r in results] == [f"answer {i}" for i in ids]
    assert all(r.status == "ok" and r.attempts == 1 and not r.from_cache for r in results)
    assert all(r.input_tokens == 10 and r.output_tokens == 5 and r.model == "fault-model" for r in results)
    assert all(r.finish_reason == "stop" and r.raw and json.loads(r.raw)["id"] == f"chatcmpl-{i}"
               for r, i in zip(results, ids, strict=True))  # fmt: skip


def test_request_carries_image_prompt_params_and_facts(
    fault_server: FaultServer, make_settings: MakeSettings, tiny_png: bytes
) -> None:
    settings = make_settings(fault_server.base_url, temperature=0.7, max_tokens=123, detail="low")
    req = LMMRequest("cluster", "count them", tiny_png, {"id": "x", "count": 12}, ref="t|cluster|1")
    (result,) = run(settings, [req])
    assert result.ok and result.tier == "cluster" and result.prompt_version == "geopixeld-v1"
    body = fault_server.log.seen[0].body
    assert body["model"] == "fault-model"
    assert body["temperature"] == 0.7 and body["max_tokens"] == 123
    assert body["geopixeld_facts"] == {"id": "x", "count": 12}
    parts = body["messages"][0]["content"]
    image = next(p for p in parts if p["type"] == "image_url")["image_url"]
    assert image["detail"] == "low"
    assert image["url"] == "data:image/png;base64," + base64.b64encode(tiny_png).decode()
    assert next(p for p in parts if p["type"] == "text")["text"] == "count them"


def test_text_only_request_sends_no_image(fault_server: FaultServer, make_settings: MakeSettings) -> None:
    (result,) = run(make_settings(fault_server.base_url), [LMMRequest("compose", "fuse these", b"", {"id": "c"})])
    content = fault_server.log.seen[0].body["messages"][0]["content"]
    assert result.ok and content == [{"type": "text", "text": "fuse these"}]


def test_send_facts_false_keeps_facts_out_of_the_body(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    (result,) = run(make_settings(fault_server.base_url, send_facts=False), make_requests(["a"]))
    assert result.ok  # the server answers the unknown id "?" with "ok"
    assert "geopixeld_facts" not in fault_server.log.seen[0].body


# ---------------------------------------------------------------- cache: reruns and crashes


def test_rerun_sends_zero_requests(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    requests = make_requests([f"r{i}" for i in range(10)])
    first = run(make_settings(fault_server.base_url), requests)
    assert fault_server.requests == 10 and all(r.ok for r in first)
    second = run(make_settings(fault_server.base_url), requests)  # a new client, same cache folder
    assert fault_server.requests == 10
    assert all(r.from_cache and r.attempts == 0 for r in second)
    assert [r.text for r in second] == [r.text for r in first]
    assert [r.key for r in second] == [r.key for r in first]
    assert [(r.input_tokens, r.output_tokens, r.raw) for r in second] == [
        (r.input_tokens, r.output_tokens, r.raw) for r in first
    ]
    totals = RunTotals.from_results(second)
    assert (totals.sent, totals.cached, totals.attempts, totals.cost_usd) == (0, 10, 0, 0.0)


def test_failures_are_not_cached_and_are_retried_on_rerun(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    requests = make_requests(["good", "bad"])
    fault_server.plan["bad"] = "500"
    first = run(make_settings(fault_server.base_url, max_retries=0), requests)
    assert [r.status for r in first] == ["ok", "error"]
    fault_server.plan["bad"] = "ok"  # the server recovers; the request (and its key) is unchanged
    second = run(make_settings(fault_server.base_url, max_retries=0), requests)
    assert [r.status for r in second] == ["ok", "ok"]
    assert [r.from_cache for r in second] == [True, False]
    assert sorted(fault_server.log.ids()) == ["bad", "bad", "good"]  # "good" was not sent again


def test_after_a_crash_midway_only_the_rest_is_sent(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests, tmp_path: Path
) -> None:
    ids = [f"r{i:02d}" for i in range(20)]
    fault_server.plan.update({i: "delay:0.05" for i in ids})
    requests = make_requests(ids)
    settings = make_settings(fault_server.base_url, concurrency=2)

    async def crash_midway() -> None:
        task = asyncio.create_task(LMMClient(settings).describe_all(requests, progress=False))
        await asyncio.sleep(0.25)
        task.cancel()  # the process "dies": in-flight requests are abandoned
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(crash_midway())
    done = len(list((tmp_path / "cache").glob("??/*.json")))
    assert 0 < done < len(ids)
    before = fault_server.requests
    results = run(settings, requests)
    assert all(r.ok for r in results)
    assert sum(r.from_cache for r in results) == done
    assert fault_server.requests - before == len(ids) - done  # nothing that succeeded is sent again


def test_duplicates_in_one_batch_are_sent_once(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests, tiny_png: bytes
) -> None:
    base = make_requests(["same"])[0]
    twin = LMMRequest(base.tier, base.prompt, tiny_png, {"id": "same"}, ref="another-ref")
    results = run(make_settings(fault_server.base_url, cache_dir=None), [base, twin])
    assert fault_server.requests == 1
    assert [r.ref for r in results] == ["ref-same", "another-ref"]
    assert results[0].key == results[1].key and results[1].from_cache and results[1].text == "answer same"


# ---------------------------------------------------------------- concurrency


def test_server_never_sees_more_than_concurrency_in_flight(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    ids = [f"r{i}" for i in range(24)]
    fault_server.plan.update({i: "delay:0.08" for i in ids})
    start = time.monotonic()
    results = run(make_settings(fault_server.base_url, concurrency=4), make_requests(ids))
    elapsed = time.monotonic() - start
    assert all(r.ok for r in results)
    assert fault_server.log.max_in_flight == 4  # reached, never exceeded
    assert elapsed >= 24 / 4 * 0.08 * 0.9  # and the limit really serialised the work


def test_retries_do_not_break_the_concurrency_bound(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    ids = [f"r{i}" for i in range(12)]
    fault_server.plan.update({i: "503,delay:0.05" for i in ids})
    results = run(make_settings(fault_server.base_url, concurrency=3), make_requests(ids))
    assert all(r.ok and r.attempts == 2 for r in results)
    assert fault_server.log.max_in_flight <= 3


# ---------------------------------------------------------------- retries


def test_429_honours_retry_after(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    fault_server.plan["a"] = "429:0.4,ok"
    (result,) = run(make_settings(fault_server.base_url, backoff_max_s=2.0), make_requests(["a"]))
    assert result.ok and result.attempts == 2
    first, second = fault_server.log.times("a")
    assert second - first >= 0.38  # back-off alone would have waited ~0.01 s
    assert result.latency_s >= 0.38


def test_429_honours_retry_after_ms(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    fault_server.plan["a"] = "429ms:250,429ms:250,ok"
    (result,) = run(make_settings(fault_server.base_url, backoff_max_s=2.0), make_requests(["a"]))
    assert result.ok and result.attempts == 3
    times = fault_server.log.times("a")
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.23


def test_retry_after_is_capped_by_backoff_max(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    fault_server.plan["a"] = "429:30,ok"
    start = time.monotonic()
    (result,) = run(make_settings(fault_server.base_url, backoff_max_s=0.2), make_requests(["a"]))
    assert result.ok and result.attempts == 2 and time.monotonic() - start < 5


def test_5xx_is_retried_until_success(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    fault_server.plan["a"] = "500,503,502,ok"
    (result,) = run(make_settings(fault_server.base_url, max_retries=3), make_requests(["a"]))
    assert result.ok and result.attempts == 4 and result.text == "answer a"


def test_5xx_gives_up_after_max_retries(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    fault_server.plan["a"] = "500"
    (result,) = run(make_settings(fault_server.base_url, max_retries=2), make_requests(["a"]))
    assert result.status == "error" and result.text is None and result.attempts == 3
    assert "HTTP 500" in (result.error or "") and "injected 500" in (result.error or "")
    assert "gave up after 3 attempts" in (result.error or "")
    assert result.raw is not None and "injected 500" in result.raw
    assert fault_server.requests == 3


@pytest.mark.parametrize("status", ["400", "401", "403", "404", "422"])
def test_4xx_other_than_429_is_not_retried(
    status: str, fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    fault_server.plan["a"] = status
    (result,) = run(make_settings(fault_server.base_url, max_retries=4), make_requests(["a"]))
    assert result.status == "error" and result.attempts == 1
    assert (result.error or "").startswith(f"HTTP {status}")
    assert fault_server.requests == 1


def test_timeout_is_retried_then_reported(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    fault_server.plan["a"] = "sleep:5"
    start = time.monotonic()
    (result,) = run(make_settings(fault_server.base_url, timeout_s=0.3, max_retries=1), make_requests(["a"]))
    assert result.status == "error" and result.attempts == 2
    assert "timeout" in (result.error or "")
    assert time.monotonic() - start < 3


def test_timeout_then_success(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    fault_server.plan["a"] = "sleep:5,ok"
    (result,) = run(make_settings(fault_server.base_url, timeout_s=0.3), make_requests(["a"]))
    assert result.ok and result.attempts == 2


def test_dropped_connection_is_retried(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    fault_server.plan.update({"a": "drop,ok", "b": "drop"})
    a, b = run(make_settings(fault_server.base_url, max_retries=2), make_requests(["a", "b"]))
    assert a.ok and a.attempts == 2
    assert b.status == "error" and b.attempts == 3 and "connection error" in (b.error or "")


def test_nothing_listening_is_a_connection_error(
    make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    with socket.socket() as sock:  # find a port, then free it so nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(f"http://127.0.0.1:{port}/v1", max_retries=2)
    (result,) = run(settings, make_requests(["a"]))
    assert result.status == "error" and result.attempts == 3 and "connection error" in (result.error or "")


@pytest.mark.parametrize(
    ("step", "message"),
    [("malformed", "not JSON"), ("truncated", "not JSON"), ("empty", "no choices"), ("cut", "connection error")],
)
def test_broken_200_bodies_are_retried_like_a_5xx(
    step: str,
    message: str,
    fault_server: FaultServer,
    make_settings: MakeSettings,
    make_requests: MakeRequests,
    tmp_path: Path,
) -> None:
    fault_server.plan.update({"once": f"{step},ok", "always": step})
    once, always = run(make_settings(fault_server.base_url, max_retries=2), make_requests(["once", "always"]))
    assert once.ok and once.attempts == 2 and once.text == "answer once"
    assert always.status == "error" and always.attempts == 3 and message in (always.error or "")
    assert "gave up after 3 attempts" in (always.error or "")
    if step != "cut":
        assert always.raw is not None  # the body is kept for auditing
    assert fault_server.log.ids().count("always") == 3
    cached = list((tmp_path / "cache").glob("??/*.json"))
    assert len(cached) == 1  # only the success; errors are not cached


def test_bodies_cut_once_all_succeed_on_their_retry(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    ids = [f"r{i}" for i in range(40)]
    fault_server.plan.update({i: "truncated,ok" for i in ids[::20]} | {i: "cut,ok" for i in ids[7::20]})
    results = run(make_settings(fault_server.base_url, concurrency=8), make_requests(ids))
    assert all(r.ok for r in results) and fault_server.requests == 44


def test_an_empty_answer_is_an_error_without_retry(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    fault_server.plan["a"] = "blank"
    (result,) = run(make_settings(fault_server.base_url), make_requests(["a"]))
    assert result.status == "error" and result.attempts == 1 and "empty response" in (result.error or "")
    assert "raise --max-tokens" in (result.error or "")  # finish_reason "length": the limit ate the answer
    assert fault_server.requests == 1


def test_one_bad_request_never_stops_the_batch(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    plan = {"ok1": "ok", "timeout": "sleep:5", "limit": "429:0.05,ok", "boom": "500", "junk": "malformed",
            "gone": "drop", "auth": "401", "ok2": "delay:0.05"}  # fmt: skip
    fault_server.plan.update(plan)
    results = run(
        make_settings(fault_server.base_url, timeout_s=0.3, max_retries=1), make_requests(list(plan))
    )
    status = {r.ref.removeprefix("ref-"): r.status for r in results}
    assert status == {"ok1": "ok", "timeout": "error", "limit": "ok", "boom": "error", "junk": "error",
                      "gone": "error", "auth": "error", "ok2": "ok"}  # fmt: skip
    assert all((r.error is None) == r.ok for r in results)


def test_unserialisable_facts_fail_only_their_own_request(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests, tiny_png: bytes
) -> None:
    broken = LMMRequest("instance", "p", tiny_png, {"id": "x", "when": object()}, ref="broken")
    results = run(make_settings(fault_server.base_url), [*make_requests(["a"]), broken])
    assert [r.status for r in results] == ["ok", "error"]
    assert results[1].ref == "broken" and "invalid request" in (results[1].error or "")
    assert fault_server.log.ids() == ["a"]


# ---------------------------------------------------------------- secrets, records, totals


def test_api_key_is_sent_but_never_stored_or_logged(
    fault_server: FaultServer,
    make_settings: MakeSettings,
    make_requests: MakeRequests,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    secret = "sk-test-SECRET-1234567890abcdef"
    monkeypatch.setenv("GEOPIXELD_TEST_LMM_KEY", secret)
    fault_server.plan.update({"bad": "500", "junk": "malformed"})
    settings = make_settings(fault_server.base_url, max_retries=1)
    assert secret not in settings.model_dump_json()
    with caplog.at_level(logging.DEBUG):
        results = run(settings, make_requests(["a", "bad", "junk"]))
    assert {s.authorization for s in fault_server.log.seen} == {f"Bearer {secret}"}  # it was used
    parquet = write_calls_parquet(results, tmp_path / "out")
    assert secret.encode() not in parquet.read_bytes()
    assert secret not in caplog.text
    assert all(secret not in repr(r) for r in results)
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert secret not in path.read_text()


def test_calls_parquet_keeps_every_call(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests, tmp_path: Path
) -> None:
    fault_server.plan["bad"] = "400"
    results = run(make_settings(fault_server.base_url), make_requests(["a", "bad"]))
    path = write_calls_parquet(results, tmp_path)
    assert path.name == "lmm_calls.parquet"
    table = read_calls_parquet(tmp_path)
    assert table.schema.equals(CALLS_SCHEMA)
    rows = table.to_pylist()
    assert [r["ref"] for r in rows] == ["ref-a", "ref-bad"]
    assert [r["status"] for r in rows] == ["ok", "error"]
    assert rows[0]["text"] == "answer a" and rows[0]["input_tokens"] == 10 and rows[0]["output_tokens"] == 5
    assert rows[1]["error"].startswith("HTTP 400") and rows[1]["attempts"] == 1
    assert {r["model"] for r in rows} == {"fault-model"} and {r["tier"] for r in rows} == {"instance"}
    assert pq.read_metadata(path).num_rows == 2


def test_run_totals_and_cost(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests, tmp_path: Path
) -> None:
    fault_server.plan["bad"] = "500,500"
    prices = tmp_path / "prices.yaml"
    prices.write_text("fault-model: {input: 2.0, output: 8.0}\n")
    settings = make_settings(fault_server.base_url, max_retries=1, prices_file=prices)
    client = LMMClient(settings)
    results = client.describe_all_sync(make_requests(["a", "b", "bad"]), progress=False)
    totals = client.totals(results)
    assert (totals.calls, totals.sent, totals.cached, totals.failed, totals.attempts) == (3, 3, 0, 1, 4)
    assert (totals.input_tokens, totals.output_tokens) == (20, 10)
    assert totals.cost_usd == pytest.approx((20 * 2.0 + 10 * 8.0) / 1e6)
    assert not totals.unpriced_models and "fault-model" in totals.models

    unknown = RunTotals.from_results(results, PriceTable())  # built-in table: no "fault-model"
    assert unknown.cost_usd == 0.0 and unknown.unpriced_models == ("fault-model",)
    assert "no price known for fault-model" in unknown.note and "no price known" in unknown.summary()


def test_price_table_prefix_match() -> None:
    table = PriceTable()
    assert table.lookup("gpt-4o-2024-08-06") == table.lookup("gpt-4o")
    assert table.lookup("gpt-4o-mini-2024-07-18") == table.lookup("gpt-4o-mini") != table.lookup("gpt-4o")
    assert table.lookup("gpt-4") is None and table.lookup("my-local-vlm") is None
    assert table.lookup("geopixeld-offline-describer-v1") is not None


def test_prompt_version_is_recorded_on_every_result(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    results = run(make_settings(fault_server.base_url, prompt_version="my-set-v3"), make_requests(["a", "b"]))
    assert {r.prompt_version for r in results} == {"my-set-v3"}
    cached = run(make_settings(fault_server.base_url, prompt_version="my-set-v3"), make_requests(["a"]))
    assert cached[0].from_cache and cached[0].prompt_version == "my-set-v3"


def test_sync_wrapper_refuses_to_run_inside_an_event_loop(make_settings: MakeSettings) -> None:
    client = LMMClient(make_settings("http://127.0.0.1:9/v1"))

    async def inside() -> None:
        with pytest.raises(RuntimeError, match="await describe_all"):
            client.describe_all_sync([], progress=False)

    asyncio.run(inside())
    assert client.describe_all_sync([], progress=False) == []


# ---------------------------------------------------------------- helpers


def test_backoff_is_exponential_capped_and_jittered() -> None:
    for attempt, full in [(1, 0.5), (2, 1.0), (3, 2.0), (10, 30.0)]:
        delays = [backoff_delay(attempt, 0.5, 30.0) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert max(delays) - min(delays) > full / 10  # jitter really varies


def test_parse_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    date = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": date}, now=now.timestamp()) == pytest.approx(7.0)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None
