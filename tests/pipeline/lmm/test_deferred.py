"""The deferred client sends nothing: cache hits answer, misses are reported once and come back pending."""

from __future__ import annotations

from collections.abc import Callable

from fault_server import FaultServer

from pipeline.lmm.client import LMMClient
from pipeline.lmm.deferred import DeferredClient, is_pending
from pipeline.lmm.grouped import GROUP_TIER, describe_grouped
from pipeline.lmm.types import LMMRequest, LMMSettings

MakeSettings = Callable[..., LMMSettings]
MakeRequests = Callable[..., list[LMMRequest]]


def test_hits_answer_misses_are_reported_once_and_pending(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    settings = make_settings(fault_server.base_url)
    LMMClient(settings).describe_all_sync(make_requests(["a"]), progress=False)  # "a" is cached now
    sent = fault_server.requests
    missed: list[str] = []
    hits: list[str] = []
    client = DeferredClient(LMMClient(settings), lambda r, k: missed.append(r.ref), lambda r, k: hits.append(r.ref))
    results = client.describe_all_sync(make_requests(["a", "b", "c", "b"]))
    assert [r.ok for r in results] == [True, False, False, False]
    assert all(is_pending(r) for r in results[1:]) and not is_pending(results[0])
    assert missed == ["ref-b", "ref-c"] and hits == ["ref-a"]
    assert fault_server.requests == sent  # nothing sent


def test_pending_groups_are_not_reasked(make_settings: MakeSettings, tiny_png: bytes) -> None:
    requests = [
        LMMRequest("instance", f"p{m}", tiny_png, {"id": str(m), "mark": m}, f"t|instance|{m}") for m in (1, 2, 3)
    ]
    missed: list[LMMRequest] = []
    run = describe_grouped(DeferredClient(LMMClient(make_settings("http://127.0.0.1:9/v1")),
                                          lambda r, k: missed.append(r)), requests, 3)  # fmt: skip
    assert [r.tier for r in missed] == [GROUP_TIER] and run.reasked == 0
    assert all(is_pending(r) for r in run.results) and [r.ref for r in run.results] == [r.ref for r in requests]
