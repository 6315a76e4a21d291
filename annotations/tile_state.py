"""What the database says about one tile: its decision, its phrase decisions and its two-reviewer stage.

The sample page (``GET /api/samples/{tile_id}``) shows all three; the decision and event handlers ask for
the two-reviewer stage to keep blind reviews blind. The reads happen on one connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import decision_dict, decisions
from .decisions import current_decision
from .double import is_double, review_rows
from .phrases import phrase_states

Stage = Literal["single", "review", "adjudication", "decided"]
REVIEW_DETAIL = ("annotator", "status", "note", "decided_at", "fixed")


@dataclass
class TileState:
    """One tile's review state, as one user sees it.

    Attributes:
        decision: the tile's decision row (``None`` while undecided).
        phrases: phrase index → that phrase's decision.
        double: for a two-reviewer tile, ``{"reviews": n, "mine": status or None}`` and, for a lead once
            both reviews are in (adjudication), ``"detail"``: both reviews; ``None`` for other tiles.
    """

    decision: dict[str, Any] | None
    phrases: dict[int, dict[str, Any]]
    double: dict[str, Any] | None


def tile_state(engine: Engine, tile_id: str, user: str = "", is_lead: bool = False) -> TileState:
    """The decision, phrase decisions and two-reviewer state of ``tile_id`` (see :class:`TileState`)."""
    with engine.connect() as conn:
        decision = decision_dict(conn.execute(sa.select(decisions).where(decisions.c.tile_id == tile_id)).first())
        phrases = phrase_states(conn, tile_id)
        double: dict[str, Any] | None = None
        if is_double(conn, tile_id):
            done = review_rows(conn, tile_id)
            double = {"reviews": len(done), "mine": next((r["status"] for r in done if r["annotator"] == user), None)}
            if is_lead and len(done) >= 2:  # adjudication: the lead sees both reviews
                double["detail"] = [{k: r[k] for k in REVIEW_DETAIL} for r in done]
    return TileState(decision, phrases, double)


def double_stage(engine: Engine, tile_id: str) -> Stage:
    """Two-reviewer mode: ``review`` (a blind review is due), ``adjudication`` (two reviews disagree, a
    lead decides), ``decided``, or ``single`` (not a double-review tile)."""
    with engine.connect() as conn:
        if not is_double(conn, tile_id):
            return "single"
        if current_decision(conn, tile_id) is not None:
            return "decided"
        return "adjudication" if len(review_rows(conn, tile_id)) >= 2 else "review"
