"""A client that sends nothing: for dry runs and for filling Batch API input over a whole dataset.

:class:`DeferredClient` answers from the response cache; every request the cache cannot answer is handed to
``on_miss`` (the dry run counts it, batch mode queues it) and comes back as an error result whose text starts
with :data:`PENDING` — "not answered yet", which callers tell apart from a failure with :func:`is_pending`
(grouped requests are then not re-asked singly, compose requests are not built from missing answers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Set
from dataclasses import replace

from .client import LMMClient
from .types import PENDING, LMMRequest, LMMResult, is_pending


class DeferredClient:
    """Cache hits as answers, misses handed to ``on_miss(request, key)`` and returned pending.

    Args:
        client: supplies keys, the cache and result records (nothing is sent through it).
        on_miss: called once per distinct missing request.
        on_hit: called once per request answered from the cache (a dry run counts those too).
        reason: words after :data:`PENDING` in the pending results' error text.
        fresh: keys answered through the Batch API in this run: their cached answers are reported as sent
            in this run (``from_cache=False``, ``batch=True``), so totals count them, at the batch discount.
    """

    def __init__(
        self,
        client: LMMClient,
        on_miss: Callable[[LMMRequest, str], object],
        on_hit: Callable[[LMMRequest, str], object] | None = None,
        reason: str = "not sent yet",
        fresh: Set[str] = frozenset(),
    ) -> None:
        self.client = client
        self.on_miss = on_miss
        self.on_hit = on_hit
        self.reason = reason
        self.fresh = fresh
        self._counted: set[str] = set()

    def key_for(self, request: LMMRequest) -> str:
        return self.client.key_for(request)

    def describe_all_sync(self, requests: Sequence[LMMRequest], progress: bool = True) -> list[LMMResult]:
        """One result per request, in order: cached answers, or pending errors (misses reported once)."""
        del progress
        results: list[LMMResult] = []
        missed: set[str] = set()
        for request in requests:
            key = self.client.key_for(request)
            entry = self.client.cache.get(key) if self.client.cache is not None else None
            if entry is not None:
                if self.on_hit is not None:
                    self.on_hit(request, key)
                result = self.client._from_cache(request, entry)
                if key in self.fresh and key not in self._counted:  # sent in this run, through a batch
                    self._counted.add(key)
                    result = replace(result, from_cache=False, attempts=1, batch=True)
                results.append(result)
                continue
            if key not in missed:
                missed.add(key)
                self.on_miss(request, key)
            results.append(self.client._invalid(request, PENDING + self.reason, key))
        return results


__all__ = ["PENDING", "DeferredClient", "is_pending"]
