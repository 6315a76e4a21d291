"""Grouped instance requests against a real loopback server: K objects per call, bad answers asked again."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
from fault_server import FaultServer

from pipeline.lmm.client import LMMClient
from pipeline.lmm.grouped import (
    GROUP_RESPONSE_FORMAT,
    GROUP_TIER,
    describe_grouped,
    parse_group_answer,
    plan_groups,
)
from pipeline.lmm.types import LMMRequest, LMMSettings

MakeSettings = Callable[..., LMMSettings]


@pytest.fixture
def tile_requests(to_png: Callable[[np.ndarray], bytes]) -> list[LMMRequest]:
    """Five marked objects on tile A, two on tile B, a holistic request and an unmarked object on A."""
    a = to_png(np.full((32, 32, 3), 10, dtype=np.uint8))
    b = to_png(np.full((32, 32, 3), 200, dtype=np.uint8))

    def inst(tile: str, image: bytes, mark: int | None, tier: str = "instance") -> LMMRequest:
        facts = {"id": f"{tile}{mark}", "mark": mark}
        return LMMRequest(tier, f"Describe the plane marked {mark}.", image, facts, f"{tile}|instance|{mark}")

    return [
        inst("A", a, 1), inst("A", a, 2), LMMRequest("holistic", "Describe.", a, {"id": "Ah"}, "A|holistic"),
        inst("A", a, 3), inst("B", b, 1), inst("A", a, 4), inst("B", b, 2), inst("A", a, 5),
        inst("A", a, None),
    ]  # fmt: skip


def test_plan_groups_by_image_up_to_k(tile_requests: list[LMMRequest]) -> None:
    groups, singles = plan_groups(tile_requests, 2)
    assert [g.members for g in groups] == [(0, 1), (3, 5), (4, 6)]
    assert singles == [2, 7, 8]  # the holistic request, A5 left alone, the unmarked object
    assert groups[0].request.tier == GROUP_TIER and groups[0].request.ref == "A|instance_group|1+2"
    assert groups[0].request.response_format == GROUP_RESPONSE_FORMAT
    prompt = groups[0].request.prompt
    assert "Object 1: Describe the plane marked 1." in prompt and "Object 2: Describe the plane marked 2." in prompt
    assert '{"mark": 1, "description": "..."}' in prompt
    groups3, singles3 = plan_groups(tile_requests, 3)
    assert [g.members for g in groups3] == [(0, 1, 3), (5, 7), (4, 6)] and singles3 == [2, 8]
    assert plan_groups(tile_requests, 1) == ([], list(range(9)))
    with pytest.raises(ValueError, match="at least 1"):
        plan_groups(tile_requests, 0)


def test_grouped_answers_match_single_answers_with_fewer_calls(
    fault_server: FaultServer, make_settings: MakeSettings, tile_requests: list[LMMRequest]
) -> None:
    run = describe_grouped(LMMClient(make_settings(fault_server.base_url)), tile_requests, 5)
    texts = [r.text for r in run.results]
    assert texts == [f"answer {r.facts['id']}" for r in tile_requests]
    assert [r.ref for r in run.results] == [r.ref for r in tile_requests]
    assert all(r.ok for r in run.results) and run.reasked == 0
    # A1..A5 in one call, B1+B2 in one, the holistic and the unmarked object alone: 4 calls for 9 answers
    assert fault_server.requests == 4 and len(run.calls) == 4
    grouped_body = next(s.body for s in fault_server.log.seen if s.id == "A1+A2+A3+A4+A5")
    assert grouped_body["response_format"]["type"] == "json_schema"
    assert sum(c.input_tokens for c in run.calls) == 40  # tokens live on the calls, not the objects


def test_missing_and_invalid_objects_are_asked_again_singly(
    fault_server: FaultServer, make_settings: MakeSettings, tile_requests: list[LMMRequest]
) -> None:
    fault_server.answers["A1+A2+A3"] = json.dumps(
        {"objects": [{"mark": 1, "description": "answer A1"}, {"mark": 3, "description": "I cannot see it."}]}
    )
    fault_server.answers["B1+B2"] = "Sorry, here is prose instead of JSON."

    def valid(request: LMMRequest, text: str) -> bool:
        return not text.lower().startswith(("i cannot", "sorry"))

    run = describe_grouped(LMMClient(make_settings(fault_server.base_url)), tile_requests, 3, valid)
    by_ref = {r.ref: r for r in run.results}
    assert by_ref["A|instance|1"].text == "answer A1" and by_ref["A|instance|1"].tier == "instance"
    assert by_ref["A|instance|2"].text == "answer A2" and by_ref["A|instance|3"].text == "answer A3"  # re-asked
    assert by_ref["B|instance|1"].text == "answer B1" and by_ref["B|instance|2"].text == "answer B2"
    assert run.reasked == 4  # A2 missing, A3 invalid, B1 and B2 unparseable
    singles_sent = [s.id for s in fault_server.log.seen if "+" not in s.id]
    assert sorted(singles_sent) == ["A2", "A3", "ANone", "Ah", "B1", "B2"]  # A4+A5 were fine as a group
    assert len(run.calls) == fault_server.requests == 9


def test_failed_group_call_falls_back_to_single_requests(
    fault_server: FaultServer, make_settings: MakeSettings, tile_requests: list[LMMRequest]
) -> None:
    fault_server.plan["A1+A2+A3+A4+A5"] = "500"
    run = describe_grouped(LMMClient(make_settings(fault_server.base_url, max_retries=1)), tile_requests, 5)
    assert all(r.ok for r in run.results) and run.reasked == 5
    assert [r.text for r in run.results] == [f"answer {r.facts['id']}" for r in tile_requests]
    assert sum(not c.ok for c in run.calls) == 1  # the failed group call is kept as a call


def test_server_without_structured_outputs_gets_plain_json(
    fault_server: FaultServer, make_settings: MakeSettings, tile_requests: list[LMMRequest]
) -> None:
    fault_server.structured = False
    fault_server.answers["A1+A2"] = 'Here you go:\n```json\n{"objects": [{"mark": "1", "description": "one"}, ' \
        '{"mark": 2, "description": "two"}]}\n```'
    run = describe_grouped(LMMClient(make_settings(fault_server.base_url)), tile_requests[:2], 2)
    assert [r.text for r in run.results] == ["one", "two"] and run.regrouped_fallbacks == 1
    bodies = [s.body for s in fault_server.log.seen]
    assert "response_format" in bodies[0] and "response_format" not in bodies[1]
    assert "Reply with JSON only" in bodies[1]["messages"][0]["content"][1]["text"]


def test_rerun_of_a_grouped_run_sends_nothing(
    fault_server: FaultServer, make_settings: MakeSettings, tile_requests: list[LMMRequest]
) -> None:
    describe_grouped(LMMClient(make_settings(fault_server.base_url)), tile_requests, 3)
    sent = fault_server.requests
    again = describe_grouped(LMMClient(make_settings(fault_server.base_url)), tile_requests, 3)
    assert fault_server.requests == sent and all(c.from_cache for c in again.calls)
    assert [r.text for r in again.results] == [f"answer {r.facts['id']}" for r in tile_requests]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"objects": [{"mark": 1, "description": " a "}, {"mark": 2, "description": "b"}]}', {1: "a", 2: "b"}),
        ('[{"mark": 4, "description": "d"}]', {4: "d"}),
        ('```json\n{"objects": [{"mark": "7", "description": "x"}]}\n```', {7: "x"}),
        ('prose {"objects": [{"mark": 1, "description": "a"}, {"mark": true, "description": "b"}, 3]} more', {1: "a"}),
        ('{"objects": [{"mark": 1, "description": "a"}, {"mark": 1, "description": "dup"}]}', {1: "a"}),
        ("no json at all", {}),
        ('{"objects": [{"mark": 1, "descr', {}),
    ],
)
def test_parse_group_answer(text: str, expected: dict[int, str]) -> None:
    assert parse_group_answer(text) == expected


def test_offline_describer_answers_a_group_with_each_objects_single_answer(
    offline_url: str, make_settings: MakeSettings, to_png: Callable[[np.ndarray], bytes]
) -> None:
    tile = to_png(np.full((64, 64, 3), 90, dtype=np.uint8))
    requests = [
        LMMRequest("instance", f"Describe the {cat} marked {m}.", tile,
                   {"tier": "instance", "category": cat, "position": pos, "mark": m, "length_m": 30.0 + m,
                    "width_m": 20.0, "size_class": "large"}, f"t|instance|{m}")
        for m, cat, pos in [(1, "plane", "top left"), (2, "ship", "bottom"), (3, "storage tank", "center")]
    ]  # fmt: skip
    singles = LMMClient(make_settings(offline_url)).describe_all_sync(requests, progress=False)
    grouped = describe_grouped(LMMClient(make_settings(offline_url)), requests, 3)
    assert len(grouped.calls) == 1 and grouped.reasked == 0
    assert [r.text for r in grouped.results] == [r.text for r in singles]
    assert json.loads(grouped.calls[0].text or "")["objects"][1]["mark"] == 2
