"""The sample index: where each sample of ``samples.parquet`` lives, and the review order, in the database.

The app never holds the samples table in memory. At start-up ``ensure_index`` streams the small
columns of ``samples.parquet`` (tile id, severity, flags, phrases, image paths) in batches of
``batch_rows`` rows and writes one ``sample_index`` row per sample: its row group and row within it,
its worst flag severity, flag codes and phrase categories (for queue filters and bulk accept), and its
place in the review queue. ``instances.parquet`` is indexed the same way (which row groups hold a
tile's instances). Opening a sample then reads just its row group (``SampleStore.get``).

The index is rebuilt only when the Parquet files or the queue settings change (their size, mtime and
the settings are kept in ``review_meta``), so a restart on the same data is quick.

Queue order: flagged tiles, ``error`` before ``warning`` before ``info``, then the higher needs-review
score first (``review_score``, from describe's flags and second-opinion agreement; files without it
order as before), then more flags first, then tile id; a share of the unflagged tiles (chosen by ``sha256(seed, tile_id)``) mixed in evenly as
spot checks. Positions are computed by the database (window functions; SQLite >= 3.25, PostgreSQL).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import index_facets, instance_groups, meta, sample_index

SEVERITIES = ("none", "info", "warning", "error")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
INDEX_VERSION = 2  # 2: review_score in the order
_LOCK_KEY = 0x67707864  # PostgreSQL advisory lock held while the index is rebuilt
_SAMPLE_COLUMNS = ("tile_id", "max_severity", "flags", "phrases", "tile_path", "marks_path", "review_score")


@dataclass(frozen=True)
class SampleSummary:
    """What the queue needs to know about a tile: its id, worst flag severity and flag codes."""

    tile_id: str
    max_severity: str
    flag_codes: tuple[str, ...]


@dataclass(frozen=True)
class IndexStats:
    """What ``ensure_index`` did: samples indexed, queue length, and whether it rebuilt the index."""

    samples: int
    queued: int
    rebuilt: bool


class Facet(TypedDict):
    """One choice of the queue filter: a flag code or phrase category and how many samples have it."""

    value: str
    samples: int


def list_facets(engine: Engine) -> dict[str, list[Facet]]:
    """The indexed flag codes (``"flag_code"``) and phrase categories (``"category"``), each sorted by
    value; a kind without values is absent."""
    out: dict[str, list[Facet]] = {}
    with engine.connect() as conn:
        for row in conn.execute(sa.select(index_facets).order_by(index_facets.c.kind, index_facets.c.value)):
            out.setdefault(row.kind, []).append({"value": row.value, "samples": int(row.samples)})
    return out


def spot_key(seed: int, tile_id: str) -> str:
    """The spot-check lottery number of a tile (hex SHA-256 of seed and tile id)."""
    return hashlib.sha256(f"{seed}\x00{tile_id}".encode()).hexdigest()


def _codes(values: Any) -> str:
    """``|a|b|`` from a list of strings (empty: ``|``)."""
    unique = list(dict.fromkeys(str(v) for v in values if v))
    return "|" + "".join(f"{v}|" for v in unique)


def _fingerprint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _row_group_of(parquet: pq.ParquetFile) -> Iterator[tuple[int, int]]:
    """``(row group, row within it)`` for every row of ``parquet``, in order."""
    for group in range(parquet.metadata.num_row_groups):
        for row in range(parquet.metadata.row_group(group).num_rows):
            yield group, row


def double_review(seed: int, tile_id: str, rate: float) -> bool:
    """Whether a tile is one of the share ``rate`` reviewed by two annotators (deterministic per seed)."""
    digest = hashlib.sha256(f"{seed}\x00double\x00{tile_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def _sample_rows(
    path: Path, seed: int, batch_rows: int, double_rate: float = 0.0
) -> Iterator[list[dict[str, Any]]]:
    parquet = pq.ParquetFile(path)
    names = set(parquet.schema_arrow.names)
    if "tile_id" not in names:
        raise ValueError(f"{path}: no tile_id column")
    columns = [c for c in _SAMPLE_COLUMNS if c in names]
    where = _row_group_of(parquet)
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
        data = batch.to_pydict()
        n = batch.num_rows
        rows = []
        for i in range(n):
            group, row = next(where)
            tile_id = data["tile_id"][i]
            if tile_id is None:
                raise ValueError(f"{path}: row {row} of row group {group} has no tile_id")
            flags = (data.get("flags") or [[]] * n)[i] or []
            phrases = (data.get("phrases") or [[]] * n)[i] or []
            stored = (data.get("max_severity") or [None] * n)[i]
            # The worst of the stored max_severity and the flags themselves, in case they disagree.
            found = [stored] + [f.get("severity") for f in flags]
            worst = max(
                (s for s in found if s in SEVERITY_RANK), key=SEVERITY_RANK.__getitem__, default="none"
            )
            rows.append(
                {
                    "tile_id": str(tile_id),
                    "row_group": group,
                    "row_index": row,
                    "tile_path": (data.get("tile_path") or [None] * n)[i],
                    "marks_path": (data.get("marks_path") or [None] * n)[i],
                    "max_severity": worst,
                    "severity_rank": SEVERITY_RANK[worst],
                    "n_flags": len(flags),
                    "review_score": (data.get("review_score") or [None] * n)[i],
                    "n_phrases": len(phrases),
                    "flag_codes": _codes(f.get("code") for f in flags),
                    "categories": _codes(p.get("category") for p in phrases),
                    "spot_key": spot_key(seed, str(tile_id)),
                    "spot_check": False,
                    "position": None,
                    "double_review": double_review(seed, str(tile_id), double_rate),
                }
            )
        yield rows


def _instance_groups(path: Path, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
    parquet = pq.ParquetFile(path)
    for group in range(parquet.metadata.num_row_groups):
        seen: set[str] = set()
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=["tile_id"], row_groups=[group]):
            seen.update(str(t) for t in batch.column(0).to_pylist() if t is not None)
        yield [{"tile_id": t, "row_group": group} for t in sorted(seen)]


def _assign_positions(conn: sa.Connection, spot_check_rate: float) -> int:
    """Write ``position`` (and ``spot_check``) for the queue; returns the queue length."""
    si = sample_index
    n_flagged = conn.execute(sa.select(sa.func.count()).where(si.c.severity_rank > 0)).scalar_one()
    n_clean = conn.execute(sa.select(sa.func.count()).where(si.c.severity_rank == 0)).scalar_one()
    n_spot = round(spot_check_rate * n_clean)
    flagged = sa.select(
        si.c.tile_id,
        (
            sa.func.row_number().over(
                order_by=(
                    si.c.severity_rank.desc(),
                    sa.func.coalesce(si.c.review_score, -1.0).desc(),
                    si.c.n_flags.desc(),
                    si.c.tile_id,
                )
            )
            - 1
        ).label("rank"),
    ).where(si.c.severity_rank > 0)
    flagged_ranked = flagged.subquery()
    parts = [
        sa.select(
            flagged_ranked.c.tile_id,
            sa.cast(flagged_ranked.c.rank, sa.Float).label("key"),
            sa.literal(0).label("kind"),
        )
    ]
    if n_spot:
        ranked = (
            sa.select(si.c.tile_id, (sa.func.row_number().over(order_by=si.c.spot_key) - 1).label("j"))
            .where(si.c.severity_rank == 0)
            .subquery()
        )
        # Spot check j sits at fractional position (j + 0.5) * flagged / spots - 0.5 among the flagged.
        key = (sa.cast(ranked.c.j, sa.Float) + 0.5) * n_flagged / n_spot - 0.5
        parts.append(
            sa.select(ranked.c.tile_id, key.label("key"), sa.literal(1).label("kind")).where(
                ranked.c.j < n_spot
            )
        )
    union = sa.union_all(*parts).subquery()
    ordered = sa.select(
        union.c.tile_id,
        union.c.kind,
        (sa.func.row_number().over(order_by=(union.c.key, union.c.kind, union.c.tile_id)) - 1).label("pos"),
    ).subquery()
    conn.execute(
        sa.update(si)
        .where(si.c.tile_id == ordered.c.tile_id)
        .values(position=ordered.c.pos, spot_check=ordered.c.kind == 1)
    )
    return int(n_flagged + n_spot)


def ensure_index(
    engine: Engine,
    data_dir: Path | str,
    *,
    spot_check_rate: float = 0.05,
    seed: int = 0,
    batch_rows: int = 256,
    double_review_rate: float = 0.0,
) -> IndexStats:
    """Build (or keep) the sample index of ``data_dir`` in the review database.

    Args:
        engine: the review database.
        data_dir: directory with ``samples.parquet`` (and optionally ``instances.parquet``).
        spot_check_rate: share (0..1) of unflagged samples queued as spot checks.
        seed: picks the spot checks (and the double-review tiles).
        batch_rows: rows read per batch while indexing (memory is bounded by one batch).
        double_review_rate: share (0..1) of queued tiles reviewed by two annotators blind.

    Raises:
        FileNotFoundError: no ``samples.parquet``.
        ValueError: the table has no ``tile_id`` column, a null tile id, or a tile id twice.
    """
    data_dir = Path(data_dir).resolve()
    samples_path = data_dir / "samples.parquet"
    if not samples_path.is_file():
        raise FileNotFoundError(f"no samples.parquet in {data_dir}")
    instances_path = data_dir / "instances.parquet"
    settings = json.dumps(
        {
            "version": INDEX_VERSION,
            "samples": _fingerprint(samples_path),
            "instances": _fingerprint(instances_path),
            "spot_check_rate": spot_check_rate,
            "double_review_rate": double_review_rate,
            "seed": seed,
            "dir": str(data_dir),
        },
        sort_keys=True,
    )
    wanted = hashlib.sha256(settings.encode()).hexdigest()
    with engine.connect() as conn:
        if _current(conn, wanted):
            return _stats(conn, rebuilt=False)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # servers of one team starting together build it once
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            if _current(conn, wanted):
                return _stats(conn, rebuilt=False)
        conn.execute(sa.delete(meta).where(meta.c.key == "sample_index"))
        conn.execute(sa.delete(sample_index))
        conn.execute(sa.delete(instance_groups))
        conn.execute(sa.delete(index_facets))
        samples = 0
        facets: dict[tuple[str, str], int] = {}  # one entry per distinct flag code / category
        for rows in _sample_rows(samples_path, seed, batch_rows, double_review_rate):
            for record in rows:
                for kind in ("flag_code", "category"):
                    for value in record["flag_codes" if kind == "flag_code" else "categories"].split("|"):
                        if value:
                            facets[(kind, value[:255])] = facets.get((kind, value[:255]), 0) + 1
            ids = [r["tile_id"] for r in rows]
            if (
                len(set(ids)) != len(ids)
                or conn.execute(
                    sa.select(sample_index.c.tile_id).where(sample_index.c.tile_id.in_(ids)).limit(1)
                ).first()
            ):
                dup = (
                    next(
                        (t for t in ids if ids.count(t) > 1),
                        None,
                    )
                    or conn.execute(
                        sa.select(sample_index.c.tile_id).where(sample_index.c.tile_id.in_(ids)).limit(1)
                    ).scalar()
                )
                raise ValueError(f"duplicate tile_id {dup!r} in {samples_path}")
            conn.execute(sa.insert(sample_index), rows)
            samples += len(rows)
        if instances_path.is_file():
            for rows in _instance_groups(instances_path, batch_rows):
                if rows:
                    conn.execute(sa.insert(instance_groups), rows)
        if facets:
            conn.execute(
                sa.insert(index_facets),
                [{"kind": k, "value": v, "samples": n} for (k, v), n in sorted(facets.items())],
            )
        queued = _assign_positions(conn, spot_check_rate)
        conn.execute(sa.insert(meta).values(key="sample_index", value=wanted))
    return IndexStats(samples, queued, rebuilt=True)


def _current(conn: sa.Connection, wanted: str) -> bool:
    return conn.execute(sa.select(meta.c.value).where(meta.c.key == "sample_index")).scalar() == wanted


def _stats(conn: sa.Connection, *, rebuilt: bool) -> IndexStats:
    samples = conn.execute(sa.select(sa.func.count()).select_from(sample_index)).scalar_one()
    queued = conn.execute(sa.select(sa.func.count()).where(sample_index.c.position.is_not(None))).scalar_one()
    return IndexStats(int(samples), int(queued), rebuilt=rebuilt)
