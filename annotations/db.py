"""Review state as tables: users, sessions, assignments, decisions and the append-only event log.

SQLite in the data directory by default (WAL, so readers never wait for a writer); any SQLAlchemy URL
works for a team (``postgresql+psycopg://...``). ``decisions`` holds the current state of each reviewed
tile with a ``revision`` counter used for optimistic locking; ``events`` records every change (who, when,
before -> after) and is never updated or deleted (SQLite and PostgreSQL enforce it with triggers).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

SCHEMA_VERSION = 2
DEFAULT_DB_NAME = "review.sqlite"
REVIEW_STATUSES = ("accepted", "rejected", "fixed")
ROLES = ("annotator", "lead")
PHRASE_STATUSES = ("accepted", "rejected", "fixed")

metadata = sa.MetaData()

meta = sa.Table(
    "review_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.String(512), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # "annotator" or "lead" (bulk accept, user management, reports); added in schema 2.
    sa.Column("role", sa.String(16), nullable=False, server_default="annotator"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    # Only a hash of the cookie value is stored, so a leaked database does not leak live sessions.
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_name", sa.String(64), sa.ForeignKey("users.name"), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

assignments = sa.Table(
    "assignments",
    metadata,
    sa.Column("tile_id", sa.String(255), primary_key=True),
    sa.Column("annotator", sa.String(64), nullable=False, index=True),
    sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("tile_id", sa.String(255), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reviewer", sa.String(64), nullable=False),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    # The fixed sample (null unless status == "fixed"); mask_refs maps each fixed phrase to the index
    # of the original mask it uses, so a fix can be re-edited against the original masks.
    sa.Column("gcg_caption", sa.Text, nullable=True),
    sa.Column("caption", sa.Text, nullable=True),
    sa.Column("phrases", sa.JSON, nullable=True),
    sa.Column("masks", sa.JSON, nullable=True),
    sa.Column("mask_refs", sa.JSON, nullable=True),
    # Masks an annotator drew or corrected (COCO RLE); a mask_refs entry >= the sample's number of
    # original masks points into this list (added in schema 2).
    sa.Column("new_masks", sa.JSON, nullable=True),
)

# One row per grounded phrase an annotator decided on its own (accept / reject / fix its words). When
# every phrase of a tile is decided, the tile gets its decision from them (see decisions.py).
phrase_decisions = sa.Table(
    "phrase_decisions",
    metadata,
    sa.Column("tile_id", sa.String(255), primary_key=True),
    sa.Column("phrase", sa.Integer, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=True),  # the fixed words (status "fixed")
    sa.Column("reviewer", sa.String(64), nullable=False),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
)

# Where each sample lives in samples.parquet and what the queue needs to know about it; built by
# index.py by streaming the table, so the app never holds every sample in memory. ``position`` is the
# review order (null: not queued).
sample_index = sa.Table(
    "sample_index",
    metadata,
    sa.Column("tile_id", sa.String(255), primary_key=True),
    sa.Column("row_group", sa.Integer, nullable=False),
    sa.Column("row_index", sa.Integer, nullable=False),
    sa.Column("tile_path", sa.Text, nullable=True),
    sa.Column("marks_path", sa.Text, nullable=True),
    sa.Column("max_severity", sa.String(16), nullable=False),
    sa.Column("severity_rank", sa.Integer, nullable=False),
    sa.Column("n_flags", sa.Integer, nullable=False),
    # describe's needs-review score (pipeline.validate.review_score; null in files written before it).
    sa.Column("review_score", sa.Float, nullable=True),
    sa.Column("n_phrases", sa.Integer, nullable=False),
    sa.Column("flag_codes", sa.Text, nullable=False),  # "|code|code|" (LIKE '%|code|%' finds one)
    sa.Column("categories", sa.Text, nullable=False),  # "|ship|harbor|" (the phrases' categories)
    sa.Column("spot_key", sa.String(64), nullable=False),
    sa.Column("spot_check", sa.Boolean, nullable=False, default=False),
    sa.Column("position", sa.Integer, nullable=True, unique=True),
    # Reviewed by two annotators blind (two-reviewer mode), see double.py.
    sa.Column("double_review", sa.Boolean, nullable=False, default=False),
)

# Two-reviewer mode: each annotator's own verdict on a double-review tile (blind to the other's). The
# tile's decision is made when two agree, or by a lead when they disagree (``adjudications``).
reviews = sa.Table(
    "reviews",
    metadata,
    sa.Column("tile_id", sa.String(255), primary_key=True),
    sa.Column("annotator", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("fixed", sa.JSON, nullable=True),  # {gcg_caption, mask_refs, new_masks} of a fix
)

adjudications = sa.Table(
    "adjudications",
    metadata,
    sa.Column("tile_id", sa.String(255), primary_key=True),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
)

# The row groups of instances.parquet holding each tile's instances (the priors panel).
instance_groups = sa.Table(
    "instance_groups",
    metadata,
    sa.Column("tile_id", sa.String(255), primary_key=True),
    sa.Column("row_group", sa.Integer, primary_key=True),
)

# Flag codes and phrase categories of the dataset with their sample counts (the queue filter's choices).
index_facets = sa.Table(
    "index_facets",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),  # "flag_code" | "category"
    sa.Column("value", sa.String(255), primary_key=True),
    sa.Column("samples", sa.Integer, nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(64), nullable=False, index=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("tile_id", sa.String(255), nullable=True, index=True),
    sa.Column("base_revision", sa.Integer, nullable=True),
    sa.Column("revision", sa.Integer, nullable=True),
    sa.Column("before", sa.JSON, nullable=True),
    sa.Column("after", sa.JSON, nullable=True),
)

_POSTGRES_APPEND_ONLY = (
    "CREATE OR REPLACE FUNCTION review_events_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'events is append-only'; END $$",
    "CREATE OR REPLACE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events "
    "FOR EACH ROW EXECUTE FUNCTION review_events_append_only()",
    "CREATE OR REPLACE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
    "FOR EACH STATEMENT EXECUTE FUNCTION review_events_append_only()",
)
_SQLITE_APPEND_ONLY = (
    "CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events "
    "BEGIN SELECT RAISE(ABORT, 'events is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events "
    "BEGIN SELECT RAISE(ABORT, 'events is append-only'); END",
)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """Read a stored timestamp as aware UTC (SQLite hands timestamps back naive)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def default_db_url(data_dir: Path | str) -> str:
    """``sqlite:///DIR/review.sqlite``: the default review database of a data directory."""
    return f"sqlite:///{(Path(data_dir).resolve() / DEFAULT_DB_NAME).as_posix()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def open_engine(db_url: str) -> Engine:
    """Connect to ``db_url``, creating the review tables when they are missing.

    Raises:
        RuntimeError: the database was created by a newer, incompatible schema version.
    """
    engine = sa.create_engine(db_url)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    metadata.create_all(engine)
    with engine.begin() as conn:
        indexed = {c["name"] for c in sa.inspect(conn).get_columns("sample_index")}
        if not {"double_review", "review_score"} <= indexed:
            sample_index.drop(conn)  # an index from an earlier build: it is only a cache
            sample_index.create(conn)
            conn.execute(sa.delete(meta).where(meta.c.key == "sample_index"))
        if "new_masks" not in {c["name"] for c in sa.inspect(conn).get_columns("decisions")}:  # schema 1
            json_type = "JSONB" if engine.dialect.name == "postgresql" else "JSON"
            conn.exec_driver_sql(f"ALTER TABLE decisions ADD COLUMN new_masks {json_type}")
        if "role" not in {c["name"] for c in sa.inspect(conn).get_columns("users")}:  # schema 1
            conn.exec_driver_sql("ALTER TABLE users ADD COLUMN role VARCHAR(16) NOT NULL DEFAULT 'annotator'")
        append_only = {"sqlite": _SQLITE_APPEND_ONLY, "postgresql": _POSTGRES_APPEND_ONLY}
        for statement in append_only.get(engine.dialect.name, ()):
            conn.exec_driver_sql(statement)
        found = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        if found is None:
            conn.execute(sa.insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
        elif int(found) > SCHEMA_VERSION:
            raise RuntimeError(f"review database schema {found} is newer than this app ({SCHEMA_VERSION})")
        elif int(found) < SCHEMA_VERSION:
            conn.execute(
                sa.update(meta).where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION))
            )
    return engine


def log_event(
    conn: sa.Connection,
    *,
    actor: str,
    action: str,
    tile_id: str | None = None,
    base_revision: int | None = None,
    revision: int | None = None,
    before: Any = None,
    after: Any = None,
) -> None:
    """Append one event (inside the caller's transaction)."""
    conn.execute(
        sa.insert(events).values(
            at=utcnow(),
            actor=actor,
            action=action,
            tile_id=tile_id,
            base_revision=base_revision,
            revision=revision,
            before=before,
            after=after,
        )
    )


def decision_dict(row: sa.Row[Any] | None) -> dict[str, Any] | None:
    """A decisions row as a JSON-ready dict (``decided_at`` as ISO 8601 UTC)."""
    if row is None:
        return None
    record = dict(row._mapping)
    decided_at = as_utc(record["decided_at"])
    record["decided_at"] = decided_at.isoformat() if decided_at else None
    return record
