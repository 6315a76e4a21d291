"""How close a described dataset is to GeoPixelD's shape, measured beside GeoPixelD's published figures.

Read from ``samples.parquet`` and ``lmm_calls.parquet`` column subsets, batch by batch (bounded memory):

* characters per caption (plain text, markup removed; mean and median);
* grounded phrases (= masks, one per ``[SEG]``) per tile, and objects grounded per tile;
* described-alone : group phrases (instance : group ratio);
* LMM calls per tile, by tier;
* share of eligible instances (every instance prepare kept) grounded by some phrase.

GeoPixelD's figures come from the GeoPixel paper (arXiv 2501.13925): train split 16,795 tiles with 16,795
holistic, 36,793 instance and 17,023 group descriptions, 600,817 objects and 53,816 grounded phrases; mean
caption 740 characters (train) and 647 (test). The paper does not say how many objects are grounded.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

#: GeoPixelD's published per-tile figures (train split unless said otherwise).
GEOPIXELD = {
    "caption_chars_mean": 740.0,  # test split: 647
    "phrases_per_tile": 53_816 / 16_795,
    "objects_per_tile": 600_817 / 18_722,  # all 18.7k tiles (train + test)
    "instance_per_tile": 36_793 / 16_795,
    "group_per_tile": 17_023 / 16_795,
    "instance_group_ratio": 36_793 / 17_023,
    "calls_per_tile": (16_795 + 36_793 + 17_023) / 16_795,
}


def measure(data_dir: str | Path, batch_rows: int = 1024) -> dict[str, Any]:
    """The fidelity figures of ``data_dir`` (see the module docstring); ``{}`` without ``samples.parquet``."""
    data = Path(data_dir)
    path = data / "samples.parquet"
    if not path.exists():
        return {}
    tiles = 0
    chars: list[int] = []  # one int per tile: small even at GeoPixelD size (18.7k tiles)
    phrases = objects = eligible = 0
    kinds: Counter[str] = Counter()
    for batch in pq.ParquetFile(path).iter_batches(
        batch_size=batch_rows, columns=["caption", "phrases", "n_instances", "n_grounded_instances"]
    ):
        for row in batch.to_pylist():
            tiles += 1
            chars.append(len(row["caption"] or ""))
            phrases += len(row["phrases"])
            kinds.update(p["kind"] for p in row["phrases"])
            objects += int(row["n_grounded_instances"] or 0)
            eligible += int(row["n_instances"] or 0)
    calls: Counter[str] = Counter()
    calls_path = data / "lmm_calls.parquet"
    if calls_path.exists():
        for batch in pq.ParquetFile(calls_path).iter_batches(batch_size=8192, columns=["tier"]):
            calls.update(batch.column("tier").to_pylist())
    n = max(tiles, 1)
    return {
        "tiles": tiles,
        "caption_chars_mean": statistics.fmean(chars) if chars else 0.0,
        "caption_chars_median": statistics.median(chars) if chars else 0.0,
        "caption_chars_max": max(chars) if chars else 0,
        "phrases_per_tile": phrases / n,
        "objects_per_tile": objects / n,
        "instance_per_tile": kinds["instance"] / n,
        "group_per_tile": kinds["cluster"] / n,
        "instance_group_ratio": kinds["instance"] / kinds["cluster"] if kinds["cluster"] else None,
        "calls_per_tile": sum(calls.values()) / n,
        "calls_by_tier": {k: v / n for k, v in sorted(calls.items())},
        "grounded_share": objects / eligible if eligible else None,
        "eligible_instances": eligible,
    }


#: The figures shown wherever fidelity is reported (describe's summary, the run report, ``make bench``):
#: ``(label, key, format)``.
ROWS = (
    ("caption characters (mean)", "caption_chars_mean", "{:.0f}"),
    ("grounded phrases per tile", "phrases_per_tile", "{:.2f}"),
    ("objects grounded per tile", "objects_per_tile", "{:.1f}"),
    ("instance phrases per tile", "instance_per_tile", "{:.2f}"),
    ("group phrases per tile", "group_per_tile", "{:.2f}"),
    ("instance : group phrases", "instance_group_ratio", "{:.2f}"),
    ("LMM calls per tile", "calls_per_tile", "{:.2f}"),
    ("eligible instances grounded", "grounded_share", "{:.1%}"),
)


def formatted(value: float | None, spec: str) -> str:
    """One figure for display; ``n/a`` when it cannot be computed."""
    return "n/a" if value is None else spec.format(value)


def rows(*reports: dict[str, Any]) -> list[list[str]]:
    """``[label, figure of each report..., GeoPixelD's]`` for every row of :data:`ROWS`."""
    return [[label, *(formatted(r.get(key), spec) for r in reports), formatted(GEOPIXELD.get(key), spec)]
            for label, key, spec in ROWS]


def report_text(report: dict[str, Any]) -> str:
    """The figures as a small table beside GeoPixelD's."""
    if not report:
        return ""
    lines = [f"  fidelity over {report['tiles']} tiles          ours    GeoPixelD"]
    lines += [f"    {label:<30s} {ours:>8s}   {ref:>8s}" for label, ours, ref in rows(report)]
    tiers = ", ".join(f"{k} {v:.2f}" for k, v in report.get("calls_by_tier", {}).items())
    if tiers:
        lines.append(f"    calls per tile by tier: {tiers}")
    return "\n".join(lines)


__all__ = ["GEOPIXELD", "ROWS", "formatted", "measure", "report_text", "rows"]
