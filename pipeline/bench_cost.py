"""`make bench` section: LMM tokens and price of describe, one object per call vs grouped, on the samples.

The bundled iSAID samples are prepared once; then, for both selection policies and two price points
(gpt-4o, gpt-4o-mini at the built-in list prices, detail ``auto`` costed as ``high``), the dry run
(:mod:`pipeline.dryrun`) counts calls and tokens with one marked object per instance call (the paper's way)
and with ``--instances-per-call 4``: input tokens per tile, output bound per tile, USD per 1,000 tiles, and
the grouped / per-object ratio of input tokens. The same two modes are then run for real against the
embedded offline describer (policy ``all-instances``, where grouping matters most): calls sent, objects
re-asked singly, and whether the captions come out identical (the offline describer answers a grouped
request with each object's own single answer, so they must).

Run: ``python -m pipeline.bench_cost``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .config import PrepareConfig
from .prepare import prepare

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "data" / "isaid"
GROUPED_K = 4
MODELS = ("gpt-4o", "gpt-4o-mini")


def _estimates(data: Path, policy: str, model: str, k: int, cache: Path) -> dict[str, float]:
    from .describe import DescribeConfig
    from .dryrun import dry_run

    config = DescribeConfig(
        base_url="https://api.openai.com/v1", model=model, policy=policy, instances_per_call=k, cache_dir=str(cache)
    )
    est = dry_run(data, config, progress=False)
    total, tiles = est.total(), max(est.tiles, 1)
    return {
        "calls_per_tile": total.calls / tiles,
        "input_tokens_per_tile": total.input_tokens / tiles,
        "output_tokens_per_tile_max": total.output_tokens / tiles,
        "usd_per_1000_tiles": est.per_1000_tiles().cost_usd,
    }


def _describe(data: Path, k: int) -> dict[str, Any]:
    from .describe import DescribeConfig, describe

    for name in ("samples.parquet", "lmm_calls.parquet"):
        (data / name).unlink(missing_ok=True)
    shutil.rmtree(data / "lmm_cache", ignore_errors=True)
    config = DescribeConfig(policy="all-instances", instances_per_call=k)
    start = time.perf_counter()
    summary = describe(data, config, progress=False)
    seconds = time.perf_counter() - start
    captions = pq.read_table(data / "samples.parquet", columns=["gcg_caption"]).column(0).to_pylist()
    tiers = pq.read_table(data / "lmm_calls.parquet", columns=["tier"]).column(0).to_pylist()
    return {"calls": summary.lmm["sent"], "single_instance_calls": tiers.count("instance"),
            "group_calls": tiers.count("instance_group"), "seconds": seconds, "captions": captions}  # fmt: skip


def run_bench() -> dict[str, Any]:
    """Prepare the samples, estimate both modes at two prices, run both modes offline; print and return."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "isaid"
        prepare([SAMPLES], PrepareConfig(format="isaid"), data, progress=False)
        tiles = pq.read_metadata(data / "tiles.parquet").num_rows
        print(f"LMM cost on the bundled iSAID samples ({tiles} tiles), dry run, K = {GROUPED_K} objects per call")
        print(f"  {'policy':<14}{'model':<13}{'mode':<12}{'calls/tile':>11}{'in tok/tile':>13}"
              f"{'out≤/tile':>11}{'USD/1k tiles':>14}{'in ratio':>10}")  # fmt: skip
        for policy in ("all-instances", "geopixeld"):
            for model in MODELS:
                single = _estimates(data, policy, model, 1, Path(tmp) / "nocache")
                grouped = _estimates(data, policy, model, GROUPED_K, Path(tmp) / "nocache")
                ratio = grouped["input_tokens_per_tile"] / single["input_tokens_per_tile"]
                for mode, r in (("per object", single), (f"grouped {GROUPED_K}", grouped)):
                    print(f"  {policy:<14}{model:<13}{mode:<12}{r['calls_per_tile']:>11.1f}"
                          f"{r['input_tokens_per_tile']:>13,.0f}{r['output_tokens_per_tile_max']:>11,.0f}"
                          f"{r['usd_per_1000_tiles']:>14,.2f}"
                          + (f"{ratio:>10.3f}" if mode != "per object" else ""))  # fmt: skip
                results[f"{policy}/{model}"] = {"per_object": single, "grouped": grouped, "input_ratio": ratio}
        one = _describe(data, 1)
        grouped_run = _describe(data, GROUPED_K)
        same = one["captions"] == grouped_run["captions"]
        print(
            f"offline describer, policy all-instances: per object {one['calls']} calls "
            f"({one['seconds']:.1f} s); grouped {grouped_run['calls']} calls ({grouped_run['group_calls']} grouped, "
            f"{grouped_run['single_instance_calls']} single instance calls) ({grouped_run['seconds']:.1f} s); "
            f"captions identical: {'yes' if same else 'NO'}"
        )
        results["offline"] = {
            "calls_per_object": one["calls"], "calls_grouped": grouped_run["calls"],
            "group_calls": grouped_run["group_calls"], "captions_identical": same,
        }  # fmt: skip
    flat = {k: v["input_ratio"] for k, v in results.items() if isinstance(v, dict) and "input_ratio" in v}
    return {**{f"input_ratio {k}": v for k, v in flat.items()}, **results}


if __name__ == "__main__":
    run_bench()
