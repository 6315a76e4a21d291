"""Undo: take back an annotator's own last decision, recorded in the audit log.

The decisions an annotator made (``accept``, ``reject``, ``fix``, ``phrase_*``, ``phrases_done``) form a
stack in the event log; an ``undo`` event names the event it took back (``after.undid``), so pressing
undo again takes back the decision before that one. Taking back a sample decision restores the state
recorded in its event's ``before`` (unreviewed: the decision row is removed; otherwise the earlier
status, note and fixed text at a new revision). A ``phrases_done`` decision goes together with the
phrase decision that completed it. The tile is handed back to the annotator.

Undo is refused (``Conflict``) when someone else changed the tile after the decision being undone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import assignments, decisions, events, log_event, phrase_decisions, utcnow
from .decisions import Conflict, Validator, build_fix, current_decision
from .validate import validate_fixed

SAMPLE_ACTIONS = ("accept", "reject", "fix", "phrases_done")
PHRASE_ACTIONS = ("phrase_accept", "phrase_reject", "phrase_fix")
UNDOABLE = SAMPLE_ACTIONS + PHRASE_ACTIONS
_SCAN = 500


class NothingToUndo(Exception):
    """The annotator has no decision left to take back."""


def _undoable(conn: sa.Connection, actor: str) -> tuple[list[sa.Row[Any]], set[int]]:
    """The annotator's decisions not yet undone, newest first (among the last ``_SCAN`` events), and the
    ids of those already undone."""
    rows = conn.execute(
        sa.select(events)
        .where(events.c.actor == actor, events.c.action.in_((*UNDOABLE, "undo")))
        .order_by(events.c.id.desc())
        .limit(_SCAN)
    ).all()
    undone = {int(r.after["undid"]) for r in rows if r.action == "undo" and r.after and "undid" in r.after}
    return [r for r in rows if r.action != "undo" and r.id not in undone], undone


def _check_untouched(conn: sa.Connection, target: sa.Row[Any], actor: str, undone: set[int]) -> None:
    """Raise ``Conflict`` when anyone else changed the tile after ``target`` (the annotator's own undos
    of later decisions do not count)."""
    later = conn.execute(
        sa.select(events.c.id, events.c.actor, events.c.action).where(
            events.c.tile_id == target.tile_id,
            events.c.id > target.id,
            events.c.action.in_((*UNDOABLE, "undo", "bulk_accept")),
        )
    ).all()
    for event in later:
        if event.actor != actor or (event.action != "undo" and event.id not in undone):
            raise Conflict(current_decision(conn, str(target.tile_id)))


def _restore_sample(
    conn: sa.Connection, event: sa.Row[Any], sample: Mapping[str, Any], validator: Validator
) -> dict[str, Any]:
    tile_id = str(event.tile_id)
    current = current_decision(conn, tile_id)
    if current is None:
        raise Conflict(current)
    before = dict(event.before or {})
    if before.get("status", "unreviewed") == "unreviewed":
        conn.execute(sa.delete(decisions).where(decisions.c.tile_id == tile_id))
        return {"status": "unreviewed", "revision": 0}
    fixed: dict[str, Any] = {}
    if before.get("status") == "fixed":
        fixed, _ = build_fix(
            sample,
            str(before.get("gcg_caption") or ""),
            before.get("mask_refs") or [],
            validator,
            new_masks=before.get("new_masks") or [],
        )
    values = {
        "status": before["status"],
        "reviewer": before.get("reviewer") or event.actor,
        "decided_at": utcnow(),
        "revision": int(current["revision"]) + 1,
        "note": before.get("note"),
        **{k: fixed.get(k) for k in ("gcg_caption", "caption", "phrases", "masks", "mask_refs", "new_masks")},
    }
    conn.execute(sa.update(decisions).where(decisions.c.tile_id == tile_id).values(**values))
    return {"status": values["status"], "revision": values["revision"]}


def _restore_phrase(conn: sa.Connection, event: sa.Row[Any]) -> dict[str, Any]:
    tile_id = str(event.tile_id)
    if current_decision(conn, tile_id) is not None:
        raise Conflict(current_decision(conn, tile_id))
    before = dict(event.before or {})
    phrase = int(before["phrase"])
    where = (phrase_decisions.c.tile_id == tile_id, phrase_decisions.c.phrase == phrase)
    if before.get("status") is None:
        conn.execute(sa.delete(phrase_decisions).where(*where))
    else:
        conn.execute(
            sa.update(phrase_decisions)
            .where(*where)
            .values(
                status=before["status"], text=before.get("text"), reviewer=event.actor, decided_at=utcnow()
            )
        )
    return {"phrase": phrase, "phrase_status": before.get("status")}


def undo_last(
    engine: Engine,
    actor: str,
    load_sample: Callable[[str], Mapping[str, Any] | None],
    validator: Validator = validate_fixed,
) -> dict[str, Any]:
    """Take back ``actor``'s last decision; returns ``{"tile_id", "undid": [actions], "state"}``.

    Args:
        engine: the review database.
        actor: the annotator.
        load_sample: tile id -> samples row (to rebuild an earlier fix).
        validator: re-validates a restored fix.

    Raises:
        NothingToUndo: no decision of ``actor`` is left to take back.
        Conflict: someone else changed the tile since.
    """
    with engine.begin() as conn:
        stack, undone = _undoable(conn, actor)
        if not stack:
            raise NothingToUndo("nothing to undo")
        targets = [stack[0]]
        if stack[0].action == "phrases_done" and len(stack) > 1 and stack[1].action in PHRASE_ACTIONS:
            targets.append(stack[1])
        undone |= {int(e.id) for e in targets}
        _check_untouched(conn, targets[-1], actor, undone)
        tile_id = str(targets[0].tile_id)
        state: dict[str, Any] = {}
        for event in targets:
            if event.action in SAMPLE_ACTIONS:
                sample = load_sample(tile_id) or {"tile_id": tile_id}
                state = _restore_sample(conn, event, sample, validator)
            else:
                state = {**state, **_restore_phrase(conn, event)}
            log_event(
                conn,
                actor=actor,
                action="undo",
                tile_id=tile_id,
                base_revision=event.revision,
                revision=state.get("revision", event.revision),
                before=event.after,
                after={"undid": int(event.id), "action": event.action, "state": state},
            )
        conn.execute(sa.delete(assignments).where(assignments.c.tile_id == tile_id))
        if state.get("status", "unreviewed") == "unreviewed":
            conn.execute(
                sa.insert(assignments).values(tile_id=tile_id, annotator=actor, assigned_at=utcnow())
            )
    return {"tile_id": tile_id, "undid": [e.action for e in targets], "state": state}
