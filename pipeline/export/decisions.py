"""Review decisions as the exporter reads them, from a Parquet file or the review database.

The review app (``annotations/``) writes decisions into a database (SQLite ``DATA/review.sqlite`` by
default, any SQLAlchemy URL for a team) and can dump them as a Parquet file
(``geopixeld review export-decisions``). The library reads both itself, so exporting never imports the
review app:

* :func:`iter_db_decisions` streams the ``decisions`` table of a database (read only: nothing is
  created or migrated), one dict per reviewed tile with the columns of ``DECISIONS_COLUMNS``;
* :func:`iter_file_decisions` streams a decisions Parquet file in record batches;
* :class:`ReviewDecisions` is what :func:`pipeline.export.export` asks per sample: the status, reviewer
  and time of every reviewed tile stay in memory (a few dozen bytes each); the fixed caption, phrases
  and masks of a ``fixed`` tile are fetched when the exporter reaches that tile, so memory does not grow
  with the size of the fixes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import sqlalchemy as sa

#: The database file the review app keeps in a data directory.
DEFAULT_DB_NAME = "review.sqlite"
#: Keys of one decision (the columns of ``geopixeld review export-decisions``).
DECISIONS_COLUMNS = (
    "tile_id", "review_status", "reviewer", "decided_at", "gcg_caption", "caption", "phrases", "masks",
    "revision", "note",
)
#: The fixed sample's fields; set only for ``fixed`` decisions.
FIXED_FIELDS = ("gcg_caption", "caption", "phrases", "masks")
#: Rows fetched from the database per round trip.
DB_BATCH = 1000

# The review app's ``decisions`` table, as far as the exporter reads it (read only, never created here).
_DECISIONS = sa.table(
    "decisions",
    sa.column("tile_id", sa.String),
    sa.column("status", sa.String),
    sa.column("reviewer", sa.String),
    sa.column("decided_at", sa.DateTime(timezone=True)),
    sa.column("revision", sa.Integer),
    sa.column("note", sa.Text),
    sa.column("gcg_caption", sa.Text),
    sa.column("caption", sa.Text),
    sa.column("phrases", sa.JSON),
    sa.column("masks", sa.JSON),
)
_INDEX_COLUMNS = ("tile_id", "status", "reviewer", "decided_at", "revision", "note")


class DecisionsError(ValueError):
    """A decisions source that cannot be read; the message names it and the problem."""


def default_db_url(data_dir: str | Path) -> str:
    """``sqlite:///DIR/review.sqlite``: the review app's default database of a data directory."""
    return f"sqlite:///{(Path(data_dir).resolve() / DEFAULT_DB_NAME).as_posix()}"


def as_utc(value: datetime | None) -> datetime | None:
    """A stored timestamp as aware UTC (SQLite hands timestamps back naive)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _record(row: Any, with_fixed: bool = True) -> dict[str, Any]:
    """A ``decisions`` row as a dict keyed by ``DECISIONS_COLUMNS`` (fixed fields only for ``fixed``)."""
    m = row._mapping
    fixed = with_fixed and m["status"] == "fixed"
    return {
        "tile_id": m["tile_id"],
        "review_status": m["status"],
        "reviewer": m["reviewer"],
        "decided_at": as_utc(m["decided_at"]),
        **{k: (m[k] if fixed else None) for k in FIXED_FIELDS},
        "revision": m["revision"],
        "note": m["note"],
    }


def _open(db: str | sa.Engine) -> tuple[sa.Engine, bool]:
    if isinstance(db, sa.Engine):
        return db, False
    try:
        engine = sa.create_engine(db)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise DecisionsError(f"review database {db!r}: cannot open ({exc})") from exc
    return engine, True


def _where(db: str | sa.Engine) -> str:
    return db if isinstance(db, str) else db.url.render_as_string(hide_password=True)


def iter_db_decisions(db: str | sa.Engine, *, with_fixed: bool = True) -> Iterator[dict[str, Any]]:
    """Every decision in the review database ``db`` (an SQLAlchemy URL or engine), streamed by tile id.

    Args:
        db: the database; an engine passed in is not disposed.
        with_fixed: also read the fixed caption, phrases and masks (``False``: those keys are ``None``).

    Raises:
        DecisionsError: the database cannot be opened or has no ``decisions`` table.
    """
    engine, owned = _open(db)
    columns = [_DECISIONS.c[c] for c in (_INDEX_COLUMNS + (FIXED_FIELDS if with_fixed else ()))]
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("decisions"):
                raise DecisionsError(f"review database {_where(db)} has no decisions table")
            result = conn.execution_options(yield_per=DB_BATCH).execute(
                sa.select(*columns).order_by(_DECISIONS.c.tile_id)
            )
            for row in result:
                yield _record(row, with_fixed)
    except sa.exc.SQLAlchemyError as exc:
        raise DecisionsError(f"review database {_where(db)}: {exc}") from exc
    finally:
        if owned:
            engine.dispose()


def _open_decisions_file(p: Path) -> tuple[pq.ParquetFile, set[str]]:
    """A decisions Parquet file and its column names; an error naming the file when it is unreadable or
    lacks ``tile_id``/``review_status``."""
    try:
        handle = pq.ParquetFile(p)
    except (OSError, ValueError) as exc:
        raise DecisionsError(f"{p}: not a readable decisions Parquet file ({exc})") from exc
    names = set(handle.schema_arrow.names)
    missing = {"tile_id", "review_status"} - names
    if missing:
        raise DecisionsError(f"{p}: decisions file lacks column(s) {', '.join(sorted(missing))}")
    return handle, names


def iter_file_decisions(path: str | Path, batch_size: int = 256) -> Iterator[dict[str, Any]]:
    """Decisions from a Parquet file (``geopixeld review export-decisions``), streamed in batches.

    Rows without ``tile_id``/``review_status`` columns are an error naming the file; missing optional
    columns read as ``None``.
    """
    p = Path(path)
    handle, names = _open_decisions_file(p)
    columns = [c for c in DECISIONS_COLUMNS if c in names]
    for batch in handle.iter_batches(batch_size=batch_size, columns=columns):
        for row in batch.to_pylist():
            yield {c: row.get(c) for c in DECISIONS_COLUMNS}


@dataclass(frozen=True)
class Decision:
    """The review state of one tile (``fixed`` content is fetched separately, see :class:`ReviewDecisions`)."""

    status: str
    reviewer: str | None
    decided_at: str | None  # ISO 8601 UTC


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


class ReviewDecisions:
    """Decisions by tile id, for one export run.

    Holds ``tile_id → Decision`` for reviewed tiles only; :meth:`fixed` returns a fixed tile's
    ``gcg_caption, caption, phrases, masks`` from the source when asked (one query, or one row group of
    the Parquet file, the last one read kept).
    """

    def __init__(self, source: str, db: str | None = None, path: Path | None = None) -> None:
        self.source = source
        self._db = db
        self._path = path
        self._index: dict[str, Decision] = {}
        self._where: dict[str, tuple[int, int]] = {}  # parquet: tile id -> (row group, row)
        self._group: tuple[int, list[dict[str, Any]]] | None = None
        self._engine: sa.Engine | None = None

    @classmethod
    def empty(cls) -> ReviewDecisions:
        """No review: every tile is ``unreviewed``."""
        return cls("none")

    @classmethod
    def from_db(cls, db_url: str) -> ReviewDecisions:
        """Index the decisions of the review database ``db_url`` (fixed content stays in the database)."""
        out = cls(db_url, db=db_url)
        for d in iter_db_decisions(db_url, with_fixed=False):
            out._add(d)
        return out

    @classmethod
    def from_file(cls, path: str | Path) -> ReviewDecisions:
        """Index a decisions Parquet file, remembering where each ``fixed`` row lies."""
        p = Path(path)
        out = cls(str(p), path=p)
        handle, names = _open_decisions_file(p)
        columns = [c for c in ("tile_id", "review_status", "reviewer", "decided_at") if c in names]
        for g in range(handle.num_row_groups):
            rows = handle.read_row_group(g, columns=columns).to_pylist()
            for i, row in enumerate(rows):
                decision = {c: row.get(c) for c in DECISIONS_COLUMNS}
                if out._add(decision) and decision["review_status"] == "fixed":
                    out._where[str(decision["tile_id"])] = (g, i)
        return out

    def _add(self, d: dict[str, Any]) -> bool:
        status = d.get("review_status") or "unreviewed"
        if d.get("tile_id") is None or status == "unreviewed":
            return False
        self._index[str(d["tile_id"])] = Decision(status, d.get("reviewer"), _iso(d.get("decided_at")))
        return True

    def __len__(self) -> int:
        return len(self._index)

    def get(self, tile_id: str) -> Decision | None:
        """The decision on ``tile_id``, ``None`` when unreviewed."""
        return self._index.get(tile_id)

    def fixed(self, tile_id: str) -> dict[str, Any] | None:
        """``gcg_caption, caption, phrases, masks`` of a ``fixed`` tile; ``None`` if it has no fixed caption."""
        d = self._index.get(tile_id)
        if d is None or d.status != "fixed":
            return None
        if self._db is not None:
            if self._engine is None:  # one engine for the export run, see close()
                self._engine = _open(self._db)[0]
            with self._engine.connect() as conn:
                row = conn.execute(
                    sa.select(*(_DECISIONS.c[c] for c in (*_INDEX_COLUMNS, *FIXED_FIELDS))).where(
                        _DECISIONS.c.tile_id == tile_id
                    )
                ).first()
            record = _record(row) if row is not None else None
        else:
            record = self._file_row(tile_id)
        if record is None or record.get("gcg_caption") is None:
            return None
        return {k: record[k] for k in FIXED_FIELDS}

    def close(self) -> None:
        """Release the database connection pool (if one was opened) and the cached row group."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self._group = None

    def _file_row(self, tile_id: str) -> dict[str, Any] | None:
        where = self._where.get(tile_id)
        if where is None or self._path is None:
            return None
        group, row = where
        if self._group is None or self._group[0] != group:
            handle = pq.ParquetFile(self._path)
            names = set(handle.schema_arrow.names)
            columns = [c for c in FIXED_FIELDS if c in names]
            self._group = (group, handle.read_row_group(group, columns=columns).to_pylist())
        values = self._group[1][row]
        return {k: values.get(k) for k in FIXED_FIELDS}


def open_decisions(
    data_dir: str | Path, decisions: str | Path | None = None, db_url: str | None = None
) -> ReviewDecisions:
    """The decisions an export applies: ``decisions`` (Parquet) if given, else ``db_url``, else
    ``DATA/review.sqlite`` when it exists, else none (every sample ``unreviewed``).

    Raises:
        DecisionsError: both a file and a database were given, or the one given cannot be read.
    """
    if decisions and db_url:
        raise DecisionsError("give review decisions either as a Parquet file or as a database URL, not both")
    if decisions:
        if not Path(decisions).is_file():
            raise DecisionsError(f"{decisions}: decisions file not found")
        return ReviewDecisions.from_file(decisions)
    if db_url:
        return ReviewDecisions.from_db(db_url)
    if (Path(data_dir) / DEFAULT_DB_NAME).is_file():
        return ReviewDecisions.from_db(default_db_url(data_dir))
    return ReviewDecisions.empty()


__all__ = [
    "DECISIONS_COLUMNS", "DEFAULT_DB_NAME", "Decision", "DecisionsError", "ReviewDecisions", "as_utc",
    "default_db_url", "iter_db_decisions", "iter_file_decisions", "open_decisions",
]
