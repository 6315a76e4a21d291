"""Describe and ground: real HTTP servers on loopback, the real `openai` client, flags not losses."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from scripted_server import scripted_server

from pipeline.config import PrepareConfig
from pipeline.describe import DescribeConfig, describe
from pipeline.gcg import PHRASE_RE, parse
from pipeline.prepare import prepare
from pipeline.rle import decode


@pytest.fixture(scope="module")
def dota_prepared(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("dota")
    prepare([data_dir / "dota"], PrepareConfig(format="dota"), out, progress=False)
    return out


def _fresh(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("lmm_cache", "samples.parquet", "lmm_calls.parquet"))
    return dst


def test_offline_describer_grounds_every_object(tmp_path: Path, isaid_prepared: Path) -> None:
    data = _fresh(isaid_prepared, tmp_path / "d")
    summary = describe(data, DescribeConfig(concurrency=4, policy="all-instances"), progress=False)
    samples = pq.read_table(data / "samples.parquet").to_pylist()
    tiles = pq.read_table(data / "tiles.parquet").column("tile_id").to_pylist()
    instances = pq.read_table(data / "instances.parquet").to_pylist()
    clusters = pq.read_table(data / "clusters.parquet").to_pylist()
    assert [s["tile_id"] for s in samples] == tiles  # every tile ends with a sample
    assert summary.lmm["failed"] == 0
    by_tile: dict[str, list[dict[str, Any]]] = {}
    for r in instances:
        by_tile.setdefault(r["tile_id"], []).append(r)
    for s in samples:
        gcg = s["gcg_caption"]
        assert gcg.count("[SEG]") == len(s["masks"]) == len(s["phrases"])
        assert len(PHRASE_RE.findall(gcg)) == len(s["masks"])
        parsed = parse(gcg)
        caption, spans = parsed.caption, parsed.spans
        assert caption == s["caption"] and "<p>" not in caption and "[SEG]" not in caption
        for p, (text, a, b) in zip(s["phrases"], spans, strict=True):
            assert caption[p["start"] : p["end"]] == p["text"] == text and (a, b) == (p["start"], p["end"])
        marked = [r for r in by_tile.get(s["tile_id"], []) if r["mark"] is not None]
        n_clusters = sum(1 for c in clusters if c["tile_id"] == s["tile_id"])
        assert len(s["phrases"]) == len(marked) + n_clusters  # every object grounded once
        rows = {r["instance_id"]: r for r in by_tile.get(s["tile_id"], [])}
        for p, m in zip(s["phrases"], s["masks"], strict=True):
            mask = decode(m)
            expected = np.zeros_like(mask)
            for i in p["instance_ids"]:
                expected |= decode(rows[i]["rle"])
            assert np.array_equal(mask, expected)  # cluster masks are the union of members
            if p["kind"] == "instance":
                assert re.fullmatch(r"[a-z ]+-\d+", p["text"])
        assert s["lmm_model"] == "geopixeld-offline-describer-v1" and s["prompt_version"] == "geopixeld-v1"
        assert s["holistic"] and len(s["holistic"].split(".")) >= 4
    calls = pq.read_table(data / "lmm_calls.parquet")
    assert calls.num_rows == summary.lmm["calls"]


def test_rerun_sends_zero_requests(tmp_path: Path, dota_prepared: Path) -> None:
    data = _fresh(dota_prepared, tmp_path / "d")
    answer = "A white large vehicle parked in a row, oriented vertically."
    with scripted_server(lambda prompt, facts: (200, answer)) as (url, stats):
        cfg = DescribeConfig(base_url=url, model="scripted", concurrency=3, policy="all-instances")
        first = describe(data, cfg, progress=False)
        n = len(stats.requests)
        assert n == first.lmm["calls"] > 50
        assert stats.max_in_flight <= 3
        second = describe(data, cfg, progress=False)
        assert len(stats.requests) == n  # nothing sent again
        assert second.lmm["cached"] == second.lmm["calls"]
    assert pq.read_table(data / "samples.parquet").num_rows == 1


def test_faulty_answers_are_flagged_not_lost(tmp_path: Path, dota_prepared: Path) -> None:
    data = _fresh(dota_prepared, tmp_path / "d")

    def script(prompt: str, facts: dict[str, Any]) -> tuple[int, str]:
        mark = facts.get("mark")
        if facts.get("tier") == "holistic":
            return 200, "A parking lot with rows of trucks. Trees line the left edge. Buildings sit at the top. It is daytime."
        if mark == 1:
            return 200, f"The large vehicle marked with number {mark} is white."
        if mark == 2:
            return 200, "A small airplane parked on the apron."
        if mark == 3:
            return 500, "boom"
        if mark == 4:
            return 200, "I'm sorry, I cannot identify the marked object."
        if mark == 5:
            return 200, "A white <p> large vehicle </p> [SEG] [SEG] parked."
        if mark == 6:
            return 200, "   "
        if facts.get("tier") == "instance" and facts.get("position", "").endswith("left"):
            return 200, "A white large vehicle on the right side of the lot."
        return 200, f"A long white {facts.get('category', 'vehicle')} parked in a row."

    with scripted_server(script) as (url, stats):
        cfg = DescribeConfig(base_url=url, model="scripted", max_retries=1, backoff_base_s=0.01, policy="all-instances")
        describe(data, cfg, progress=False)
    [s] = pq.read_table(data / "samples.parquet").to_pylist()
    codes = {f["code"] for f in s["flags"]}
    assert {"mark_leak", "wrong_category", "lmm_failed", "refusal", "repeated_sentence"} <= codes
    assert s["max_severity"] == "error"
    failed = [f for f in s["flags"] if f["code"] == "lmm_failed"]
    assert any("500" in f["detail"] for f in failed)
    # The blank answer (mark 6) is an error too: flagged, never silently skipped.
    assert len(failed) + sum(f["code"] == "empty_response" for f in s["flags"]) == 2
    # Flags about one object name its phrase and instances; sample-level flags name none.
    leak = next(f for f in s["flags"] if f["code"] == "mark_leak")
    assert leak["instance_ids"] and leak["phrase"] is not None
    assert leak["instance_ids"][0] in s["phrases"][leak["phrase"]]["instance_ids"]
    # Markup inside an answer cannot break the caption: one [SEG] per mask, still.
    assert s["gcg_caption"].count("[SEG]") == len(s["masks"])
    calls = pq.read_table(data / "lmm_calls.parquet").to_pylist()
    errors = [c for c in calls if c["status"] == "error"]
    assert len(errors) == len(failed)
    assert any(c["attempts"] == 2 for c in errors)  # the 500 was retried once (max_retries=1)


def test_phrase_naming_noun_and_metric_prompts(tmp_path: Path, dota_prepared: Path) -> None:
    data = _fresh(dota_prepared, tmp_path / "d")
    seen: list[str] = []

    def script(prompt: str, facts: dict[str, Any]) -> tuple[int, str]:
        seen.append(prompt)
        return 200, f"A white {facts.get('category', 'scene')} seen from above, parked neatly in its place today."

    with scripted_server(script) as (url, _):
        cfg = DescribeConfig(base_url=url, model="m", phrase_naming="noun", metric_priors=True, policy="all-instances")
        describe(data, cfg, progress=False)
    [s] = pq.read_table(data / "samples.parquet").to_pylist()
    assert any(p["text"] == "large vehicle" for p in s["phrases"])
    assert any(p["text"] == "small vehicles" for p in s["phrases"] if p["kind"] == "cluster")
    metric = [p for p in seen if "m long" in p]
    assert metric and all("Do not mention the marked number" in p for p in metric)


def test_facts_go_only_to_servers_on_this_machine(tmp_path: Path, dota_prepared: Path) -> None:
    assert DescribeConfig().facts_enabled()
    assert not DescribeConfig(base_url="https://api.openai.com/v1").facts_enabled()
    data = _fresh(dota_prepared, tmp_path / "d")
    with scripted_server(lambda p, f: (200, "A white large vehicle parked in the lot.")) as (url, stats):
        describe(data, DescribeConfig(base_url=url, model="m", send_facts=False), progress=False)
    assert stats.requests and all(r["facts"] == {} for r in stats.requests)


def test_geopixeld_policy_gives_geopixeld_shape(tmp_path: Path, isaid_prepared: Path) -> None:
    """Default policy, offline describer, bundled iSAID sample: the issue's aims, and no object lost."""
    data = _fresh(isaid_prepared, tmp_path / "d")
    summary = describe(data, DescribeConfig(concurrency=4), progress=False)
    samples = pq.read_table(data / "samples.parquet").to_pylist()
    instances = pq.read_table(data / "instances.parquet").to_pylist()
    calls = pq.read_table(data / "lmm_calls.parquet").to_pylist()
    per_tile: dict[str, list[str]] = {}
    for c in calls:
        per_tile.setdefault(c["ref"].split("|")[0], []).append(c["tier"])
    for s in samples:
        tiers = per_tile[s["tile_id"]]
        assert len(tiers) <= 6 and tiers.count("holistic") == 1 and tiers.count("compose") == 1
        assert tiers.count("instance") <= 2 and tiers.count("cluster") <= 2
        assert 2 <= len(s["phrases"]) <= 6
        ids = [i for p in s["phrases"] for i in p["instance_ids"]]
        tile_ids = sorted(r["instance_id"] for r in instances if r["tile_id"] == s["tile_id"])
        assert sorted(ids) == tile_ids  # every object grounded, exactly once
        assert s["n_grounded_instances"] == s["n_instances"] == len(tile_ids)
        parsed = parse(s["gcg_caption"])
        assert parsed.caption == s["caption"] and [p.text for p in parsed.phrases] == [p["text"] for p in s["phrases"]]
        assert [(p["start"], p["end"]) for p in s["phrases"]] == [(p.start, p.end) for p in parsed.phrases]
        assert not s["flags"]
    fid = summary.fidelity
    assert 400 <= fid["caption_chars_mean"] <= 1000
    assert fid["calls_per_tile"] <= 6 and 2 <= fid["phrases_per_tile"] <= 6
    assert fid["grounded_share"] >= 0.95
    assert "fidelity over" in summary.text() and "GeoPixelD" in summary.text()


def _compose_script(compose_answer: Any) -> Any:
    def script(prompt: str, facts: dict[str, Any]) -> tuple[int, str]:
        tier = facts.get("tier")
        if tier == "compose":
            return 200, compose_answer(facts)
        if tier == "holistic":
            return 200, "A parking lot with rows of trucks beside a road. Trees line one edge."
        return 200, f"A white {facts.get('category', 'object')} parked neatly."

    return script


def test_compose_is_used_when_it_keeps_every_phrase(tmp_path: Path, dota_prepared: Path) -> None:
    data = _fresh(dota_prepared, tmp_path / "d")

    def fused(facts: dict[str, Any]) -> str:
        return "In short: " + " Also, ".join(s["text"] for s in facts["sentences"])

    with scripted_server(_compose_script(fused)) as (url, stats):
        describe(data, DescribeConfig(base_url=url, model="m"), progress=False)
    [s] = pq.read_table(data / "samples.parquet").to_pylist()
    assert s["caption"].startswith("In short: ") and "Also," in s["caption"]
    assert not [f for f in s["flags"] if f["code"].startswith("compose")]
    compose = [r for r in stats.requests if r["facts"].get("tier") == "compose"]
    assert len(compose) == 1 and "<p>" in compose[0]["prompt"]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda texts: " ".join(texts[:-1]),  # drops the last phrase
        lambda texts: " ".join([texts[0], *reversed(texts[1:])]),  # reorders phrases
        lambda texts: " ".join(texts).replace("-1 </p>", "-9 </p>", 1),  # renames a phrase
        lambda texts: "",  # empty
    ],
)
def test_compose_that_changes_phrases_is_refused(tmp_path: Path, dota_prepared: Path, mangle: Any) -> None:
    data = _fresh(dota_prepared, tmp_path / "d")
    with scripted_server(_compose_script(lambda f: mangle([s["text"] for s in f["sentences"]]))) as (url, _):
        describe(data, DescribeConfig(base_url=url, model="m", max_retries=0), progress=False)
    [s] = pq.read_table(data / "samples.parquet").to_pylist()
    codes = [f["code"] for f in s["flags"]]
    assert "compose_rejected" in codes or "empty_response" in codes or "compose_failed" in codes
    assert s["caption"].startswith("A parking lot")  # the plain concatenation was kept
    assert s["gcg_caption"].count("[SEG]") == len(s["masks"]) == len(s["phrases"])
