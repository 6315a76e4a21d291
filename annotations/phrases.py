"""Phrase-level decisions: accept, reject or fix one grounded phrase of a sample.

Each decision is a ``phrase_decisions`` row (one per tile and phrase index of the original sample) and
an audit event (``phrase_accept`` / ``phrase_reject`` / ``phrase_fix``). When every phrase of a tile is
decided, the tile gets its own decision from them, recorded as a ``phrases_done`` event:

- every phrase accepted: the sample is ``accepted``;
- every phrase rejected: the sample is ``rejected`` (no grounding is left worth keeping);
- otherwise it is ``fixed``: fixed phrases take their new words, rejected ones lose their grounding
  (their words stay in the caption, their mask leaves the sample), and the result is validated like
  any other fix (``decisions.build_fix``).

Phrase decisions apply while the tile has no decision of its own (its revision must still be the one
the annotator saw); a decided tile is changed with a sample-level decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .db import log_event, phrase_decisions, utcnow
from .decisions import Conflict, FixRejected, Validator, build_fix, current_decision, record_decision
from .validate import Flag, parse_gcg, validate_fixed

PHRASE_ACTIONS = {"accept": "accepted", "reject": "rejected", "fix": "fixed"}
_MARKUP = ("<p>", "</p>", "[SEG]")


def phrase_states(conn: sa.Connection, tile_id: str) -> dict[int, dict[str, Any]]:
    """Phrase index -> ``{status, text, reviewer}`` of the tile's phrase decisions."""
    rows = conn.execute(sa.select(phrase_decisions).where(phrase_decisions.c.tile_id == tile_id))
    return {int(r.phrase): {"status": r.status, "text": r.text, "reviewer": r.reviewer} for r in rows}


def _state(row: Mapping[str, Any] | None, phrase: int) -> dict[str, Any]:
    if row is None:
        return {"phrase": phrase, "status": None, "text": None}
    return {"phrase": phrase, "status": row["status"], "text": row.get("text")}


def combined_fix(
    sample: Mapping[str, Any], states: Mapping[int, Mapping[str, Any]]
) -> tuple[str, list[int | None]]:
    """The caption and mask links that the phrase decisions make of the original sample."""
    original = str(sample.get("gcg_caption") or "")
    parsed = parse_gcg(original)
    parts: list[str] = []
    refs: list[int | None] = []
    cursor = 0
    caption = parsed.caption
    for index, phrase in enumerate(parsed.phrases):
        parts.append(caption[cursor : phrase.start])
        state = states.get(index, {})
        if state.get("status") == "rejected":
            parts.append(phrase.text)
        else:
            text = state.get("text") if state.get("status") == "fixed" else phrase.text
            parts.append(f"<p> {text} </p> [SEG]")
            refs.append(index)
        cursor = phrase.end
    parts.append(caption[cursor:])
    return "".join(parts), refs


def record_phrase_decision(
    engine: Engine,
    *,
    sample: Mapping[str, Any],
    actor: str,
    phrase: int,
    action: str,
    base_revision: int,
    text: str | None = None,
    validator: Validator = validate_fixed,
) -> dict[str, Any]:
    """Decide one phrase; returns ``{"phrases": {index: state}, "decision": tile decision or None,
    "flags": validation flags of the combined fix}``.

    Raises:
        Conflict: the tile was decided or changed since ``base_revision``.
        FixRejected: a fixed phrase's words are empty or contain markup, or the combined fix does not
            validate (nothing is stored then).
        ValueError: unknown action or phrase index.
    """
    if action not in PHRASE_ACTIONS:
        raise ValueError(f"unknown phrase action {action!r}")
    n_phrases = len(sample.get("phrases") or [])
    if not 0 <= phrase < n_phrases:
        raise ValueError(f"the sample has no phrase {phrase} (it has {n_phrases})")
    words = " ".join((text or "").split())
    if action == "fix" and (not words or any(token in words for token in _MARKUP)):
        detail = "the phrase's words are empty" if not words else "the phrase's words contain markup"
        raise FixRejected([Flag(code="phrase_text_invalid", severity="error", detail=detail)])
    tile_id = str(sample["tile_id"])
    status = PHRASE_ACTIONS[action]
    flags: list[Flag] = []
    with engine.begin() as conn:
        current = current_decision(conn, tile_id)
        if (current["revision"] if current else 0) != base_revision or current is not None:
            raise Conflict(current)
        states = phrase_states(conn, tile_id)
        before = _state(states.get(phrase), phrase)
        states[phrase] = {"status": status, "text": words if action == "fix" else None, "reviewer": actor}
        complete = len(states) >= n_phrases and all(i in states for i in range(n_phrases))
        fixed: dict[str, Any] | None = None
        sample_action = None
        if complete:
            statuses = {states[i]["status"] for i in range(n_phrases)}
            if statuses == {"accepted"}:
                sample_action = "accept"
            elif statuses == {"rejected"}:
                sample_action = "reject"
            else:
                sample_action = "fix"
                gcg, refs = combined_fix(sample, states)
                fixed, flags = build_fix(sample, gcg, refs, validator)  # raises FixRejected
        values = {"status": status, "text": states[phrase]["text"], "reviewer": actor, "decided_at": utcnow()}
        updated = conn.execute(
            sa.update(phrase_decisions)
            .where(phrase_decisions.c.tile_id == tile_id, phrase_decisions.c.phrase == phrase)
            .values(**values)
        )
        if updated.rowcount == 0:
            conn.execute(sa.insert(phrase_decisions).values(tile_id=tile_id, phrase=phrase, **values))
        log_event(
            conn,
            actor=actor,
            action=f"phrase_{action}",
            tile_id=tile_id,
            base_revision=base_revision,
            revision=base_revision,
            before=before,
            after={"phrase": phrase, "status": status, "text": values["text"]},
        )
    decision = None
    if sample_action is not None:  # a Conflict here (someone decided the tile meanwhile) reaches the caller
        decision = record_decision(
            engine,
            sample=sample,
            actor=actor,
            action=sample_action,
            base_revision=base_revision,
            note="decided phrase by phrase",
            fixed=fixed,
            event_action="phrases_done",
        )
    with engine.connect() as conn:
        result_states = phrase_states(conn, tile_id)
    return {"phrases": result_states, "decision": decision, "flags": flags}


__all__ = ["PHRASE_ACTIONS", "FixRejected", "combined_fix", "phrase_states", "record_phrase_decision"]
