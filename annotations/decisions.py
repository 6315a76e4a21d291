"""Recording review decisions: accept, reject, fix, bulk accept, with optimistic locking.

Every decision names the ``revision`` it was based on (0 for a tile nobody has reviewed). The write
succeeds only if that is still the current revision, so when two annotators save the same tile the
second gets a ``Conflict`` carrying the current decision; the refused attempt itself is kept in the
event log, so nothing an annotator typed is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from .db import assignments, decision_dict, decisions, log_event, sample_index, utcnow
from .validate import Flag, has_errors, parse_gcg, validate_fixed

ACTION_STATUS = {"accept": "accepted", "reject": "rejected", "fix": "fixed"}

Validator = Callable[..., list[Flag]]


class Conflict(Exception):
    """The tile changed since the revision the decision was based on."""

    def __init__(self, current: dict[str, Any] | None) -> None:
        revision = current["revision"] if current else 0
        super().__init__(f"the sample is at revision {revision}")
        self.current = current


class FixRejected(Exception):
    """A fix that does not re-validate; ``flags`` says why."""

    def __init__(self, flags: list[Flag]) -> None:
        super().__init__("; ".join(f["detail"] for f in flags if f["severity"] == "error"))
        self.flags = flags


MAX_NEW_MASKS = 200
MAX_NEW_MASK_CHARS = 2_000_000


def _new_mask_problems(sample: Mapping[str, Any], new_masks: Sequence[Mapping[str, Any]]) -> list[Flag]:
    """Masks drawn in the app must be COCO compressed RLEs of the tile's size (the same checks as any mask
    follow in the validator)."""
    flags: list[Flag] = []
    if len(new_masks) > MAX_NEW_MASKS:
        return [Flag(code="new_mask_limit", severity="error", detail=f"more than {MAX_NEW_MASKS} new masks")]
    if sum(len(str(m.get("counts") or "")) for m in new_masks) > MAX_NEW_MASK_CHARS:
        return [Flag(code="new_mask_limit", severity="error", detail="the new masks are too large")]
    height, width = sample.get("height"), sample.get("width")
    for index, mask in enumerate(new_masks):
        got = list(mask.get("size") or [])
        size = [height, width]
        if height is not None and width is not None and got != [int(height), int(width)]:
            detail = f"new mask {index} is {got}, the tile is {size}"
            flags.append(Flag(code="mask_size_mismatch", severity="error", detail=detail))
    return flags


def build_fix(
    sample: Mapping[str, Any],
    gcg_caption: str,
    mask_refs: Sequence[int | None],
    validator: Validator = validate_fixed,
    new_masks: Sequence[Mapping[str, Any]] = (),
) -> tuple[dict[str, Any], list[Flag]]:
    """Turn an edited caption into a fixed sample and re-validate it.

    Args:
        sample: the original samples row (``phrases``, ``masks``).
        gcg_caption: the edited caption with ``<p> phrase </p> [SEG]`` markup.
        mask_refs: for each phrase of the edited caption, the index of the mask it is linked to (None: not
            linked): ``0 .. n-1`` are the sample's ``n`` original masks, ``n + k`` is ``new_masks[k]``.
        validator: ``validate_fixed`` or a drop-in replacement.
        new_masks: masks drawn or corrected by the annotator (COCO compressed RLE, the tile's size);
            validated like every other mask.

    Returns:
        ``({gcg_caption, caption, phrases, masks, mask_refs, new_masks}, flags)``.

    Raises:
        FixRejected: the fix has error flags.
    """
    original_phrases = list(sample.get("phrases") or [])
    original_masks = list(sample.get("masks") or [])
    parsed = parse_gcg(gcg_caption)
    drawn = [{"size": list(m.get("size") or []), "counts": m.get("counts")} for m in new_masks]
    available = original_masks + drawn
    flags: list[Flag] = _new_mask_problems(sample, drawn)
    masks: list[dict[str, Any]] = []
    phrases: list[dict[str, Any]] = []
    for index, ref in enumerate(mask_refs):
        if ref is not None and not 0 <= ref < len(available):
            flags.append(
                Flag(code="mask_ref_invalid", severity="error", detail=f"phrase {index}: no mask {ref}")
            )
        elif ref is not None:
            masks.append(dict(available[ref]))
    if len(mask_refs) != len(parsed.phrases):
        detail = f"{len(mask_refs)} mask links for {len(parsed.phrases)} phrases"
        flags.append(Flag(code="phrase_count_mismatch", severity="error", detail=detail))
    for phrase, ref in zip(parsed.phrases, mask_refs, strict=False):
        source = original_phrases[ref] if ref is not None and 0 <= ref < len(original_phrases) else {}
        phrases.append(
            {
                "text": phrase.text,
                "start": phrase.start,
                "end": phrase.end,
                "instance_ids": list(source.get("instance_ids") or []),
                "category": source.get("category") or "",
                "kind": source.get("kind") or "instance",
            }
        )
    flags.extend(validator(parsed.gcg_caption, masks, phrases))
    if has_errors(flags):
        raise FixRejected(flags)
    fixed = {
        "gcg_caption": parsed.gcg_caption,
        "caption": parsed.caption,
        "phrases": phrases,
        "masks": masks,
        "mask_refs": list(mask_refs),
        "new_masks": drawn or None,
    }
    return fixed, flags


def _summary(decision: Mapping[str, Any] | None, text: tuple[str, list[int | None]] | None) -> dict[str, Any]:
    """What an event records of a tile's state: status and revision, plus the caption when ``text``."""
    if decision is None:
        summary: dict[str, Any] = {"status": "unreviewed", "revision": 0}
    else:
        summary = {k: decision.get(k) for k in ("status", "revision", "reviewer", "note")}
    if text is not None:
        summary.update(gcg_caption=text[0], mask_refs=text[1])
        if decision is not None and decision.get("new_masks"):
            summary["new_masks"] = decision["new_masks"]
    return summary


def _text_of(decision: Mapping[str, Any] | None, sample: Mapping[str, Any]) -> tuple[str, list[int | None]]:
    """The caption a tile currently shows: its fix, or the original."""
    if decision is not None and decision.get("status") == "fixed":
        return str(decision.get("gcg_caption") or ""), list(decision.get("mask_refs") or [])
    return str(sample.get("gcg_caption") or ""), list(range(len(sample.get("masks") or [])))


def current_decision(conn: sa.Connection, tile_id: str) -> dict[str, Any] | None:
    return decision_dict(conn.execute(sa.select(decisions).where(decisions.c.tile_id == tile_id)).first())


def record_decision(
    engine: Engine,
    *,
    sample: Mapping[str, Any],
    actor: str,
    action: str,
    base_revision: int,
    note: str | None = None,
    fixed: Mapping[str, Any] | None = None,
    event_action: str | None = None,
) -> dict[str, Any]:
    """Store a decision on ``sample`` if it is still at ``base_revision``; returns the new decision.

    Raises:
        Conflict: the tile is at another revision (the attempt is logged as a ``conflict`` event).
        ValueError: unknown action, or a fix without its ``fixed`` content.
    """
    if action not in ACTION_STATUS:
        raise ValueError(f"unknown action {action!r}")
    if (action == "fix") != (fixed is not None):
        raise ValueError("a fix needs its fixed content, and only a fix has one")
    tile_id = str(sample["tile_id"])
    fixed = dict(fixed or {})
    values = {
        "status": ACTION_STATUS[action],
        "reviewer": actor,
        "decided_at": utcnow(),
        "revision": base_revision + 1,
        "note": note,
        "gcg_caption": fixed.get("gcg_caption"),
        "caption": fixed.get("caption"),
        "phrases": fixed.get("phrases"),
        "masks": fixed.get("masks"),
        "mask_refs": fixed.get("mask_refs"),
        "new_masks": fixed.get("new_masks"),
    }
    try:
        with engine.begin() as conn:
            current = current_decision(conn, tile_id)
            if (current["revision"] if current else 0) != base_revision:
                raise Conflict(current)
            if current is None:
                try:
                    with conn.begin_nested():
                        conn.execute(sa.insert(decisions).values(tile_id=tile_id, **values))
                except IntegrityError as exc:  # another first decision won the race
                    raise Conflict(current_decision(conn, tile_id)) from exc
            else:
                result = conn.execute(
                    sa.update(decisions)
                    .where(decisions.c.tile_id == tile_id, decisions.c.revision == base_revision)
                    .values(**values)
                )
                if result.rowcount != 1:
                    raise Conflict(current_decision(conn, tile_id))
            conn.execute(sa.delete(assignments).where(assignments.c.tile_id == tile_id))
            new = current_decision(conn, tile_id)

            def text_changes(decision: Mapping[str, Any] | None) -> bool:
                return action == "fix" or (decision is not None and decision.get("status") == "fixed")

            log_event(
                conn,
                actor=actor,
                action=event_action or action,
                tile_id=tile_id,
                base_revision=base_revision,
                revision=base_revision + 1,
                before=_summary(current, _text_of(current, sample) if text_changes(current) else None),
                after=_summary(new, _text_of(new, sample) if text_changes(new) else None),
            )
    except Conflict as conflict:
        attempted = {"status": values["status"], "note": note}
        if action == "fix":
            attempted.update(gcg_caption=values["gcg_caption"], mask_refs=values["mask_refs"])
        with engine.begin() as conn:
            log_event(
                conn,
                actor=actor,
                action="conflict",
                tile_id=tile_id,
                base_revision=base_revision,
                revision=conflict.current["revision"] if conflict.current else 0,
                before=_summary(conflict.current, None),
                after=attempted,
            )
        raise
    assert new is not None
    return new


def bulk_accept(
    engine: Engine,
    tile_ids: Sequence[str],
    *,
    actor: str,
    lease_cutoff: datetime,
    chunk_size: int = 500,
) -> list[str]:
    """Accept every tile nobody has reviewed yet and nobody else is working on; returns their ids.

    Tiles with a decision, or assigned to another annotator since ``lease_cutoff``, are skipped. Each
    accepted tile gets its own ``bulk_accept`` event. Work is done in transactions of ``chunk_size``
    tiles; a chunk that races with another writer is redone tile by tile.
    """
    accepted: list[str] = []
    for begin in range(0, len(tile_ids), chunk_size):
        chunk = list(dict.fromkeys(tile_ids[begin : begin + chunk_size]))
        try:
            accepted.extend(_bulk_accept_chunk(engine, chunk, actor, lease_cutoff))
        except IntegrityError:
            for tile_id in chunk:
                try:
                    record_decision(
                        engine,
                        sample={"tile_id": tile_id},
                        actor=actor,
                        action="accept",
                        base_revision=0,
                        event_action="bulk_accept",
                    )
                    accepted.append(tile_id)
                except Conflict:
                    continue
    return accepted


@dataclass(frozen=True)
class BulkSelection:
    """The tiles a lead bulk-accepts: undecided, with their worst flag severity in ``severities``; only
    those with flag code ``flag_code`` when given, only queued ones with ``queued_only``."""

    severities: Sequence[str]
    flag_code: str | None = None
    queued_only: bool = False


@dataclass(frozen=True)
class BulkOutcome:
    """How many tiles a bulk accept found (dry run) or accepted, and the first of their ids by tile id."""

    count: int
    tile_ids: list[str]


def _bulk_candidates(selection: BulkSelection) -> sa.Select[Any]:
    si = sample_index
    query = (
        sa.select(si.c.tile_id)
        .outerjoin(decisions, decisions.c.tile_id == si.c.tile_id)
        .where(si.c.max_severity.in_(selection.severities), decisions.c.tile_id.is_(None))
        .order_by(si.c.tile_id)
    )
    if selection.flag_code is not None:
        query = query.where(si.c.flag_codes.contains(f"|{selection.flag_code}|", autoescape=True))
    if selection.queued_only:
        query = query.where(si.c.position.is_not(None))
    return query


def preview_bulk_accept(engine: Engine, selection: BulkSelection, *, shown: int = 50) -> BulkOutcome:
    """Dry run: how many tiles ``selection`` matches now, and the first ``shown`` of their ids."""
    query = _bulk_candidates(selection)
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar_one()
        tile_ids = list(conn.execute(query.limit(shown)).scalars())
    return BulkOutcome(int(count), tile_ids)


def bulk_accept_selected(
    engine: Engine,
    selection: BulkSelection,
    *,
    actor: str,
    lease_cutoff: Callable[[], datetime],
    shown: int = 50,
    page_size: int = 2000,
) -> BulkOutcome:
    """Accept the tiles ``selection`` matches (see :func:`bulk_accept`), read ``page_size`` tile ids at
    a time in tile id order so memory stays bounded by one page; ``lease_cutoff()`` is asked once per
    page. Returns how many were accepted and the first ``shown`` of their ids."""
    query = _bulk_candidates(selection)
    accepted: list[str] = []
    n_accepted = 0
    cursor = ""
    while True:
        with engine.connect() as conn:
            page = list(conn.execute(query.where(sample_index.c.tile_id > cursor).limit(page_size)).scalars())
        if not page:
            break
        cursor = page[-1]
        done = bulk_accept(engine, page, actor=actor, lease_cutoff=lease_cutoff())
        n_accepted += len(done)
        accepted.extend(done[: max(0, shown - len(accepted))])
    return BulkOutcome(n_accepted, accepted)


def _bulk_accept_chunk(engine: Engine, ids: list[str], actor: str, lease_cutoff: datetime) -> list[str]:
    with engine.begin() as conn:
        decided = set(
            conn.execute(sa.select(decisions.c.tile_id).where(decisions.c.tile_id.in_(ids))).scalars()
        )
        held = set(
            conn.execute(
                sa.select(assignments.c.tile_id).where(
                    assignments.c.tile_id.in_(ids),
                    assignments.c.annotator != actor,
                    assignments.c.assigned_at >= lease_cutoff,
                )
            ).scalars()
        )
        todo = [t for t in ids if t not in decided and t not in held]
        if not todo:
            return []
        now = utcnow()
        conn.execute(
            sa.insert(decisions),
            [
                {"tile_id": t, "status": "accepted", "reviewer": actor, "decided_at": now, "revision": 1}
                for t in todo
            ],
        )
        conn.execute(sa.delete(assignments).where(assignments.c.tile_id.in_(todo)))
        after = {"status": "accepted", "revision": 1, "reviewer": actor, "note": None}
        for tile_id in todo:
            log_event(
                conn,
                actor=actor,
                action="bulk_accept",
                tile_id=tile_id,
                base_revision=0,
                revision=1,
                before=_summary(None, None),
                after=after,
            )
    return todo
