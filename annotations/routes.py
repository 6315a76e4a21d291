"""The review app's HTTP routes (pages, login, queue, samples, decisions, undo, users, reports), on one
router that :func:`annotations.app.create_app` includes. Every handler reads its state from the request
(``request.app.state.review``), never from a closure."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse

from . import auth, eventlog
from .app import (
    PUBLIC_DECISION,
    STATIC_DIR,
    BulkAcceptRequest,
    DecisionRequest,
    FixPayload,
    LoginRequest,
    PhraseDecisionRequest,
    UserChange,
    UserRequest,
    _clean,
    _clean_dict,
    _ctx,
    _error,
    _get_sample,
    _queue_filter,
    _sample_payload,
    client_address,
    csrf_session,
    current_session,
    lead_csrf_session,
    lead_session,
)
from .db import ROLES
from .decisions import (
    BulkSelection,
    Conflict,
    FixRejected,
    build_fix,
    bulk_accept_selected,
    preview_bulk_accept,
    record_decision,
)
from .double import AlreadyReviewed, agreement_report, record_review
from .index import list_facets
from .phrases import record_phrase_decision
from .queue import QueueFilter
from .tile_state import double_stage
from .undo import NothingToUndo, undo_last

router = APIRouter()


@router.get("/", include_in_schema=False)
def index(request: Request) -> Response:
    if auth.get_session(_ctx(request).engine, request.cookies.get(auth.SESSION_COOKIE)) is None:
        return RedirectResponse("/login", status_code=303)
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})


@router.get("/login", include_in_schema=False)
def login_page() -> Response:
    return FileResponse(STATIC_DIR / "login.html", headers={"Cache-Control": "no-store"})


@router.post("/api/login")
def login(body: LoginRequest, request: Request) -> Response:
    ctx = _ctx(request)
    address = client_address(request)
    wait = ctx.throttle.wait_s(address)
    if wait > 0:
        seconds = math.ceil(wait)
        response = _error(
            429,
            "throttled",
            f"too many failed logins from here; try again in {seconds} s",
            retry_after=seconds,
        )
        response.headers["Retry-After"] = str(seconds)
        return response
    if not auth.authenticate(ctx.engine, body.name, body.password):
        ctx.throttle.failed(address)
        return _error(401, "login", "wrong name or password")
    ctx.throttle.succeeded(address)
    token, session = auth.create_session(ctx.engine, body.name, ctx.session_ttl)
    response = JSONResponse({"user": session.user, "csrf_token": session.csrf_token, "role": session.role})
    response.set_cookie(
        auth.SESSION_COOKIE,
        token,
        max_age=int(ctx.session_ttl.total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=ctx.secure_cookies,
    )
    return response


@router.post("/api/logout")
def logout(request: Request, session: auth.Session = Depends(csrf_session)) -> Response:
    auth.end_session(_ctx(request).engine, request.cookies.get(auth.SESSION_COOKIE, ""), session.user)
    response = JSONResponse({"ok": True})
    response.delete_cookie(auth.SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/api/me")
def me(session: auth.Session = Depends(current_session)) -> dict[str, Any]:
    return {"user": session.user, "csrf_token": session.csrf_token, "role": session.role}


@router.get("/api/queue/next")
def queue_next(
    request: Request,
    after: str | None = Query(default=None, max_length=255),
    where: QueueFilter = Depends(_queue_filter),
    session: auth.Session = Depends(current_session),
) -> dict[str, Any]:
    # A GET that assigns: harmless to repeat, and SameSite=Strict keeps other sites from causing it.
    tile_id = _ctx(request).queue.next_for(session.user, after, where)
    return {"tile_id": tile_id}


@router.get("/api/queue/peek")
def queue_peek(
    request: Request,
    after: str | None = Query(default=None, max_length=255),
    where: QueueFilter = Depends(_queue_filter),
    session: auth.Session = Depends(current_session),
) -> dict[str, Any]:
    return {"tile_id": _ctx(request).queue.peek(session.user, after, where)}


@router.get("/api/queue/summary")
def queue_summary(
    request: Request,
    where: QueueFilter = Depends(_queue_filter),
    session: auth.Session = Depends(current_session),
) -> dict[str, Any]:
    ctx = _ctx(request)
    mine_today = eventlog.count_actions(
        ctx.engine, actor=session.user, actions=eventlog.DECISION_ACTIONS, since=eventlog.start_of_day()
    )
    return {
        "total": ctx.queue.count(where),
        "remaining": ctx.queue.remaining(where),
        "in_progress": ctx.queue.count_in_progress(session.user),
        "samples": len(ctx.store),
        "today": mine_today,
    }


@router.get("/api/queue/facets")
def queue_facets(request: Request, session: auth.Session = Depends(current_session)) -> dict[str, Any]:
    ctx = _ctx(request)
    facets = list_facets(ctx.engine)
    # Leads also see how many samples wait for adjudication (two reviewers disagreed).
    adjudicate = ctx.queue.remaining(QueueFilter(adjudicate=True)) if session.is_lead else None
    return {
        "flag_codes": facets.get("flag_code", []),
        "categories": facets.get("category", []),
        "adjudicate": adjudicate,
    }


@router.get("/api/samples/{tile_id}")
def get_sample(
    tile_id: str, request: Request, session: auth.Session = Depends(current_session)
) -> dict[str, Any]:
    ctx = _ctx(request)
    return _sample_payload(ctx, tile_id, _get_sample(ctx, tile_id), session.user, session.is_lead)


@router.get("/api/samples/{tile_id}/image/{layer}")
def get_image(
    tile_id: str,
    layer: Literal["tile", "marks"],
    request: Request,
    _: auth.Session = Depends(current_session),
) -> Response:
    path = _ctx(request).store.image_path(tile_id, layer)
    if path is None:
        raise HTTPException(status_code=404, detail="no such image")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/api/samples/{tile_id}/validate")
def validate_draft(
    tile_id: str, body: FixPayload, request: Request, _: auth.Session = Depends(csrf_session)
) -> dict[str, Any]:
    ctx = _ctx(request)
    try:
        fixed, flags = build_fix(
            _get_sample(ctx, tile_id),
            body.gcg_caption,
            body.mask_refs,
            ctx.validator,
            new_masks=[m.model_dump() for m in body.new_masks],
        )
    except FixRejected as rejected:
        return {"ok": False, "flags": rejected.flags}
    return {"ok": True, "flags": flags, "caption": fixed["caption"]}


@router.post("/api/samples/{tile_id}/decision")
def decide(
    tile_id: str, body: DecisionRequest, request: Request, session: auth.Session = Depends(csrf_session)
) -> Response:
    ctx = _ctx(request)
    sample = _get_sample(ctx, tile_id)
    fixed: dict[str, Any] | None = None
    flags: list[Any] = []
    if body.action == "fix":
        if body.fix is None:
            return _error(422, "fix", "a fix needs its edited caption and mask links")
        try:
            fixed, flags = build_fix(
                sample,
                body.fix.gcg_caption,
                body.fix.mask_refs,
                ctx.validator,
                new_masks=[m.model_dump() for m in body.fix.new_masks],
            )
        except FixRejected as rejected:
            return _error(422, "validation", "the fix does not validate", flags=rejected.flags)
    stage = double_stage(ctx.engine, tile_id)
    if stage == "adjudication" and not session.is_lead:
        return _error(403, "adjudication", "its two reviewers disagreed: a lead decides this sample")
    if stage == "review":
        try:
            result = record_review(
                ctx.engine,
                sample=sample,
                actor=session.user,
                action=body.action,
                note=body.note,
                fixed=fixed,
            )
        except AlreadyReviewed as exc:
            return _error(409, "reviewed", str(exc))
        except Conflict:
            stage = "decided"  # decided meanwhile: the normal path reports the conflict
        else:
            decided = result["decision"]
            public_decision = None if decided is None else {k: decided[k] for k in PUBLIC_DECISION}
            body_out = {"decision": public_decision, "outcome": result["outcome"], "flags": flags}
            return JSONResponse(_clean({**body_out, "reviews": result["reviews"]}))
    try:
        decision = record_decision(
            ctx.engine,
            sample=sample,
            actor=session.user,
            action=body.action,
            base_revision=body.base_revision,
            note=body.note,
            fixed=fixed,
            event_action=f"adjudicate_{body.action}" if stage == "adjudication" else None,
        )
    except Conflict as conflict:
        current = conflict.current or {}
        who = current.get("reviewer", "someone")
        message = (
            f"{who} saved this sample ({current.get('status', 'changed')}, revision "
            f"{current.get('revision', 0)}) after you opened it; your decision was not applied."
        )
        public = {k: current.get(k) for k in ("status", "reviewer", "decided_at", "revision", "note")}
        return _error(409, "conflict", message, current=public)
    public = {k: decision[k] for k in ("status", "reviewer", "decided_at", "revision", "note")}
    return JSONResponse(_clean({"decision": public, "flags": flags}))


@router.post("/api/samples/{tile_id}/phrases/{phrase}/decision")
def decide_phrase(
    tile_id: str,
    phrase: int,
    body: PhraseDecisionRequest,
    request: Request,
    session: auth.Session = Depends(csrf_session),
) -> Response:
    ctx = _ctx(request)
    sample = _get_sample(ctx, tile_id)
    if double_stage(ctx.engine, tile_id) in ("review", "adjudication"):
        return _error(409, "double_review", "samples reviewed by two annotators are decided as a whole")
    try:
        result = record_phrase_decision(
            ctx.engine,
            sample=sample,
            actor=session.user,
            phrase=phrase,
            action=body.action,
            base_revision=body.base_revision,
            text=body.text,
            validator=ctx.validator,
        )
    except ValueError as exc:
        return _error(422, "phrase", str(exc))
    except FixRejected as rejected:
        return _error(422, "validation", "the phrase decision does not validate", flags=rejected.flags)
    except Conflict as conflict:
        current = conflict.current or {}
        message = (
            f"{current.get('reviewer', 'someone')} decided this sample ({current.get('status', 'changed')}) "
            "after you opened it; phrase decisions apply only to undecided samples."
        )
        public = {k: current.get(k) for k in ("status", "reviewer", "decided_at", "revision", "note")}
        return _error(409, "conflict", message, current=public)
    decision = result["decision"]
    public_decision = (
        None
        if decision is None
        else {k: decision[k] for k in ("status", "reviewer", "decided_at", "revision", "note")}
    )
    return JSONResponse(
        _clean(
            {
                "phrase_decisions": {str(k): v for k, v in sorted(result["phrases"].items())},
                "decision": public_decision,
                "flags": result["flags"],
            }
        )
    )


@router.post("/api/undo")
def undo(request: Request, session: auth.Session = Depends(csrf_session)) -> Response:
    ctx = _ctx(request)
    try:
        result = undo_last(ctx.engine, session.user, ctx.store.get, ctx.validator)
    except NothingToUndo:
        return _error(404, "undo", "nothing of yours to undo")
    except Conflict as conflict:
        who = (conflict.current or {}).get("reviewer", "someone")
        return _error(409, "conflict", f"{who} changed that sample since; it cannot be undone")
    return JSONResponse(_clean(result))


@router.post("/api/bulk-accept")
def bulk(
    body: BulkAcceptRequest, request: Request, session: auth.Session = Depends(lead_csrf_session)
) -> Any:
    ctx = _ctx(request)
    selection = BulkSelection(body.severities, body.flag_code, body.queued_only)
    if body.dry_run:
        found = preview_bulk_accept(ctx.engine, selection)
        return {"dry_run": True, "count": found.count, "tile_ids": found.tile_ids}
    done = bulk_accept_selected(
        ctx.engine, selection, actor=session.user, lease_cutoff=ctx.queue.lease_cutoff
    )
    return {"dry_run": False, "count": done.count, "tile_ids": done.tile_ids}


@router.get("/api/users")
def list_users(request: Request, _: auth.Session = Depends(lead_session)) -> dict[str, Any]:
    return {"users": auth.list_users(_ctx(request).engine), "roles": list(ROLES)}


@router.post("/api/users")
def create_user(
    body: UserRequest, request: Request, session: auth.Session = Depends(lead_csrf_session)
) -> Any:
    try:
        auth.add_user(_ctx(request).engine, body.name, body.password, actor=session.user, role=body.role)
    except ValueError as exc:
        return _error(422, "user", str(exc))
    return {"name": body.name, "role": body.role}


@router.post("/api/users/{name}")
def change_user(
    name: str, body: UserChange, request: Request, session: auth.Session = Depends(lead_csrf_session)
) -> Any:
    changes = body.model_dump(exclude_none=True)  # role and/or active, in that order
    if name == session.user and (body.active is False or body.role == "annotator"):
        return _error(422, "user", "leads cannot demote or deactivate themselves")
    if not changes:
        return _error(404, "user", "nothing to change")
    if not auth.update_user(_ctx(request).engine, name, actor=session.user, **changes):
        return _error(404, "user", f"no user {name!r}")
    return {"name": name, **changes}


@router.get("/api/report")
def report(request: Request, _: auth.Session = Depends(lead_session)) -> dict[str, Any]:
    return _clean_dict(agreement_report(_ctx(request).engine))


@router.get("/api/stats")
def stats(request: Request, _: auth.Session = Depends(lead_session)) -> dict[str, Any]:
    found = eventlog.review_stats(
        _ctx(request).engine,
        counted=(*eventlog.DECISION_ACTIONS, "conflict", "undo"),
        decision_actions=eventlog.DECISION_ACTIONS,
        since=eventlog.start_of_day(),
    )
    annotators = [{"name": a.name, "today": a.today, **a.actions} for a in found.annotators]
    return {"annotators": annotators, "decisions": found.decisions}


@router.get("/api/events")
def list_events(
    request: Request,
    tile_id: str | None = Query(default=None, max_length=255),
    limit: int = Query(default=100, ge=1, le=1000),
    session: auth.Session = Depends(current_session),
) -> dict[str, Any]:
    ctx = _ctx(request)
    if session.is_lead:
        only_mine = False
    elif tile_id is not None:  # blind review: not the other reviewer's events
        only_mine = double_stage(ctx.engine, tile_id) in ("review", "adjudication")
    else:
        only_mine = True
    found = eventlog.list_events(
        ctx.engine, limit=limit, tile_id=tile_id, actor=session.user if only_mine else None
    )
    return _clean_dict({"events": found})


@router.get("/api/events/export")
def export_event_log(request: Request, _: auth.Session = Depends(lead_session)) -> Response:
    engine = _ctx(request).engine

    def lines() -> Iterator[bytes]:
        for event in eventlog.iter_events(engine):
            yield (json.dumps(_clean(event), ensure_ascii=False) + "\n").encode()

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="review-events.jsonl"'},
    )
