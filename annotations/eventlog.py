"""Reading the event log: one user's count of actions, the per-annotator statistics, the listing and the
export of events.

``db.log_event`` writes the log (append-only); this module is where it is read. Events come back as
plain :class:`EventRecord` dicts, their ``at`` as ISO 8601 UTC, ready for JSON.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import as_utc, decisions, events, utcnow

#: The event actions that are an annotator's decision (what "today" and the statistics count).
DECISION_ACTIONS = ("accept", "reject", "fix", "bulk_accept", "phrase_accept", "phrase_reject", "phrase_fix")


class EventRecord(TypedDict):
    """One row of the event log (``at`` as ISO 8601 UTC)."""

    id: int
    at: str | None
    actor: str
    action: str
    tile_id: str | None
    base_revision: int | None
    revision: int | None
    before: Any
    after: Any


@dataclass(frozen=True)
class AnnotatorActivity:
    """One annotator's counts: each counted action over all time, and decisions made today."""

    name: str
    today: int
    actions: dict[str, int]


@dataclass(frozen=True)
class ReviewStats:
    """Per-annotator activity (sorted by name) and the number of decided tiles per status."""

    annotators: list[AnnotatorActivity]
    decisions: dict[str, int]


def start_of_day(now: datetime | None = None) -> datetime:
    """Midnight UTC of ``now`` (default: the current time): where "today" begins."""
    return (now or utcnow()).replace(hour=0, minute=0, second=0, microsecond=0)


def _record(row: sa.Row[Any]) -> EventRecord:
    at = as_utc(row.at)
    return {
        "id": row.id,
        "at": at.isoformat() if at else None,
        "actor": row.actor,
        "action": row.action,
        "tile_id": row.tile_id,
        "base_revision": row.base_revision,
        "revision": row.revision,
        "before": row.before,
        "after": row.after,
    }


def count_actions(engine: Engine, *, actor: str, actions: Sequence[str], since: datetime) -> int:
    """How many events with one of ``actions`` ``actor`` caused at or after ``since``."""
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(sa.func.count()).where(
                events.c.actor == actor,
                events.c.action.in_(actions),
                events.c.at >= since,
            )
        ).scalar_one()
    return int(found)


def review_stats(
    engine: Engine, *, counted: Sequence[str], decision_actions: Sequence[str], since: datetime
) -> ReviewStats:
    """Per actor, the number of events of each action in ``counted`` (0 when none) and of
    ``decision_actions`` at or after ``since`` (``today``); and the decided tiles per status.

    Only actors with at least one such event are listed."""
    per: dict[str, dict[str, int]] = {}
    today: dict[str, int] = {}
    with engine.connect() as conn:
        for actor, action, n in conn.execute(
            sa.select(events.c.actor, events.c.action, sa.func.count())
            .where(events.c.action.in_(counted))
            .group_by(events.c.actor, events.c.action)
        ):
            per.setdefault(actor, dict.fromkeys(counted, 0))[action] = int(n)
        for actor, n in conn.execute(
            sa.select(events.c.actor, sa.func.count())
            .where(events.c.action.in_(decision_actions), events.c.at >= since)
            .group_by(events.c.actor)
        ):
            per.setdefault(actor, dict.fromkeys(counted, 0))
            today[actor] = int(n)
        by_status = {
            str(status): int(n)
            for status, n in conn.execute(
                sa.select(decisions.c.status, sa.func.count()).group_by(decisions.c.status)
            )
        }
    annotators = [AnnotatorActivity(name, today.get(name, 0), counts) for name, counts in sorted(per.items())]
    return ReviewStats(annotators, by_status)


def list_events(
    engine: Engine, *, limit: int, tile_id: str | None = None, actor: str | None = None
) -> list[EventRecord]:
    """The newest ``limit`` events, newest first; only those of ``tile_id`` and/or by ``actor`` when
    given."""
    query = sa.select(events).order_by(events.c.id.desc()).limit(limit)
    if tile_id is not None:
        query = query.where(events.c.tile_id == tile_id)
    if actor is not None:
        query = query.where(events.c.actor == actor)
    with engine.connect() as conn:
        return [_record(row) for row in conn.execute(query)]


def iter_events(engine: Engine) -> Iterator[EventRecord]:
    """Every event, oldest first; the connection stays open while the caller iterates (lazily: nothing
    is read before the first item is asked for)."""
    with engine.connect() as conn:
        for row in conn.execute(sa.select(events).order_by(events.c.id)):
            yield _record(row)
