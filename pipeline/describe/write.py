"""Outputs: ``samples.parquet`` and ``lmm_calls.parquet`` written batch by batch, the report and summary."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .. import fidelity
from ..lmm.pricing import RunTotals, load_price_table
from ..lmm.records import CALLS_SCHEMA, results_to_table
from ..lmm.types import OFFLINE_MODEL, LMMResult
from ..prompts import load_prompt_set
from ..tables import SAMPLES_SCHEMA
from .config import DescribeConfig


@dataclass
class DescribeSummary:
    data_dir: str
    tiles: int
    samples: int
    phrases: int
    flagged: int
    flags_by_code: dict[str, int]
    lmm: dict[str, Any]
    model: str
    prompt_version: str
    base_url: str
    policy: str = "geopixeld"
    fidelity: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        lines = [
            f"describe → {self.data_dir}/samples.parquet",
            f"  tiles {self.tiles} → samples {self.samples}, grounded phrases {self.phrases} (policy {self.policy})",
            f"  flagged samples {self.flagged}"
            + (": " + ", ".join(f"{k} {v}" for k, v in self.flags_by_code.items()) if self.flags_by_code else ""),
            f"  model {self.model} at {self.base_url}, prompts {self.prompt_version}",
            "  " + RunTotals(**self.lmm).summary().replace("\n", "\n  ") if self.lmm else "",
            fidelity.report_text(self.fidelity) if self.fidelity else "",
        ]
        return "\n".join(line for line in lines if line)



class _ParquetSink:
    """Rows appended batch by batch to ``path`` through a temporary file, renamed into place on close."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema = path, schema
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.writer = pq.ParquetWriter(self.tmp, schema)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.writer.write_table(table.cast(self.schema) if table.schema != self.schema else table)
            self.rows += table.num_rows

    def close(self) -> None:
        self.writer.close()
        self.tmp.replace(self.path)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        self.tmp.unlink(missing_ok=True)



class DescribeWriter:
    """Writes ``samples.parquet`` and ``lmm_calls.parquet`` as batches complete, then the report; keeps only
    running counts in memory."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data = Path(data_dir)
        self.samples = _ParquetSink(self.data / "samples.parquet", SAMPLES_SCHEMA)
        self.calls = _ParquetSink(self.data / "lmm_calls.parquet", CALLS_SCHEMA)
        self.tiles = self.phrases = self.flagged = self.calls_seen = self.failed = 0
        self.flags_by_code: Counter[str] = Counter()

    def add(self, rows: list[dict[str, Any]], results: Iterable[LMMResult]) -> None:
        results = list(results)
        self.samples.write(pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA))
        self.calls.write(results_to_table(results))
        self.tiles += len(rows)
        self.phrases += sum(len(r["phrases"]) for r in rows)
        self.flagged += sum(1 for r in rows if r["max_severity"] in ("warning", "error"))
        self.flags_by_code.update(f["code"] for r in rows for f in r["flags"])
        self.calls_seen += len(results)
        self.failed += sum(not x.ok for x in results)

    def abort(self) -> None:
        self.samples.abort()
        self.calls.abort()

    def finish(self, config: DescribeConfig, endpoint: str) -> DescribeSummary:
        self.samples.close()
        self.calls.close()
        totals = RunTotals.from_results(iter_calls(self.calls.path), load_price_table(config.prices_file))
        prompts = load_prompt_set(config.prompts)
        report = fidelity.measure(self.data)
        summary = DescribeSummary(
            data_dir=str(self.data),
            tiles=self.tiles,
            samples=self.tiles,
            phrases=self.phrases,
            flagged=self.flagged,
            flags_by_code=dict(sorted(self.flags_by_code.items())),
            lmm=asdict(totals),
            model=config.model or OFFLINE_MODEL,
            prompt_version=prompts.version,
            base_url=endpoint,
            policy=config.policy,
            fidelity=report,
        )
        tmp = self.data / ".describe_report.json.tmp"
        tmp.write_text(
            json.dumps({"summary": asdict(summary), "config": config.model_dump(mode="json")}, indent=1, default=str)
        )
        tmp.replace(self.data / "describe_report.json")
        return summary



def iter_calls(path: Path, batch_rows: int = 2048) -> Iterator[LMMResult]:
    """The calls of an ``lmm_calls.parquet`` file as results, read batch by batch."""
    names = [f.name for f in fields(LMMResult)]
    pf = pq.ParquetFile(path)
    cols = [n for n in names if n in pf.schema_arrow.names]
    for batch in pf.iter_batches(batch_size=batch_rows, columns=cols):
        for row in batch.to_pylist():
            yield LMMResult(**row)



def write_describe_outputs(
    data_dir: str | Path, rows: list[dict[str, Any]], results: list[LMMResult], config: DescribeConfig, endpoint: str
) -> DescribeSummary:
    """Write ``samples.parquet``, ``lmm_calls.parquet`` and ``describe_report.json``; return the summary."""
    writer = DescribeWriter(data_dir)
    writer.add(rows, results)
    return writer.finish(config, endpoint)



def merge_describe_parts(
    data_dir: str | Path, parts: Iterable[tuple[str | Path, str | Path]], config: DescribeConfig, endpoint: str
) -> DescribeSummary:
    """The outputs from per-batch part files ``(samples part, calls part)``, streamed part by part (what a
    flow's batches wrote)."""
    writer = DescribeWriter(data_dir)
    try:
        for samples_path, calls_path in parts:
            try:
                rows = pq.read_table(samples_path, schema=SAMPLES_SCHEMA).to_pylist()
                calls = list(iter_calls(Path(calls_path)))
            except (OSError, pa.ArrowException) as exc:
                raise ValueError(f"{samples_path}: describe part file unreadable ({exc}); rerun describe") from None
            writer.add(rows, calls)
    except BaseException:
        writer.abort()
        raise
    return writer.finish(config, endpoint)

