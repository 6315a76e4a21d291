"""Token prices and run totals: how many calls a run made, how many tokens, and what they cost.

Prices are USD per 1 million tokens, separately for input (prompt, images included) and output. The
built-in table holds list prices of a few well-known models as published by their vendors in 2025; they are
ESTIMATES for planning, they change, and the cached-input discount is ignored. Answers that came through the
Batch API (``LMMResult.batch``) cost ``1 - batch_discount`` of the list price (OpenAI: 50 % off, the
default). Pass your own table as a YAML or JSON file::

    gpt-4o: {input: 2.50, output: 10.00}
    my-local-vlm: {input: 0, output: 0}
    some-provider-model: {input: 1.0, output: 4.0, batch_discount: 0.4}

A model name matches its exact entry, else the longest entry it starts with followed by ``-`` (so
``gpt-4o-2024-08-06`` gets ``gpt-4o``, ``gpt-4o-mini-2024-07-18`` gets ``gpt-4o-mini``). A model with no
entry costs 0 and the totals say so in ``note``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from .types import OFFLINE_MODEL, LMMResult

#: Share of the list price the OpenAI Batch API takes off (50 %).
BATCH_DISCOUNT = 0.5


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M input tokens and per 1M output tokens; ``batch_discount``: share taken off through the
    Batch API (0.5 = half price)."""

    input_per_m: float
    output_per_m: float
    batch_discount: float = BATCH_DISCOUNT

    def cost(self, input_tokens: int, output_tokens: int, batch: bool = False) -> float:
        """USD for the given token counts (at the batch price when ``batch``)."""
        usd = (input_tokens * self.input_per_m + output_tokens * self.output_per_m) / 1_000_000
        return usd * (1.0 - self.batch_discount) if batch else usd


#: Built-in estimates (USD per 1M tokens, vendor list prices, 2025). Check your provider before relying
#: on them.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    OFFLINE_MODEL: ModelPrice(0.0, 0.0),
    "gpt-4o": ModelPrice(2.50, 10.00),
    "gpt-4o-mini": ModelPrice(0.15, 0.60),
    "gpt-4.1": ModelPrice(2.00, 8.00),
    "gpt-4.1-mini": ModelPrice(0.40, 1.60),
    "gpt-4.1-nano": ModelPrice(0.10, 0.40),
    "gpt-5": ModelPrice(1.25, 10.00),
    "gpt-5-mini": ModelPrice(0.25, 2.00),
    "gpt-5-nano": ModelPrice(0.05, 0.40),
    "o3": ModelPrice(2.00, 8.00),
    "o4-mini": ModelPrice(1.10, 4.40),
}


class PriceTable:
    """Model name -> :class:`ModelPrice`, with prefix matching (see the module doc)."""

    def __init__(self, prices: Mapping[str, ModelPrice] | None = None) -> None:
        self.prices: dict[str, ModelPrice] = dict(DEFAULT_PRICES if prices is None else prices)

    @classmethod
    def from_file(cls, path: str | Path, *, include_defaults: bool = True) -> PriceTable:
        """Load ``{model: {input: usd_per_m, output: usd_per_m}}`` from YAML or JSON (file entries win)."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of model name -> {{input, output}}")
        prices = dict(DEFAULT_PRICES) if include_defaults else {}
        for model, entry in data.items():
            if not isinstance(entry, dict) or not {"input", "output"} <= set(entry):
                raise ValueError(f"{path}: {model!r} needs 'input' and 'output' (USD per 1M tokens)")
            discount = float(entry.get("batch_discount", BATCH_DISCOUNT))
            if not 0.0 <= discount <= 1.0:
                raise ValueError(f"{path}: {model!r} batch_discount must be between 0 and 1, got {discount}")
            prices[str(model)] = ModelPrice(float(entry["input"]), float(entry["output"]), discount)
        return cls(prices)

    def lookup(self, model: str) -> ModelPrice | None:
        """The price of ``model`` (exact name, else longest ``name-`` prefix), or None when unknown."""
        if model in self.prices:
            return self.prices[model]
        matches = [name for name in self.prices if model.startswith(name + "-")]
        return self.prices[max(matches, key=len)] if matches else None


def load_price_table(path: str | Path | None = None) -> PriceTable:
    """The built-in table, or the built-in table overridden by the entries in ``path``."""
    return PriceTable() if path is None else PriceTable.from_file(path)


@dataclass
class RunTotals:
    """What one batch of LMM calls amounted to.

    Attributes:
        calls: results in the batch.
        sent: results that needed HTTP requests in this run (not served from cache).
        cached: results served without a request (cache hits and in-batch duplicates).
        failed: results with status ``error``.
        batched: sent results answered through the Batch API (costed at the batch discount).
        attempts: HTTP attempts made, retries included.
        input_tokens, output_tokens: tokens of the requests sent in this run (cached ones cost nothing now).
        cost_usd: estimated cost of those tokens.
        latency_s_mean: mean per-result latency over sent results (s).
        models: models seen in the answers (or requested, on errors).
        unpriced_models: models with no price entry (their cost is counted as 0).
        note: a human sentence about the cost estimate.
    """

    calls: int = 0
    sent: int = 0
    cached: int = 0
    failed: int = 0
    batched: int = 0
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s_mean: float = 0.0
    models: tuple[str, ...] = ()
    unpriced_models: tuple[str, ...] = ()
    note: str = ""

    @classmethod
    def from_results(cls, results: Iterable[LMMResult], prices: PriceTable | None = None) -> RunTotals:
        """Sum ``results``; cost from ``prices`` (the built-in table when None)."""
        table = prices or PriceTable()
        totals = cls()
        models: set[str] = set()
        unpriced: set[str] = set()
        latency_sum = 0.0
        for result in results:
            totals.calls += 1
            totals.failed += result.status != "ok"
            models.add(result.model)
            if result.from_cache:
                totals.cached += 1
                continue
            totals.sent += 1
            totals.batched += result.batch
            totals.attempts += result.attempts
            totals.input_tokens += result.input_tokens
            totals.output_tokens += result.output_tokens
            latency_sum += result.latency_s
            price = table.lookup(result.model)
            if price is None:
                unpriced.add(result.model)
            else:
                totals.cost_usd += price.cost(result.input_tokens, result.output_tokens, result.batch)
        totals.latency_s_mean = latency_sum / totals.sent if totals.sent else 0.0
        totals.models = tuple(sorted(models))
        totals.unpriced_models = tuple(sorted(unpriced))
        if unpriced:
            totals.note = (
                f"no price known for {', '.join(totals.unpriced_models)}: their cost is counted as 0 "
                "(add them to a price table file)"
            )
        else:
            totals.note = "estimated from list prices; check your provider's current prices"
        return totals

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        data = asdict(self)
        data["models"] = list(self.models)
        data["unpriced_models"] = list(self.unpriced_models)
        return data

    def summary(self) -> str:
        """One line for logs and the console."""
        return (
            f"{self.calls} calls: {self.sent} sent"
            + (f" ({self.batched} through the Batch API)" if self.batched else "")
            + f", {self.cached} cached, {self.failed} failed, "
            f"{self.attempts} attempts; tokens in {self.input_tokens:,} / out {self.output_tokens:,}; "
            f"est. cost ${self.cost_usd:.4f} ({self.note})"
        )


__all__ = ["BATCH_DISCOUNT", "DEFAULT_PRICES", "ModelPrice", "PriceTable", "RunTotals", "load_price_table"]
