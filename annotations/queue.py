"""The review queue: flagged tiles by severity, spot checks spread among them, sticky per annotator.

Order: flagged tiles (``error`` before ``warning`` before ``info``; more flags first; then tile id),
with a share of the unflagged tiles mixed in evenly as spot checks. Which unflagged tiles are spot
checks depends only on the seed and the tile ids, so restarting the server gives the same queue.
``build_queue`` states the order in Python; ``index.ensure_index`` computes the same order in the
database, and ``ReviewQueue`` pages through it there (``chunk_size`` tiles per query), so no list of
every tile is ever held in memory.

Assignment is sticky: handing a tile to an annotator records it in ``assignments``; nobody else is
handed that tile until it is decided or the lease runs out, and the annotator gets it back first when
they come back. A ``QueueFilter`` narrows the queue to a flag code and/or a phrase category.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from .db import adjudications, as_utc, assignments, decisions, reviews, sample_index, utcnow
from .index import SampleSummary

SEVERITY_RANK = {"error": 3, "warning": 2, "info": 1, "none": 0}


@dataclass(frozen=True)
class QueueConfig:
    """How the queue is built and handed out.

    Attributes:
        spot_check_rate: share (0..1) of the unflagged tiles reviewed as spot checks.
        seed: picks which unflagged tiles are spot checks (same seed, same tiles).
        lease: how long a handed-out tile stays with its annotator without a decision.
        double_review_rate: share (0..1) of queued tiles reviewed by two annotators blind (double.py).
    """

    spot_check_rate: float = 0.05
    seed: int = 0
    lease: timedelta = timedelta(hours=4)
    double_review_rate: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.spot_check_rate <= 1.0:
            raise ValueError(f"spot_check_rate must be within [0, 1], got {self.spot_check_rate}")
        if not 0.0 <= self.double_review_rate <= 1.0:
            raise ValueError(f"double_review_rate must be within [0, 1], got {self.double_review_rate}")
        if self.lease <= timedelta(0):
            raise ValueError("lease must be positive")


@dataclass(frozen=True)
class QueueFilter:
    """Narrows the queue: only tiles with this flag code and/or a phrase of this category."""

    flag_code: str | None = None
    category: str | None = None
    adjudicate: bool = False  # only tiles whose two reviewers disagreed (a lead's queue)

    def clauses(self) -> list[Any]:
        out: list[Any] = []
        if self.adjudicate:
            out.append(sample_index.c.tile_id.in_(sa.select(adjudications.c.tile_id)))
        if self.flag_code:
            out.append(sample_index.c.flag_codes.contains(f"|{self.flag_code}|", autoescape=True))
        if self.category:
            out.append(sample_index.c.categories.contains(f"|{self.category}|", autoescape=True))
        return out


NO_FILTER = QueueFilter()


@dataclass(frozen=True)
class QueueItem:
    """One tile in the queue: why it is there (severity, flag count, spot check)."""

    tile_id: str
    max_severity: str
    n_flags: int
    spot_check: bool


def _spot_key(seed: int, tile_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{tile_id}".encode()).digest()


def build_queue(summaries: Iterable[SampleSummary], config: QueueConfig) -> list[QueueItem]:
    """The review order for a dataset, in memory (the reference for the database's order)."""
    flagged: list[QueueItem] = []
    unflagged: list[str] = []
    for summary in summaries:
        if SEVERITY_RANK.get(summary.max_severity, 0) > 0:
            flagged.append(QueueItem(summary.tile_id, summary.max_severity, len(summary.flag_codes), False))
        else:
            unflagged.append(summary.tile_id)
    flagged.sort(key=lambda item: (-SEVERITY_RANK[item.max_severity], -item.n_flags, item.tile_id))
    n_spot = round(config.spot_check_rate * len(unflagged))
    spots = sorted(unflagged, key=lambda tile_id: _spot_key(config.seed, tile_id))[:n_spot]
    if not spots:
        return flagged
    # Spot check j sits at fractional position (j + 0.5) * len(flagged) / len(spots) among the flagged.
    keyed = [(float(i), 0, item.tile_id, item) for i, item in enumerate(flagged)]
    keyed += [
        ((j + 0.5) * len(flagged) / len(spots) - 0.5, 1, tile_id, QueueItem(tile_id, "none", 0, True))
        for j, tile_id in enumerate(spots)
    ]
    keyed.sort(key=lambda entry: (entry[0], entry[1], entry[2]))
    return [entry[3] for entry in keyed]


class ReviewQueue:
    """Hands queue tiles to annotators, one at a time, with sticky assignments.

    Args:
        engine: the review database, with the sample index built (``index.ensure_index``).
        config: lease length (the other fields were used to build the index).
        chunk_size: tiles fetched per query while looking for an open one.
    """

    def __init__(self, engine: Engine, config: QueueConfig, chunk_size: int = 256) -> None:
        self.engine = engine
        self.config = config
        self.chunk_size = chunk_size

    def __len__(self) -> int:
        return self.count()

    def count(self, where: QueueFilter = NO_FILTER) -> int:
        """Queued tiles (matching ``where``)."""
        query = sa.select(sa.func.count()).where(sample_index.c.position.is_not(None), *where.clauses())
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def position(self, tile_id: str) -> int | None:
        """0-based place of ``tile_id`` in the queue, or None when it is not queued."""
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(sample_index.c.position).where(sample_index.c.tile_id == tile_id)
            ).scalar()
        return None if found is None else int(found)

    def item(self, tile_id: str) -> QueueItem | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(sample_index).where(
                    sample_index.c.tile_id == tile_id, sample_index.c.position.is_not(None)
                )
            ).first()
        if row is None:
            return None
        return QueueItem(row.tile_id, row.max_severity, int(row.n_flags), bool(row.spot_check))

    def lease_cutoff(self, now: datetime | None = None) -> datetime:
        """Assignments made before this moment have lapsed."""
        return (now or utcnow()) - self.config.lease

    def _open_query(self, annotator: str, now: datetime, where: QueueFilter) -> sa.Select[Any]:
        """Queued tiles that are undecided and free (or already ``annotator``'s), in queue order."""
        si = sample_index
        # Two-reviewer mode: nobody reviews a tile twice, and a tile with two reviews waits for a lead.
        mine = sa.select(reviews.c.tile_id).where(reviews.c.annotator == annotator)
        reviewed_twice = sa.select(reviews.c.tile_id).group_by(reviews.c.tile_id).having(sa.func.count() >= 2)
        review_clauses = (
            [] if where.adjudicate else [si.c.tile_id.not_in(mine), si.c.tile_id.not_in(reviewed_twice)]
        )
        return (
            sa.select(si.c.tile_id, si.c.position)
            .outerjoin(decisions, decisions.c.tile_id == si.c.tile_id)
            .outerjoin(assignments, assignments.c.tile_id == si.c.tile_id)
            .where(
                si.c.position.is_not(None),
                decisions.c.tile_id.is_(None),
                sa.or_(
                    assignments.c.tile_id.is_(None),
                    assignments.c.annotator == annotator,
                    assignments.c.assigned_at < self.lease_cutoff(now),
                ),
                *review_clauses,
                *where.clauses(),
            )
            .order_by(si.c.position)
        )

    def _open_from(self, annotator: str, after: str | None, where: QueueFilter) -> Iterator[str]:
        """Open tiles after ``after`` in queue order, wrapping around (``after`` itself excluded)."""
        now = utcnow()
        start = self.position(after) if after is not None else None
        ranges = [(-1, None)] if start is None else [(start, None), (-1, start)]
        base = self._open_query(annotator, now, where)
        with self.engine.connect() as conn:
            for low, high in ranges:
                cursor = low
                while True:
                    query = base.where(sample_index.c.position > cursor)
                    if high is not None:
                        query = query.where(sample_index.c.position < high)
                    page = conn.execute(query.limit(self.chunk_size)).all()
                    for row in page:
                        if row.tile_id != after:
                            yield str(row.tile_id)
                    if len(page) < self.chunk_size:
                        break
                    cursor = int(page[-1].position)

    def in_progress(self, annotator: str, where: QueueFilter = NO_FILTER, limit: int = 100) -> list[str]:
        """Undecided queue tiles assigned to ``annotator`` (at most ``limit``), in queue order."""
        si = sample_index
        with self.engine.connect() as conn:
            return [
                str(t)
                for t in conn.execute(
                    sa.select(si.c.tile_id)
                    .join(assignments, assignments.c.tile_id == si.c.tile_id)
                    .outerjoin(decisions, decisions.c.tile_id == si.c.tile_id)
                    .where(
                        assignments.c.annotator == annotator,
                        decisions.c.tile_id.is_(None),
                        si.c.position.is_not(None),
                        *where.clauses(),
                    )
                    .order_by(si.c.position)
                    .limit(limit)
                ).scalars()
            ]

    def count_in_progress(self, annotator: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(assignments)
                    .outerjoin(decisions, decisions.c.tile_id == assignments.c.tile_id)
                    .where(assignments.c.annotator == annotator, decisions.c.tile_id.is_(None))
                ).scalar_one()
            )

    def peek(self, annotator: str, after: str | None = None, where: QueueFilter = NO_FILTER) -> str | None:
        """The tile ``next_for`` would hand out, without assigning it."""
        if after is None:
            mine = self.in_progress(annotator, where, limit=1)
            if mine:
                return mine[0]
        return next(self._open_from(annotator, after, where), None)

    def next_for(
        self, annotator: str, after: str | None = None, where: QueueFilter = NO_FILTER
    ) -> str | None:
        """Assign and return the next tile for ``annotator``; None when the queue is done.

        Without ``after`` the annotator first gets back the earliest tile they already hold. With
        ``after`` (the tile they are leaving) it is the next open tile after that one in queue order,
        wrapping around, so tiles skipped earlier come back at the end.
        """
        if after is None:
            mine = self.in_progress(annotator, where, limit=1)
            if mine:
                return mine[0]
        now = utcnow()
        for tile_id in self._open_from(annotator, after, where):
            if self.claim(annotator, tile_id, now):
                return tile_id
        if after is not None and self.position(after) is not None and self.claim(annotator, after, now):
            return after  # nothing else is open; stay on the current tile if it is still undecided
        return None

    def claim(self, annotator: str, tile_id: str, now: datetime | None = None) -> bool:
        """Assign ``tile_id`` to ``annotator`` unless it is decided or someone else holds a live lease."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            if conn.execute(sa.select(decisions.c.tile_id).where(decisions.c.tile_id == tile_id)).first():
                return False
            row = conn.execute(sa.select(assignments).where(assignments.c.tile_id == tile_id)).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            sa.insert(assignments).values(
                                tile_id=tile_id, annotator=annotator, assigned_at=now
                            )
                        )
                except IntegrityError:
                    return False
                return True
            if row.annotator == annotator:
                conn.execute(
                    sa.update(assignments).where(assignments.c.tile_id == tile_id).values(assigned_at=now)
                )
                return True
            lapsed = (as_utc(row.assigned_at) or now) < self.lease_cutoff(now)
            if not lapsed:
                return False
            result = conn.execute(
                sa.update(assignments)
                .where(
                    assignments.c.tile_id == tile_id,
                    assignments.c.annotator == row.annotator,
                    assignments.c.assigned_at == row.assigned_at,
                )
                .values(annotator=annotator, assigned_at=now)
            )
            return result.rowcount == 1

    def holder(self, tile_id: str) -> str | None:
        """Who holds a live lease on ``tile_id`` (None: nobody)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(assignments).where(assignments.c.tile_id == tile_id)).first()
        if row is None or (as_utc(row.assigned_at) or utcnow()) < self.lease_cutoff():
            return None
        return str(row.annotator)

    def remaining(self, where: QueueFilter = NO_FILTER) -> int:
        """Queue tiles without a decision (matching ``where``)."""
        si = sample_index
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(si)
                    .outerjoin(decisions, decisions.c.tile_id == si.c.tile_id)
                    .where(si.c.position.is_not(None), decisions.c.tile_id.is_(None), *where.clauses())
                ).scalar_one()
            )
