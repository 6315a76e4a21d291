"""Two-reviewer mode: a share of the queue is reviewed by two annotators, blind, and their agreement is
measured.

A double-review tile (``sample_index.double_review``, chosen per project with ``--double-review-rate``)
does not get a decision from its first reviewer: each annotator's verdict is a ``reviews`` row (and a
``review_accept`` / ``review_reject`` / ``review_fix`` event), invisible to other annotators. The queue
hands the tile to a second annotator (never the same one twice). When the two agree (same status; for
fixes, the same caption, links and drawn masks), the tile is decided (``double_agree`` event); when
they disagree, it goes to the leads' adjudication queue (``adjudications``), and a lead's decision is
final.

``agreement_report`` gives, over the tiles with two reviews, the share of agreement and Cohen's kappa
on the status labels (accepted / rejected / fixed), overall and per flag code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import adjudications, assignments, decisions, log_event, reviews, sample_index, utcnow
from .decisions import ACTION_STATUS, Conflict, current_decision, record_decision


class AlreadyReviewed(Exception):
    """The annotator has reviewed this tile already, or it has its two reviews."""


def is_double(conn: sa.Connection, tile_id: str) -> bool:
    found = conn.execute(
        sa.select(sample_index.c.double_review).where(sample_index.c.tile_id == tile_id)
    ).scalar()
    return bool(found)


def review_rows(conn: sa.Connection, tile_id: str) -> list[dict[str, Any]]:
    """The tile's reviews, oldest first."""
    rows = conn.execute(
        sa.select(reviews)
        .where(reviews.c.tile_id == tile_id)
        .order_by(reviews.c.decided_at, reviews.c.annotator)
    )
    return [dict(r._mapping) for r in rows]


def _fix_key(fixed: Mapping[str, Any] | None) -> Any:
    if not fixed:
        return None
    return (fixed.get("gcg_caption"), list(fixed.get("mask_refs") or []), list(fixed.get("new_masks") or []))


def agree(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two reviews agree: same status, and for fixes the same caption, mask links and drawn masks."""
    return bool(
        a["status"] == b["status"]
        and (a["status"] != "fixed" or _fix_key(a["fixed"]) == _fix_key(b["fixed"]))
    )


def record_review(
    engine: Engine,
    *,
    sample: Mapping[str, Any],
    actor: str,
    action: str,
    note: str | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Store ``actor``'s blind review of a double-review tile; returns ``{"outcome": "waiting" |
    "agreed" | "disagreed", "reviews": n, "decision": the tile's decision or None}``.

    Raises:
        Conflict: the tile is decided already.
        AlreadyReviewed: ``actor`` reviewed it already, or it has two reviews (a lead decides it).
    """
    tile_id = str(sample["tile_id"])
    status = ACTION_STATUS[action]
    kept_fix = None
    if fixed is not None:
        kept_fix = {k: fixed.get(k) for k in ("gcg_caption", "mask_refs", "new_masks")}
    with engine.begin() as conn:
        current = current_decision(conn, tile_id)
        if current is not None:
            raise Conflict(current)
        existing = review_rows(conn, tile_id)
        if any(r["annotator"] == actor for r in existing):
            raise AlreadyReviewed("you have reviewed this sample already")
        if len(existing) >= 2:
            raise AlreadyReviewed("this sample has its two reviews; a lead decides it")
        conn.execute(
            sa.insert(reviews).values(
                tile_id=tile_id,
                annotator=actor,
                status=status,
                note=note,
                decided_at=utcnow(),
                fixed=kept_fix,
            )
        )
        conn.execute(sa.delete(assignments).where(assignments.c.tile_id == tile_id))
        log_event(
            conn,
            actor=actor,
            action=f"review_{action}",
            tile_id=tile_id,
            after={"status": status, "note": note, "review": len(existing) + 1, **(kept_fix or {})},
        )
        both = review_rows(conn, tile_id)
        disagreed = len(both) == 2 and not agree(both[0], both[1])
        if disagreed:
            conn.execute(sa.insert(adjudications).values(tile_id=tile_id, opened_at=utcnow()))
            log_event(
                conn,
                actor=actor,
                action="adjudication_opened",
                tile_id=tile_id,
                after={"reviews": [{"annotator": r["annotator"], "status": r["status"]} for r in both]},
            )
    if len(both) < 2:
        return {"outcome": "waiting", "reviews": len(both), "decision": None}
    if disagreed:
        return {"outcome": "disagreed", "reviews": 2, "decision": None}
    first, second = both
    decision = record_decision(
        engine,
        sample=sample,
        actor=f"{first['annotator']}+{second['annotator']}"[:64],
        action=action,
        base_revision=0,
        note="; ".join(n for n in (first["note"], second["note"]) if n) or None,
        fixed=fixed if status == "fixed" else None,
        event_action="double_agree",
    )
    return {"outcome": "agreed", "reviews": 2, "decision": decision}


def cohen_kappa(pairs: Iterable[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters over ``(label_1, label_2)`` pairs; None when it is undefined (no
    pairs, or both raters always gave one and the same label)."""
    pairs = list(pairs)
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == b for a, b in pairs) / n
    first = Counter(a for a, _ in pairs)
    second = Counter(b for _, b in pairs)
    expected = sum(first[k] * second[k] for k in first) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def agreement_report(engine: Engine) -> dict[str, Any]:
    """Agreement of the two reviewers over every tile with two reviews: overall and per flag code
    (share of agreement, Cohen's kappa on the status), and the adjudication queue's state."""
    pairs: list[tuple[str, str, bool, list[str]]] = []
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(reviews, sample_index.c.flag_codes)
            .join(sample_index, sample_index.c.tile_id == reviews.c.tile_id)
            .order_by(reviews.c.tile_id, reviews.c.decided_at, reviews.c.annotator)
        )
        by_tile: dict[str, list[dict[str, Any]]] = {}
        for row in rows:  # one tile's reviews at a time (ordered by tile)
            record = dict(row._mapping)
            group = by_tile.setdefault(record["tile_id"], [])
            group.append(record)
            if len(by_tile) > 1:
                tile, done = next(iter(by_tile.items()))
                if len(done) == 2:
                    pairs.append(_pair(done))
                del by_tile[tile]
        for done in by_tile.values():
            if len(done) == 2:
                pairs.append(_pair(done))
        open_count = conn.execute(
            sa.select(sa.func.count())
            .select_from(adjudications)
            .where(adjudications.c.tile_id.not_in(sa.select(decisions.c.tile_id)))
        ).scalar_one()
        total_adjudications = conn.execute(sa.select(sa.func.count()).select_from(adjudications)).scalar_one()

    def summary(selected: list[tuple[str, str, bool, list[str]]]) -> dict[str, Any]:
        n = len(selected)
        return {
            "pairs": n,
            "agreement": (sum(agreed for _, _, agreed, _ in selected) / n) if n else None,
            "kappa": cohen_kappa((a, b) for a, b, _, _ in selected),
        }

    codes = sorted({code for *_, tile_codes in pairs for code in tile_codes})
    return {
        **summary(pairs),
        "labels": dict(Counter(label for a, b, _, _ in pairs for label in (a, b))),
        "by_flag_code": [
            {"flag_code": code, **summary([p for p in pairs if code in p[3]])} for code in codes
        ],
        "adjudication": {"open": int(open_count), "decided": int(total_adjudications - open_count)},
    }


def _pair(done: list[dict[str, Any]]) -> tuple[str, str, bool, list[str]]:
    first, second = done
    codes = [c for c in str(first["flag_codes"] or "").split("|") if c] or ["(none)"]
    return str(first["status"]), str(second["status"]), agree(first, second), codes
