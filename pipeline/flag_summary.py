"""The validate stage: every prepared tile has a sample, and the flags counted by code and severity.

Flags are for review, never a reason to drop a sample or fail a run (see :mod:`pipeline.validate`). Reads
column subsets batch by batch (bounded memory); the set of tile ids is the one thing held (a few MB at
GeoPixelD size).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq


class MissingSamplesError(ValueError):
    """Prepared tiles without a sample: describe did not finish (rerun it)."""


def summarize(data_dir: str | Path, batch_rows: int = 4096) -> dict[str, Any]:
    """``{"samples", "samples_by_severity", "flags": [{code, severity, count}]}`` of ``samples.parquet``.

    Raises:
        FileNotFoundError: ``tiles.parquet`` or ``samples.parquet`` is missing (names the file).
        MissingSamplesError: some prepared tile has no sample.
    """
    data = Path(data_dir)
    for name in ("tiles.parquet", "samples.parquet"):
        if not (data / name).exists():
            raise FileNotFoundError(f"{data / name}: missing — run prepare and describe first")
    tiles: set[str] = set()
    for batch in pq.ParquetFile(data / "tiles.parquet").iter_batches(batch_size=batch_rows, columns=["tile_id"]):
        tiles.update(batch.column("tile_id").to_pylist())
    by_code: Counter[str] = Counter()
    by_severity: Counter[str] = Counter()
    severity: dict[str, str] = {}
    samples = 0
    for batch in pq.ParquetFile(data / "samples.parquet").iter_batches(
        batch_size=batch_rows, columns=["tile_id", "flags", "max_severity"]
    ):
        for s in batch.to_pylist():
            samples += 1
            tiles.discard(s["tile_id"])
            by_severity[s["max_severity"]] += 1
            for f in s["flags"]:
                by_code[f["code"]] += 1
                severity[f["code"]] = f["severity"]
    if tiles:
        raise MissingSamplesError(f"{len(tiles)} prepared tiles have no sample, e.g. {sorted(tiles)[:3]}")
    return {
        "samples": samples,
        "samples_by_severity": dict(by_severity),
        "flags": [{"code": c, "severity": severity[c], "count": n} for c, n in by_code.most_common()],
    }


def summary_text(summary: dict[str, Any]) -> str:
    """The summary for the console."""
    sev = ", ".join(f"{k} {v}" for k, v in sorted(summary["samples_by_severity"].items()))
    lines = [f"validate: {summary['samples']} samples, every prepared tile has one; worst flag per sample: {sev}"]
    lines += [f"  {f['code']:28s} {f['severity']:8s} {f['count']}" for f in summary["flags"]]
    return "\n".join(lines)


__all__ = ["MissingSamplesError", "summarize", "summary_text"]
