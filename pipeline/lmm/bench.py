"""LMM client throughput benchmark against a local fixed-latency server.

The offline describer is started in a child process (as a remote server would be: it must not share the
client's interpreter lock) with a fixed 200 ms delay per answer; ``n_requests`` distinct requests go
through :class:`~pipeline.lmm.client.LMMClient` at concurrency 16. With perfect overlap the client would
reach ``concurrency / latency`` = 80 requests/s; the benchmark reports the achieved rate as a
share of that (aim: at least 0.9), the most requests the server saw in flight (must not exceed the
concurrency), and the time of a rerun served entirely from the response cache (which must send nothing).

Run: ``python -m pipeline.lmm.bench``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..prompts import load_prompt_set
from .client import LMMClient
from .server import STATS_PATH, offline_server_process
from .types import LMMRequest, LMMSettings

LATENCY_S = 0.2
CONCURRENCY = 16


def _tile_png(size: int = 256) -> bytes:
    """A small synthetic tile (green field, grey road) as PNG bytes."""
    image = np.full((size, size, 3), (60, 110, 60), dtype=np.uint8)
    image[size // 2 - 8 : size // 2 + 8, :] = (128, 128, 128)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _requests(n: int, offset: int = 0) -> list[LMMRequest]:
    """``n`` distinct cluster requests (counts ``offset + 2`` upwards) on one synthetic tile."""
    png = _tile_png()
    prompt = load_prompt_set().render(
        "cluster", cluster_info="numerous", category_name="small vehicles", pos="left side"
    )
    return [
        LMMRequest(
            tier="cluster",
            prompt=prompt,
            image_png=png,
            facts={
                "tier": "cluster",
                "category": "small vehicles",
                "count": i + 2,
                "position": "left side",
            },
            ref=f"bench-{i}",
        )
        for i in range(offset, offset + n)
    ]


def _server_stats(base_url: str) -> dict[str, int]:
    """The offline server's request counters."""
    root = base_url.removesuffix("/v1")
    with urllib.request.urlopen(root + STATS_PATH, timeout=10) as response:
        return dict(json.load(response))


def run_bench(
    n_requests: int = 160, *, latency_s: float = LATENCY_S, concurrency: int = CONCURRENCY
) -> dict[str, Any]:
    """Measure client throughput and cached-rerun time.

    Args:
        n_requests: distinct requests to send.
        latency_s: the server's fixed delay per answer (s).
        concurrency: the client's concurrency limit.

    Returns:
        A dict with ``n_requests``, ``concurrency``, ``latency_s``, ``wall_s`` (cold run), ``achieved_rps``,
        ``ideal_rps``, ``efficiency`` (achieved / ideal), ``server_max_in_flight``, ``server_requests``
        (requests the server saw in the timed run), ``failed``,
        ``cached_rerun_s``, ``cached_rerun_requests`` (requests the server saw during the rerun) and
        ``cached_rerun_all_cached``, plus ``load_avg_1m`` and ``cpus`` (how busy the machine was).
    """
    requests = _requests(n_requests)
    with (
        offline_server_process(latency_s=latency_s) as (_, base_url),
        tempfile.TemporaryDirectory(prefix="geopixeld-lmm-bench-") as cache_dir,
    ):
        settings = LMMSettings(
            base_url=base_url, concurrency=concurrency, timeout_s=30, cache_dir=Path(cache_dir)
        )
        client = LMMClient(settings)
        # Warm-up (not timed): first-use imports and set-up inside the openai package cost ~0.1 s once per
        # process, which would otherwise be charged to the throughput figure.
        client.describe_all_sync(_requests(concurrency, offset=n_requests), progress=False)
        warm = _server_stats(base_url)["requests"]
        start = time.perf_counter()
        results = client.describe_all_sync(requests, progress=False)
        wall = time.perf_counter() - start
        cold = _server_stats(base_url)

        start = time.perf_counter()
        rerun = client.describe_all_sync(requests, progress=False)
        cached_wall = time.perf_counter() - start
        rerun_requests = _server_stats(base_url)["requests"] - cold["requests"]
        cold_requests = cold["requests"] - warm
    ideal_rps = concurrency / latency_s
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    achieved = n_requests / wall
    return {
        "n_requests": n_requests,
        "concurrency": concurrency,
        "latency_s": latency_s,
        "wall_s": round(wall, 3),
        "ideal_wall_s": round(n_requests / ideal_rps, 3),
        "achieved_rps": round(achieved, 1),
        "ideal_rps": round(ideal_rps, 1),
        "efficiency": round(achieved / ideal_rps, 3),
        "server_max_in_flight": cold["max_in_flight"],
        "server_requests": cold_requests,
        "failed": sum(r.status != "ok" for r in results),
        "cached_rerun_s": round(cached_wall, 3),
        "cached_rerun_requests": rerun_requests,
        "cached_rerun_all_cached": all(r.from_cache for r in rerun),
        # Client and server share this machine's CPUs: on a busy machine the ratio drops, so say how busy.
        "load_avg_1m": round(load, 2),
        "cpus": os.cpu_count(),
    }


def format_table(result: dict[str, Any]) -> str:
    """The benchmark result as a two-column text table."""
    width = max(len(k) for k in result)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{k:<{width}}  {v}" for k, v in result.items()]
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and print its table."""
    result = run_bench()
    print("LMM client: fixed 200 ms server latency, concurrency 16")
    print(format_table(result))


if __name__ == "__main__":
    main()
