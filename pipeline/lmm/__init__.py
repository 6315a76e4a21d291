"""The LMM layer: prompts go out to an OpenAI-compatible endpoint, captions come back.

- :mod:`.types` — ``LMMRequest``, ``LMMResult``, ``LMMSettings``.
- :mod:`.client` — ``LMMClient``: batched, cached, retried, concurrency-bounded calls (openai package).
- :mod:`.cache` — the persistent content-addressed response cache.
- :mod:`.pricing` — price table and ``RunTotals`` (calls, tokens, estimated cost).
- :mod:`.records` — per-call records as Arrow / ``lmm_calls.parquet``.
- :mod:`.offline` — the offline describer's logic (facts + image -> honest text).
- :mod:`.server` — the offline describer as an OpenAI-compatible HTTP server.
- :mod:`.bench` — throughput benchmark against a fixed-latency local server.
"""

from __future__ import annotations

from .cache import CacheEntry, ResponseCache, cache_key
from .client import LMMClient
from .pricing import DEFAULT_PRICES, ModelPrice, PriceTable, RunTotals, load_price_table
from .records import read_calls_parquet, results_to_table, write_calls_parquet
from .server import running_offline_server, serve
from .types import DEFAULT_BASE_URL, OFFLINE_MODEL, LMMRequest, LMMResult, LMMSettings

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_PRICES",
    "OFFLINE_MODEL",
    "CacheEntry",
    "LMMClient",
    "LMMRequest",
    "LMMResult",
    "LMMSettings",
    "ModelPrice",
    "PriceTable",
    "ResponseCache",
    "RunTotals",
    "cache_key",
    "load_price_table",
    "read_calls_parquet",
    "results_to_table",
    "running_offline_server",
    "serve",
    "write_calls_parquet",
]
