"""Dry-run estimates: OpenAI's published image rules, text tokens, prices, cache and batch discount."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.lmm.estimate import (
    CHARS_PER_TOKEN,
    MESSAGE_OVERHEAD_TOKENS,
    Estimator,
    image_rule,
    image_size,
    offline_tokenizer,
    tokenizer_status,
)
from pipeline.lmm.pricing import ModelPrice, PriceTable, RunTotals
from pipeline.lmm.profiles import load_profiles
from pipeline.lmm.types import LMMRequest, LMMResult, LMMSettings


@pytest.mark.parametrize(
    ("model", "size", "detail", "tokens"),
    [
        # OpenAI's worked examples (tiles: 85 + 170 per 512 px tile after scaling)
        ("gpt-4o", (1024, 1024), "high", 765),
        ("gpt-4o", (2048, 4096), "high", 1105),
        ("gpt-4o", (4096, 8192), "low", 85),
        ("gpt-4o-2024-08-06", (512, 512), "high", 255),  # never scaled up
        ("gpt-4o", (800, 800), "auto", 765),  # an iSAID tile; auto costed as high
        ("gpt-4o-mini", (800, 800), "high", 2833 + 4 * 5667),
        ("gpt-5", (800, 800), "high", 70 + 4 * 140),
        ("o3", (800, 800), "low", 75),
        # patches: 32 px patches (at most 1536) times the multiplier; detail does not matter
        ("gpt-4.1-mini", (1024, 1024), "low", 1659),  # 1024 patches x 1.62
        ("gpt-4.1-mini", (1800, 2400), "high", 2353),  # OpenAI's example: scaled to 1452 patches
        ("o4-mini", (800, 800), "high", 1075),  # 625 x 1.72
        ("my-local-vlm", (800, 800), "high", 765),  # unknown models: the GPT-4o rule
    ],
)
def test_image_tokens_follow_the_published_rules(
    model: str, size: tuple[int, int], detail: str, tokens: int
) -> None:
    assert image_rule(model).tokens(*size, detail) == tokens


def test_image_size_reads_headers(to_png: Callable[[np.ndarray], bytes]) -> None:
    assert image_size(to_png(np.zeros((30, 50, 3), dtype=np.uint8))) == (50, 30)
    jpeg = io.BytesIO()
    Image.new("RGB", (70, 20)).save(jpeg, format="JPEG")
    assert image_size(jpeg.getvalue()) == (70, 20)
    assert image_size(b"not an image") == (0, 0)


def _settings(model: str, **more: object) -> LMMSettings:
    return LMMSettings(model=model, max_tokens=300, detail="auto", **more)


def test_estimator_totals_per_tier_and_per_1000_tiles(to_png: Callable[[np.ndarray], bytes]) -> None:
    tile = to_png(np.zeros((800, 800, 3), dtype=np.uint8))
    prices = PriceTable({"gpt-4o": ModelPrice(2.5, 10.0)})
    settings = _settings("gpt-4o")
    est = Estimator(settings, load_profiles().lookup("gpt-4o"), prices)
    if offline_tokenizer("gpt-4o") is None:
        assert "estimate, 1 token per 4 characters" in est.estimate.text_method
    prompt = "x" * 400  # 100 tokens by the documented estimate
    est.add_tiles(2)
    for _ in range(2):
        est.add_request(LMMRequest("holistic", prompt, tile))
    for _ in range(6):
        est.add_request(LMMRequest("instance", prompt, tile))
    est.add_request(LMMRequest("instance", prompt, tile), cached=True)
    total = est.estimate.total()
    text_per_call = est.text_tokens(prompt) + MESSAGE_OVERHEAD_TOKENS
    assert est.estimate.tiers["instance"].calls == 7 and est.estimate.tiers["instance"].cached == 1
    assert total.calls == 9 and total.cached == 1
    assert total.text_tokens == 8 * text_per_call and total.image_tokens == 8 * 765
    assert total.output_tokens == 8 * 300
    assert total.cost_usd == pytest.approx((8 * (text_per_call + 765) * 2.5 + 8 * 300 * 10.0) / 1e6)
    per_k = est.estimate.per_1000_tiles()
    assert per_k.calls == 4500 and per_k.cost_usd == pytest.approx(total.cost_usd * 500)
    text = est.estimate.text()
    assert "dry run: nothing sent" in text and "per 1,000 tiles" in text
    assert "85 + 170 per 512 px tile, detail auto, costed as high" in text
    head = est.estimate.headline()
    assert "9 calls (8 to send, 1 cached)" in head and "per 1,000 tiles 4,500 calls" in head
    data = est.estimate.to_dict()
    assert data["total"]["calls"] == 9 and data["per_1000_tiles"]["calls"] == 4500

    batch = Estimator(settings, load_profiles().lookup("gpt-4o"), prices, batch=True)
    batch.add_request(LMMRequest("instance", prompt, tile))
    single = Estimator(settings, load_profiles().lookup("gpt-4o"), prices)
    single.add_request(LMMRequest("instance", prompt, tile))
    assert batch.estimate.total().cost_usd == pytest.approx(single.estimate.total().cost_usd / 2)
    assert "Batch API 50% off" in batch.estimate.text()


def test_documented_text_estimate_and_schema_tokens(to_png: Callable[[np.ndarray], bytes]) -> None:
    est = Estimator(_settings("no-such-model"), load_profiles().lookup("no-such-model"), PriceTable())
    assert est.text_tokens("abcdefghi") == 3 == int(-(-9 // CHARS_PER_TOKEN))
    tile = to_png(np.zeros((8, 8, 3), dtype=np.uint8))
    est.add_request(LMMRequest("instance_group", "p", tile, response_format={"type": "json_object"}))
    assert est.estimate.total().text_tokens == 1 + MESSAGE_OVERHEAD_TOKENS + est.text_tokens('{"type":"json_object"}')
    assert est.estimate.total().cost_usd == 0 and "no price known for no-such-model" in est.estimate.text()
    est.add_request(LMMRequest("compose", "abcd", b""))  # text only: no image tokens
    assert est.estimate.tiers["compose"].image_tokens == 0 and est.estimate.tiers["compose"].text_tokens == 7


def test_reasoning_model_estimate_says_output_covers_reasoning() -> None:
    est = Estimator(_settings("o4-mini"), load_profiles().lookup("o4-mini"), PriceTable())
    assert any("reasoning" in n for n in est.estimate.notes) and est.estimate.price is not None


def test_tiktoken_is_never_allowed_to_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tiktoken = pytest.importorskip("tiktoken")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    from pipeline.lmm import estimate

    monkeypatch.setattr(estimate, "_TOKENIZERS", {})
    assert offline_tokenizer("gpt-4o") is None  # no local encoding file: the documented estimate
    assert "has no local o200k_base file" in tokenizer_status("gpt-4o")[1]
    assert tokenizer_status("my-local-vlm") == (None, "tiktoken does not know my-local-vlm")
    assert not (tmp_path / "empty-cache").exists() and tiktoken is not None


def test_run_totals_price_batch_answers_at_the_discount(tmp_path: Path) -> None:
    def result(batch: bool) -> LMMResult:
        return LMMResult("r", "k", "ok", "t", False, 1, 0.1, 1000, 100, None, None, "gpt-4o", batch=batch)

    totals = RunTotals.from_results([result(False), result(True)])
    full = (1000 * 2.5 + 100 * 10.0) / 1e6
    assert totals.cost_usd == pytest.approx(full * 1.5) and totals.batched == 1
    assert "(1 through the Batch API)" in totals.summary()
    prices = tmp_path / "p.yaml"
    prices.write_text("gpt-4o: {input: 2.5, output: 10, batch_discount: 0.25}\n")
    assert RunTotals.from_results([result(True)], PriceTable.from_file(prices)).cost_usd == pytest.approx(full * 0.75)
    prices.write_text("gpt-4o: {input: 2.5, output: 10, batch_discount: 2}\n")
    with pytest.raises(ValueError, match="batch_discount must be between 0 and 1"):
        PriceTable.from_file(prices)
