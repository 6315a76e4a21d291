"""Review results as tables: one row per tile (``load_decisions``) and the event log (``load_events``).

``load_decisions`` is what the dataset exporter calls: every tile of ``samples.parquet`` appears once,
``unreviewed`` when nobody decided on it, and the fixed caption, phrases and masks are filled only for
``fixed`` tiles. Tiles decided in the database but missing from ``samples.parquet`` are kept too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from pipeline.export.decisions import iter_db_decisions

from .db import DEFAULT_DB_NAME, as_utc, default_db_url, events, open_engine
from .samples import MASK_TYPE, PHRASE_TYPE

TIMESTAMP = pa.timestamp("us", tz="UTC")

DECISIONS_SCHEMA = pa.schema(
    [
        ("tile_id", pa.string()),
        ("review_status", pa.string()),
        ("reviewer", pa.string()),
        ("decided_at", TIMESTAMP),
        ("gcg_caption", pa.string()),
        ("caption", pa.string()),
        ("phrases", pa.list_(PHRASE_TYPE)),
        ("masks", pa.list_(MASK_TYPE)),
        ("revision", pa.int64()),
        ("note", pa.string()),
    ]
)

EVENTS_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("at", TIMESTAMP),
        ("actor", pa.string()),
        ("action", pa.string()),
        ("tile_id", pa.string()),
        ("base_revision", pa.int64()),
        ("revision", pa.int64()),
        ("before", pa.string()),  # JSON
        ("after", pa.string()),  # JSON
    ]
)


def _sample_tile_ids(data_dir: Path) -> list[str]:
    path = data_dir / "samples.parquet"
    if not path.is_file():
        return []
    return [str(t) for t in pq.read_table(path, columns=["tile_id"]).column("tile_id").to_pylist()]


def load_decisions(data_dir: Path | str, db_url: str | None = None) -> pa.Table:
    """One row per tile: ``tile_id, review_status, reviewer, decided_at, gcg_caption, caption, phrases,
    masks, revision, note`` (see ``DECISIONS_SCHEMA``).

    Args:
        data_dir: the data directory (``samples.parquet``; the default database lives there).
        db_url: SQLAlchemy URL of the review database (default ``sqlite:///DIR/review.sqlite``).
    """
    data_dir = Path(data_dir)
    rows: dict[str, dict[str, Any]] = {}
    if db_url is not None or (data_dir / DEFAULT_DB_NAME).is_file():  # no review yet: all unreviewed
        engine = open_engine(db_url or default_db_url(data_dir))
        try:
            # The library's reader (pipeline.export.decisions), the same one `geopixeld export` uses.
            rows = {d["tile_id"]: d for d in iter_db_decisions(engine)}
        finally:
            engine.dispose()
    tile_ids = _sample_tile_ids(data_dir)
    known = set(tile_ids)
    tile_ids += sorted(t for t in rows if t not in known)
    records = [rows.get(t) or {"tile_id": t, "review_status": "unreviewed", "revision": 0} for t in tile_ids]
    return pa.Table.from_pylist(records, schema=DECISIONS_SCHEMA)


def export_decisions(data_dir: Path | str, out: Path | str, db_url: str | None = None) -> pa.Table:
    """Write ``load_decisions`` to the Parquet file ``out``; returns the table."""
    table = load_decisions(data_dir, db_url)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    return table


def load_events(data_dir: Path | str, db_url: str | None = None) -> pa.Table:
    """The whole append-only event log, oldest first (``before``/``after`` as JSON strings)."""
    if db_url is None and not (Path(data_dir) / DEFAULT_DB_NAME).is_file():
        return EVENTS_SCHEMA.empty_table()
    engine = open_engine(db_url or default_db_url(data_dir))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(events).order_by(events.c.id)).all()
    finally:
        engine.dispose()
    records = [
        {
            **row._mapping,
            "at": as_utc(row.at),
            "before": None if row.before is None else json.dumps(row.before, sort_keys=True),
            "after": None if row.after is None else json.dumps(row.after, sort_keys=True),
        }
        for row in rows
    ]
    return pa.Table.from_pylist(records, schema=EVENTS_SCHEMA)


def export_events(data_dir: Path | str, out: Path | str, db_url: str | None = None) -> pa.Table:
    """Write the event log to ``out``: Parquet, or JSON Lines when ``out`` ends in ``.jsonl``."""
    table = load_events(data_dir, db_url)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".jsonl":
        with out.open("w", encoding="utf-8") as handle:
            for record in table.to_pylist():
                at = record["at"]
                record["at"] = at.isoformat() if at else None
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        pq.write_table(table, out)
    return table
