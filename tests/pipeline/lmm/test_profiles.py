"""Model request profiles: reasoning models get the fields they accept; a refused field names its setting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fault_server import FaultServer

from pipeline.lmm.cache import cache_key
from pipeline.lmm.client import LMMClient, refused_parameter
from pipeline.lmm.profiles import GENERIC, ProfileTable, load_profiles
from pipeline.lmm.types import LMMRequest, LMMResult, LMMSettings

MakeSettings = Callable[..., LMMSettings]
MakeRequests = Callable[..., list[LMMRequest]]


def run(settings: LMMSettings, requests: list[LMMRequest]) -> list[LMMResult]:
    return LMMClient(settings).describe_all_sync(requests, progress=False)


def test_builtin_table_knows_reasoning_models() -> None:
    table = load_profiles()
    for model in ("gpt-5", "gpt-5-mini", "gpt-5.1", "o1", "o3-mini", "o3-2025-04-16", "o4-mini"):
        profile = table.lookup(model)
        assert profile.token_field == "max_completion_tokens" and not profile.temperature and profile.reasoning
    chat = table.lookup("gpt-5-chat-latest")
    assert chat.token_field == "max_completion_tokens" and chat.temperature and not chat.reasoning
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1-nano", "internlm-xcomposer2d5", "geopixeld-offline-describer-v1"):
        assert table.lookup(model) == GENERIC


def test_profiles_file_overrides_and_errors_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "profiles.yaml"
    good.write_text(
        "my-vlm*: {temperature: false, detail: low, structured_outputs: false}\n"
        "gpt-5*: {token_field: max_completion_tokens, temperature: false, extra: {reasoning_effort: low}}\n"
    )
    table = ProfileTable.from_file(good)
    assert table.lookup("my-vlm-7b").detail == "low" and not table.lookup("my-vlm-7b").temperature
    assert table.lookup("my-vlm-7b").token_field == "max_tokens"  # unspecified fields: the generic profile's
    assert dict(table.lookup("gpt-5-mini").extra) == {"reasoning_effort": "low"}
    assert table.lookup("o3").reasoning  # built-in entries stay
    for text, problem in [
        ("m: {token_field: max_len}\n", "token_field must be one of"),
        ("m: {temprature: false}\n", "unknown field(s) temprature"),
        ("m: [1, 2]\n", "must map to profile fields"),
        ("- a\n", "expected a mapping"),
        ("m: {detail: medium}\n", "detail must be one of"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ValueError, match=str(bad)) as info:
            ProfileTable.from_file(bad)
        assert problem in str(info.value)
    with pytest.raises(ValueError, match="cannot read"):
        ProfileTable.from_file(tmp_path / "missing.yaml")


def test_reasoning_model_refusing_max_tokens_fails_fast_with_the_setting_to_change(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests
) -> None:
    fault_server.reasoning = True
    ids = [f"r{i}" for i in range(10)]
    results = run(make_settings(fault_server.base_url, concurrency=1), make_requests(ids))
    assert all(r.status == "error" and "max_tokens" in (r.error or "") for r in results)
    first = results[0].error or ""
    assert first.startswith("HTTP 400: Unsupported parameter: 'max_tokens'")
    assert "token_field: max_completion_tokens for 'fault-model*'" in first and "--lmm-profiles" in first
    assert fault_server.requests == 1  # the other nine would fail the same way: not sent
    assert all((r.error or "").startswith("not sent: an earlier request failed with HTTP 400") for r in results[1:])
    assert all(r.attempts == 0 for r in results[1:]) and results[0].attempts == 1
    # describe makes one client per tile batch: the next client for this endpoint and model knows too
    again = run(make_settings(fault_server.base_url, concurrency=1), make_requests(["later"]))
    assert again[0].status == "error" and fault_server.requests == 1


def test_temperature_refused_names_its_setting(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests, tmp_path: Path
) -> None:
    fault_server.reasoning = True
    profiles = tmp_path / "p.yaml"
    profiles.write_text("fault-model: {token_field: max_completion_tokens}\n")
    (result,) = run(make_settings(fault_server.base_url, profiles_file=profiles), make_requests(["a"]))
    assert result.status == "error" and "Unsupported value: 'temperature'" in (result.error or "")
    assert f"set temperature: false for 'fault-model*' in the model profiles file {profiles}" in (result.error or "")


def test_reasoning_model_profile_sends_what_it_accepts(
    fault_server: FaultServer, make_settings: MakeSettings, make_requests: MakeRequests, tmp_path: Path
) -> None:
    fault_server.reasoning = True
    results = run(make_settings(fault_server.base_url, model="o4-mini", max_tokens=77), make_requests(["a", "b"]))
    assert all(r.ok for r in results) and fault_server.requests == 2
    body = fault_server.log.seen[0].body
    assert body["max_completion_tokens"] == 77 and "max_tokens" not in body and "temperature" not in body
    # a user's own profile for a model the table does not know works the same way
    profiles = tmp_path / "p.yaml"
    profiles.write_text("fault-*: {token_field: max_completion_tokens, temperature: false, extra: {seed: 7}}\n")
    (again,) = run(make_settings(fault_server.base_url, profiles_file=profiles), make_requests(["c"]))
    assert again.ok and fault_server.log.seen[-1].body["seed"] == 7


def test_generic_profile_keeps_old_cache_keys(make_settings: MakeSettings, make_requests: MakeRequests) -> None:
    settings = make_settings("http://127.0.0.1:9/v1")
    (request,) = make_requests(["a"])
    old = cache_key(model=settings.model, params=settings.generation_params(), prompt_version=settings.prompt_version,
                    tier=request.tier, prompt=request.prompt, image_png=request.image_png, facts=request.facts)  # fmt: skip
    assert LMMClient(settings).key_for(request) == old
    # other shapes of the request are other questions
    reasoning = LMMClient(make_settings("http://127.0.0.1:9/v1", model="o3"))
    assert reasoning.key_for(request) != LMMClient(make_settings("http://127.0.0.1:9/v1", model="o3x")).key_for(request)
    schema = LMMRequest(request.tier, request.prompt, request.image_png, request.facts, "r", {"type": "json_object"})
    assert LMMClient(settings).key_for(schema) != old


def test_detail_omit_and_structured_outputs_off(
    fault_server: FaultServer, make_settings: MakeSettings, tiny_png: bytes, tmp_path: Path
) -> None:
    profiles = tmp_path / "p.yaml"
    profiles.write_text("fault-model: {detail: omit, structured_outputs: false}\n")
    request = LMMRequest("instance", "p", tiny_png, {"id": "a"}, "r", {"type": "json_object"})
    (result,) = run(make_settings(fault_server.base_url, profiles_file=profiles), [request])
    body = fault_server.log.seen[0].body
    assert result.ok and "response_format" not in body
    assert "detail" not in body["messages"][0]["content"][0]["image_url"]


def test_refused_parameter_reads_openai_and_other_servers_errors() -> None:
    openai_style = {"error": {"message": "x", "param": "max_tokens", "code": "unsupported_parameter"}}
    assert refused_parameter(400, openai_style) == "max_tokens"
    assert refused_parameter(400, {"error": {"message": "Unsupported value: 'temperature' does not support 0.2"}}) == "temperature"
    assert refused_parameter(400, {"detail": "Extra inputs are not permitted: 'geopixeld_facts'"}) == "geopixeld_facts"
    assert refused_parameter(400, {"error": {"message": "image too large"}}) is None
    assert refused_parameter(500, openai_style) is None
