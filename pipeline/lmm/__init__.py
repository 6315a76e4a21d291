"""The LMM layer: prompts go out to an OpenAI-compatible endpoint, captions come back.

- :mod:`.types` — ``LMMRequest``, ``LMMResult``, ``LMMSettings``.
- :mod:`.client` — ``LMMClient``: batched, cached, retried, concurrency-bounded calls (openai package).
- :mod:`.cache` — the persistent content-addressed response cache.
- :mod:`.pricing` — price table and ``RunTotals`` (calls, tokens, estimated cost).
- :mod:`.records` — per-call records as Arrow / ``lmm_calls.parquet``.
- :mod:`.offline` — the offline describer's logic (facts + image -> honest text).
- :mod:`.server` — the offline describer as an OpenAI-compatible HTTP server.
- :mod:`.bench` — throughput benchmark against a fixed-latency local server.

Names are imported lazily, so ``import pipeline.lmm.cache`` (or starting the offline server) does not pay
for importing the openai package and pyarrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> submodule that defines it
_EXPORTS = {
    "CacheEntry": "cache",
    "ResponseCache": "cache",
    "cache_key": "cache",
    "LMMClient": "client",
    "DEFAULT_PRICES": "pricing",
    "ModelPrice": "pricing",
    "PriceTable": "pricing",
    "RunTotals": "pricing",
    "load_price_table": "pricing",
    "read_calls_parquet": "records",
    "results_to_table": "records",
    "write_calls_parquet": "records",
    "running_offline_server": "server",
    "serve": "server",
    "DEFAULT_BASE_URL": "types",
    "OFFLINE_MODEL": "types",
    "LMMRequest": "types",
    "LMMResult": "types",
    "LMMSettings": "types",
}

if TYPE_CHECKING:
    from .cache import CacheEntry, ResponseCache, cache_key
    from .client import LMMClient
    from .pricing import DEFAULT_PRICES, ModelPrice, PriceTable, RunTotals, load_price_table
    from .records import read_calls_parquet, results_to_table, write_calls_parquet
    from .server import running_offline_server, serve
    from .types import DEFAULT_BASE_URL, OFFLINE_MODEL, LMMRequest, LMMResult, LMMSettings


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
