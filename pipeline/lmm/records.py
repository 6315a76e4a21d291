"""Per-call LMM records as an Arrow table and as ``lmm_calls.parquet``.

One row per :class:`~pipeline.lmm.types.LMMResult`: what was asked (key, ref, tier, prompt version), how it
went (status, attempts, latency, error, finish reason, whether it came from the cache), what it cost
(input/output tokens, and whether through the Batch API) and what came back (answer text and the raw response body, for auditing). No request
headers are kept, so the API key can never reach this file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .types import LMMResult

CALLS_FILENAME = "lmm_calls.parquet"

#: Column order and types of the per-call table.
CALLS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("ref", pa.string(), nullable=False),
        pa.field("tier", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("attempts", pa.int32(), nullable=False),
        pa.field("latency_s", pa.float64(), nullable=False),
        pa.field("input_tokens", pa.int64(), nullable=False),
        pa.field("output_tokens", pa.int64(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("model", pa.string(), nullable=False),
        pa.field("from_cache", pa.bool_(), nullable=False),
        pa.field("prompt_version", pa.string(), nullable=False),
        pa.field("finish_reason", pa.string()),
        pa.field("text", pa.string()),
        pa.field("batch", pa.bool_(), nullable=False),
    ]
)


def results_to_table(results: Iterable[LMMResult]) -> pa.Table:
    """The per-call table (schema :data:`CALLS_SCHEMA`) of ``results``, in their order."""
    rows = list(results)
    columns = {name: [getattr(r, name) for r in rows] for name in CALLS_SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=CALLS_SCHEMA)


def write_calls_parquet(results: Iterable[LMMResult], out: str | Path) -> Path:
    """Write the per-call table to ``out`` atomically; returns the path.

    ``out`` is a ``.parquet`` file path, or a folder that gets ``lmm_calls.parquet``.
    """
    path = Path(out)
    if path.suffix != ".parquet":
        path = path / CALLS_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    table = results_to_table(results)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_calls_parquet(path: str | Path) -> pa.Table:
    """Read a per-call table back (a folder means its ``lmm_calls.parquet``)."""
    path = Path(path)
    return pq.read_table(path / CALLS_FILENAME if path.is_dir() else path)


__all__ = ["CALLS_FILENAME", "CALLS_SCHEMA", "read_calls_parquet", "results_to_table", "write_calls_parquet"]
