"""The review queue: flagged tiles by severity, spot checks spread among them, sticky per annotator.

Order: flagged tiles (``error`` before ``warning`` before ``info``; more flags first; then tile id),
with a share of the unflagged tiles mixed in evenly as spot checks. Which unflagged tiles are spot
checks depends only on the seed and the tile ids, so restarting the server gives the same queue.

Assignment is sticky: handing a tile to an annotator records it in ``assignments``; nobody else is
handed that tile until it is decided or the lease runs out, and the annotator gets it back first when
they come back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from .db import as_utc, assignments, decisions, utcnow
from .samples import SampleSummary

SEVERITY_RANK = {"error": 3, "warning": 2, "info": 1, "none": 0}


@dataclass(frozen=True)
class QueueConfig:
    """How the queue is built and handed out.

    Attributes:
        spot_check_rate: share (0..1) of the unflagged tiles reviewed as spot checks.
        seed: picks which unflagged tiles are spot checks (same seed, same tiles).
        lease: how long a handed-out tile stays with its annotator without a decision.
    """

    spot_check_rate: float = 0.05
    seed: int = 0
    lease: timedelta = timedelta(hours=4)

    def __post_init__(self) -> None:
        if not 0.0 <= self.spot_check_rate <= 1.0:
            raise ValueError(f"spot_check_rate must be within [0, 1], got {self.spot_check_rate}")
        if self.lease <= timedelta(0):
            raise ValueError("lease must be positive")


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
    """The review order for a dataset (see the module docstring)."""
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
    keyed = [(float(i), 0, item) for i, item in enumerate(flagged)]
    keyed += [
        ((j + 0.5) * len(flagged) / len(spots) - 0.5, 1, QueueItem(tile_id, "none", 0, True))
        for j, tile_id in enumerate(spots)
    ]
    keyed.sort(key=lambda entry: (entry[0], entry[1]))
    return [item for _, _, item in keyed]


class ReviewQueue:
    """Hands queue tiles to annotators, one at a time, with sticky assignments.

    Args:
        items: the queue order (``build_queue``).
        engine: the review database.
        config: lease length (the other fields were used to build ``items``).
    """

    def __init__(
        self, items: Sequence[QueueItem], engine: Engine, config: QueueConfig, chunk_size: int = 256
    ) -> None:
        self.items = list(items)
        self.engine = engine
        self.config = config
        self.chunk_size = chunk_size
        self._position = {item.tile_id: i for i, item in enumerate(self.items)}

    def __len__(self) -> int:
        return len(self.items)

    def position(self, tile_id: str) -> int | None:
        """0-based place of ``tile_id`` in the queue, or None when it is not queued."""
        return self._position.get(tile_id)

    def item(self, tile_id: str) -> QueueItem | None:
        position = self._position.get(tile_id)
        return None if position is None else self.items[position]

    def lease_cutoff(self, now: datetime | None = None) -> datetime:
        """Assignments made before this moment have lapsed."""
        return (now or utcnow()) - self.config.lease

    def _order_from(self, after: str | None) -> Iterator[str]:
        """Queue tile ids starting after ``after`` and wrapping around (``after`` itself last)."""
        start = 0 if after is None or after not in self._position else self._position[after] + 1
        for offset in range(len(self.items)):
            yield self.items[(start + offset) % len(self.items)].tile_id

    def _chunks(self, after: str | None) -> Iterator[list[str]]:
        chunk: list[str] = []
        for tile_id in self._order_from(after):
            chunk.append(tile_id)
            if len(chunk) == self.chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _open_tiles(self, conn: sa.Connection, annotator: str, chunk: list[str], now: datetime) -> list[str]:
        """The tiles of ``chunk`` (in order) that are undecided and free or already ``annotator``'s."""
        decided = set(
            conn.execute(sa.select(decisions.c.tile_id).where(decisions.c.tile_id.in_(chunk))).scalars()
        )
        taken = {
            row.tile_id
            for row in conn.execute(
                sa.select(assignments.c.tile_id, assignments.c.annotator, assignments.c.assigned_at).where(
                    assignments.c.tile_id.in_(chunk)
                )
            )
            if row.annotator != annotator and (as_utc(row.assigned_at) or now) >= self.lease_cutoff(now)
        }
        return [t for t in chunk if t not in decided and t not in taken]

    def in_progress(self, annotator: str) -> list[str]:
        """Undecided queue tiles assigned to ``annotator``, in queue order."""
        with self.engine.connect() as conn:
            mine = conn.execute(
                sa.select(assignments.c.tile_id)
                .outerjoin(decisions, decisions.c.tile_id == assignments.c.tile_id)
                .where(assignments.c.annotator == annotator, decisions.c.tile_id.is_(None))
            ).scalars()
            return sorted((t for t in mine if t in self._position), key=self._position.__getitem__)

    def peek(self, annotator: str, after: str | None = None) -> str | None:
        """The tile ``next_for`` would hand out, without assigning it."""
        now = utcnow()
        if after is None:
            mine = self.in_progress(annotator)
            if mine:
                return mine[0]
        with self.engine.connect() as conn:
            for chunk in self._chunks(after):
                open_tiles = [t for t in self._open_tiles(conn, annotator, chunk, now) if t != after]
                if open_tiles:
                    return open_tiles[0]
        return None

    def next_for(self, annotator: str, after: str | None = None) -> str | None:
        """Assign and return the next tile for ``annotator``; None when the queue is done.

        Without ``after`` the annotator first gets back the earliest tile they already hold. With
        ``after`` (the tile they are leaving) it is the next open tile after that one in queue order,
        wrapping around, so tiles skipped earlier come back at the end.
        """
        if after is None:
            mine = self.in_progress(annotator)
            if mine:
                return mine[0]
        now = utcnow()
        with self.engine.connect() as conn:
            for chunk in self._chunks(after):
                for tile_id in self._open_tiles(conn, annotator, chunk, now):
                    if tile_id != after and self.claim(annotator, tile_id, now):
                        return tile_id
        if after is not None and after in self._position and self.claim(annotator, after, now):
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

    def remaining(self) -> int:
        """Queue tiles without a decision."""
        with self.engine.connect() as conn:
            decided = set(conn.execute(sa.select(decisions.c.tile_id)).scalars())
        return sum(1 for item in self.items if item.tile_id not in decided)
