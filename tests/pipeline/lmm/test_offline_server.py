"""The offline describer: a real OpenAI-compatible server on loopback that writes only what it measured."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from pycocotools import mask as mask_utils

from pipeline.lmm.client import LMMClient
from pipeline.lmm.offline import colour_name, describe, estimate_tokens, orientation_word
from pipeline.lmm.server import STATS_PATH, offline_server_process
from pipeline.lmm.types import OFFLINE_MODEL, LMMRequest, LMMSettings

ToPng = Callable[[np.ndarray], bytes]
GREEN, RED, BLUE, GREY = (40, 110, 50), (200, 30, 30), (30, 60, 200), (128, 128, 128)


def rle(mask: np.ndarray) -> dict[str, Any]:
    coded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in coded["size"]], "counts": coded["counts"].decode("ascii")}


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def chat(url: str, prompt: str, png: bytes | None, facts: dict[str, Any] | None, **kwargs: Any) -> Any:
    """One chat completion through the real (sync) openai client."""
    content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    if png is not None:
        data = "data:image/png;base64," + base64.b64encode(png).decode()
        content.insert(0, {"type": "image_url", "image_url": {"url": data, "detail": "auto"}})
    with openai.OpenAI(base_url=url, api_key="anything", max_retries=0, timeout=30) as client:
        return client.chat.completions.create(
            model=kwargs.pop("model", "whatever-the-caller-asks"),
            messages=[{"role": "user", "content": content}],  # type: ignore[misc,list-item]
            extra_body={"geopixeld_facts": facts} if facts is not None else None,
            **kwargs,
        )


@pytest.fixture(scope="module")
def court_scene(to_png: ToPng) -> tuple[bytes, dict[str, Any]]:
    """A red court on grass, with a large set-of-marks box (black square, yellow digit) drawn on it."""
    image = np.zeros((200, 200, 3), dtype=np.uint8)
    image[:] = GREEN
    image[40:80, 20:120] = RED
    image[40:80, 20:60] = (0, 0, 0)  # the mark box covers 40% of the court
    image[48:72, 32:48] = (255, 220, 0)
    mask = np.zeros((200, 200), dtype=bool)
    mask[40:80, 20:120] = True
    facts = {
        "tier": "instance", "category": "tennis court", "position": "top left", "mark": 7,
        "mask_rle": rle(mask), "mark_box": [20, 40, 60, 80], "gsd": 0.3, "length_m": 23.8, "width_m": 10.9,
        "orientation_deg": 35.0, "orientation_word": "diagonal", "size_class": "medium",
        "visible_fraction": 1.0, "truncated": False,
    }  # fmt: skip
    return to_png(image), facts


# ---------------------------------------------------------------- protocol


def test_models_endpoint_names_the_offline_model(offline_url: str) -> None:
    with openai.OpenAI(base_url=offline_url, api_key="x", max_retries=0) as client:
        models = client.models.list()
        assert [m.id for m in models.data] == [OFFLINE_MODEL]
        assert client.models.retrieve(OFFLINE_MODEL).id == OFFLINE_MODEL
    assert "offline" in OFFLINE_MODEL


def test_answer_reports_offline_model_and_usage(
    offline_url: str, court_scene: tuple[bytes, dict[str, Any]]
) -> None:
    png, facts = court_scene
    prompt = "List down all the attributes of the tennis court at the top left ..."
    response = chat(offline_url, prompt, png, facts, model="gpt-4o")
    assert response.model == OFFLINE_MODEL  # never pretends to be the model that was asked for
    assert response.object == "chat.completion" and response.choices[0].finish_reason == "stop"
    usage = response.usage
    assert usage is not None and usage.prompt_tokens == estimate_tokens(prompt, 1) >= 85
    assert usage.completion_tokens == estimate_tokens(response.choices[0].message.content or "")
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"stream": True}, "streaming"), ({}, "data: URLs")],
)
def test_unsupported_requests_are_400(offline_url: str, kwargs: dict[str, Any], message: str) -> None:
    with (
        openai.OpenAI(base_url=offline_url, api_key="x", max_retries=0) as client,
        pytest.raises(openai.BadRequestError, match=message),
    ):
        content = [{"type": "image_url", "image_url": {"url": "https://example.com/tile.png"}}]
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": content if not kwargs else "hello"}],  # type: ignore[misc,list-item]
            **kwargs,
        )


def test_bad_json_unknown_routes_and_stats(offline_url: str) -> None:
    root = offline_url.removesuffix("/v1")
    bad = urllib.request.Request(offline_url + "/chat/completions", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(bad, timeout=10)
    assert caught.value.code == 400 and "not valid JSON" in json.load(caught.value)["error"]["message"]
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(offline_url + "/embeddings", timeout=10)
    assert caught.value.code == 404
    with urllib.request.urlopen(root + STATS_PATH, timeout=10) as response:
        stats = json.load(response)
    assert set(stats) == {"requests", "in_flight", "max_in_flight"} and stats["in_flight"] == 0


# ---------------------------------------------------------------- what it writes


def test_instance_answer_is_measured_and_never_names_the_mark(
    offline_url: str, court_scene: tuple[bytes, dict[str, Any]]
) -> None:
    png, facts = court_scene
    text = chat(offline_url, "describe", png, facts).choices[0].message.content
    assert "red" in text and "tennis court" in text and "top left" in text
    assert "24 m" in text and "11 m" in text and "diagonal" in text
    # The drawn mark (black square, yellow digit) is excluded from the colour measurement ...
    assert "black" not in text and "yellow" not in text
    # ... and the mark number is never written.
    assert "7" not in text and not re.search(r"\b(mark|marked|number|#)", text, re.IGNORECASE)
    assert len(sentences(text)) == 1


def test_colour_comes_from_the_pixels(offline_url: str, court_scene: tuple[bytes, dict[str, Any]]) -> None:
    png, facts = court_scene
    unmasked = {**facts, "mark_box": None}  # without the box the black mark counts as part of the court
    assert "red and black" in chat(offline_url, "describe", png, unmasked).choices[0].message.content


def test_truncated_instance_says_only_its_visible_part_was_measured(
    court_scene: tuple[bytes, dict[str, Any]],
) -> None:
    png, facts = court_scene
    text = describe({**facts, "truncated": True, "visible_fraction": 0.6}, png)
    assert "visible part" in text and "cut off" in text and "60% visible" in text


def test_round_objects_get_a_diameter_and_no_orientation(court_scene: tuple[bytes, dict[str, Any]]) -> None:
    png, facts = court_scene
    tank = {
        **facts,
        "category": "storage_tank",
        "length_m": 20.4,
        "width_m": 19.6,
        "orientation_word": "diagonal",
    }
    text = describe(tank, png)
    assert "storage tank" in text and "20 m across" in text and "diagonal" not in text


def test_instance_without_measurements_claims_nothing_more() -> None:
    text = describe(
        {"tier": "instance", "category": "plane", "position": "right", "size_class": "large"}, None
    )
    assert re.fullmatch(r"(A large plane (lies |sits )?on the right|On the right, a large plane)\.", text), (
        text
    )
    unknown = describe({"tier": "instance"}, None)
    assert "unknown category" in unknown and not re.search(r"\d", unknown)


def test_orientation_words_of_the_priors_are_used_as_given(court_scene: tuple[bytes, dict[str, Any]]) -> None:
    png, facts = court_scene
    rising = describe({**facts, "orientation_word": "diagonal, rising to the right"}, png)
    assert re.search(r"(oriented|aligned) diagonally, rising to the right", rising)
    compact = describe({**facts, "orientation_word": None, "orientation_deg": 35.0}, png)
    assert "diagonal" not in compact and "orient" not in compact  # None means: too compact to have one


def test_size_class_is_not_stacked_on_a_sized_category_name() -> None:
    facts = {"tier": "instance", "category": "large vehicle", "position": "top", "size_class": "small"}
    assert "small" not in describe(facts, None) and "large vehicle" in describe(facts, None)
    plane = describe({**facts, "category": "plane", "size_class": "medium"}, None)
    assert "medium-sized plane" in plane


def test_mark_numbers_never_leak(court_scene: tuple[bytes, dict[str, Any]]) -> None:
    png, facts = court_scene
    for mark in range(1, 41):
        varied = {**facts, "mark": mark, "length_m": 100.0 + mark * 3.3, "width_m": 50.0 + mark}
        text = describe(varied, png)
        assert not re.search(r"\b(mark|marked|number|#)", text, re.IGNORECASE), text


def test_cluster_answer_counts_colours_and_places(offline_url: str, to_png: ToPng) -> None:
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    image[:] = GREY
    mask = np.zeros((100, 100), dtype=bool)
    for k in range(12):  # twelve blue cars in the left half
        y, x = 5 + (k % 6) * 15, 5 + (k // 6) * 20
        image[y : y + 6, x : x + 10] = BLUE
        mask[y : y + 6, x : x + 10] = True
    facts = {"tier": "cluster", "category": "small vehicles", "count": 12, "count_word": "many",
             "position": "left side", "mask_rle": rle(mask), "gsd": 0.4}  # fmt: skip
    text = chat(offline_url, "describe", to_png(image), facts).choices[0].message.content
    assert "12 small vehicles" in text and "blue" in text and "left side" in text
    assert "spread over about 32 m" in text  # the members span 81 px at 0.4 m per pixel
    assert len(sentences(text)) == 1


def test_cluster_without_count_uses_the_count_word() -> None:
    text = describe(
        {"tier": "cluster", "category": "ships", "count_word": "numerous", "position": "bottom"}, None
    )
    assert "numerous ships" in text.lower() and "at the bottom" in text


def test_cluster_across_the_image_reads_naturally() -> None:
    facts = {"tier": "cluster", "category": "small vehicles", "count": 30, "position": "across the image"}
    text = describe(facts, None)
    assert "30 small vehicles" in text and "across the image" in text.lower()
    assert "in the across" not in text.lower() and "image of the image" not in text


def test_holistic_answer_is_four_sentences_from_counts_layout_and_scale(
    offline_url: str, to_png: ToPng
) -> None:
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[:, :40] = GREEN
    image[:, 40:] = GREY
    facts = {
        "tier": "holistic",
        "category_counts": {"plane": 3, "small vehicle": 20},
        "instances": [{"category": "plane", "position": "top left", "size_class": "large"}] * 3
        + [{"category": "small vehicle", "position": p, "size_class": "small"} for p in ("bottom", "right")],
        "gsd": 0.3,
        "tile_size": [800, 800],
    }
    text = chat(offline_url, "Describe the image in four short sentences.", to_png(image), facts)
    text = text.choices[0].message.content
    assert len(sentences(text)) == 4
    assert "green" in text and "grey" in text
    assert "20 small vehicles and three planes" in text
    assert "planes lie in the top left" in text and "at the bottom" in text and "on the right" in text
    assert "240 m by 240 m" in text


def test_holistic_names_categories_with_the_same_layout_together() -> None:
    instances = [{"category": c, "position": p} for c in ("plane", "ship") for p in ("top", "left", "centre")]
    facts = {"tier": "holistic", "category_counts": {"plane": 3, "ship": 3}, "instances": instances}
    text = describe(facts, None)
    assert "The planes and ships are spread across the tile." in text
    assert "It contains" in text or "The annotated objects are" in text


def test_holistic_without_objects_or_scale_says_so(to_png: ToPng) -> None:
    image = np.zeros((60, 60, 3), dtype=np.uint8)
    image[:] = GREEN
    image[:20, :20] = (230, 230, 230)
    facts: dict[str, Any] = {"tier": "holistic", "category_counts": {}, "instances": [], "gsd": None}
    text = describe(facts, to_png(image))
    assert len(sentences(text)) == 4
    assert "No annotated objects were measured" in text
    assert "brightest part is in the top left" in text
    assert "ground sample distance is unknown" in text


def test_without_facts_only_colour_is_described(offline_url: str, to_png: ToPng) -> None:
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:] = BLUE
    text = chat(offline_url, "What is this?", to_png(image), None).choices[0].message.content
    assert "No measured facts" in text and "blue" in text
    assert "No measured facts" in describe(None, None) and "nothing can be described" in describe(None, None)


def test_category_tier_never_guesses() -> None:
    assert describe({"tier": "category", "candidates": ["plane", "ship"]}, None) == "unknown"
    assert describe({"tier": "category", "candidates": ["plane", "ship"], "category": "ship"}, None) == "ship"
    assert describe({"tier": "category", "candidates": ["plane"], "category": "ship"}, None) == "unknown"


def test_wording_is_deterministic_but_varies_between_inputs(
    court_scene: tuple[bytes, dict[str, Any]],
) -> None:
    png, facts = court_scene
    assert describe(facts, png) == describe(dict(facts), png)
    texts = {describe({**facts, "mark": m}, png) for m in range(1, 30)}
    assert len(texts) > 1


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((255, 255, 255), "white"), ((0, 0, 0), "black"), ((128, 128, 128), "grey"),
        ((200, 200, 200), "light grey"), ((70, 70, 75), "dark grey"), ((200, 30, 30), "red"),
        ((230, 130, 20), "orange"), ((240, 220, 40), "yellow"), ((30, 160, 40), "green"),
        ((20, 70, 25), "dark green"), ((30, 60, 200), "blue"), ((20, 40, 90), "dark blue"),
        ((135, 190, 235), "light blue"), ((120, 70, 30), "brown"), ((210, 180, 140), "tan"),
        ((128, 0, 128), "purple"), ((255, 182, 193), "pink"),
    ],
)  # fmt: skip
def test_colour_names(rgb: tuple[int, int, int], name: str) -> None:
    assert colour_name(rgb) == name


def test_orientation_words() -> None:
    assert [orientation_word(a) for a in (0, 10, 170, 90, 100, 45, 135, -45)] == [
        "horizontal", "horizontal", "horizontal", "vertical", "vertical", "diagonal", "diagonal", "diagonal",
    ]  # fmt: skip


# ---------------------------------------------------------------- end to end


def test_client_and_offline_server_end_to_end(
    offline_url: str, court_scene: tuple[bytes, dict[str, Any]], tmp_path: Path
) -> None:
    png, facts = court_scene
    requests = [
        LMMRequest("instance", "describe", png, {**facts, "mark": m}, ref=f"tile|instance|{m}")
        for m in (1, 2, 3)
    ] + [
        LMMRequest(
            "holistic", "Describe the image in four short sentences.", png, {"tier": "holistic"}, "tile|h"
        )
    ]
    settings = LMMSettings(base_url=offline_url, concurrency=2, cache_dir=tmp_path / "cache")
    results = LMMClient(settings).describe_all_sync(requests, progress=False)
    assert all(r.ok and r.model == OFFLINE_MODEL and r.input_tokens > 85 for r in results)
    assert all("tennis court" in (r.text or "") for r in results[:3])
    again = LMMClient(settings).describe_all_sync(requests, progress=False)
    assert all(r.from_cache for r in again) and [r.text for r in again] == [r.text for r in results]


def test_cli_server_process_serves_and_stops_by_pid(court_scene: tuple[bytes, dict[str, Any]]) -> None:
    png, facts = court_scene
    with offline_server_process() as (proc, url):
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", url)
        text = chat(url, "describe", png, facts).choices[0].message.content
        assert "tennis court" in text
        pid = proc.pid
    assert proc.poll() is not None and proc.pid == pid  # stopped when the block ended


def test_compose_merges_sentences_of_one_category_and_keeps_every_phrase() -> None:
    from pipeline import gcg

    sentences = [
        {"text": "The scene is grey. It contains planes. The planes lie left. The scale is unknown.", "kind": "holistic"},
        {"text": "A white <p> plane-1 </p> [SEG] lies on the left.", "category": "plane", "kind": "instance"},
        {"text": "There are two <p> planes-2 </p> [SEG] at the top.", "category": "plane", "kind": "cluster"},
        {"text": "A grey <p> ship-1 </p> [SEG] sits in the center.", "category": "ship", "kind": "instance"},
    ]
    text = describe({"tier": "compose", "sentences": sentences, "max_words": 40}, None)
    assert gcg.phrase_texts(text) == ["plane-1", "planes-2", "ship-1"]
    assert gcg.markup_problems(text, 3) == []
    assert "on the left; there are two <p> planes-2 </p> [SEG] at the top." in text  # one sentence per category
    assert text.startswith("The scene is grey.") and "scale is unknown" not in text  # trimmed to the budget
    assert describe({"tier": "compose", "sentences": sentences, "max_words": 40}, None) == text  # deterministic
