"""The review web app: a FastAPI server for the annotator page in ``static/``.

Every data endpoint needs a logged-in session (cookie); every state-changing request also needs the
session's CSRF token in ``X-CSRF-Token`` and, when the browser sends one, a same-origin ``Origin``.
Images are looked up by ``tile_id`` in the samples table; no file path ever comes from a request.

Endpoints (all JSON unless noted; "lead" marks those for leads only):
    POST /api/login, /api/logout; GET /api/me
    GET  /api/queue/next?after=ID (assigns), /api/queue/peek?after=ID, /api/queue/summary,
         /api/queue/facets (all take flag_code= and category= filters)
    GET  /api/samples/{tile_id}; GET /api/samples/{tile_id}/image/{tile|marks} (PNG)
    POST /api/samples/{tile_id}/decision, /api/samples/{tile_id}/phrases/{n}/decision,
         /api/samples/{tile_id}/validate, /api/undo
    GET  /api/events?tile_id=ID
    lead: POST /api/bulk-accept; GET /api/stats, /api/report (two-reviewer agreement),
          /api/events/export (JSON Lines), /api/users, /api/queue/next?adjudicate=1;
          POST /api/users, /api/users/{name}

Login failures are throttled per client address (``auth.LoginThrottle``); behind a reverse proxy the
address is the proxy's ``X-Forwarded-For`` as uvicorn trusts it (``--forwarded-allow-ips``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from . import auth
from .db import (
    ROLES,
    as_utc,
    decision_dict,
    decisions,
    default_db_url,
    events,
    index_facets,
    log_event,
    open_engine,
    sample_index,
    users,
    utcnow,
)
from .decisions import (
    Conflict,
    FixRejected,
    Validator,
    build_fix,
    bulk_accept,
    current_decision,
    record_decision,
)
from .double import AlreadyReviewed, agreement_report, is_double, record_review, review_rows
from .index import ensure_index
from .phrases import phrase_states, record_phrase_decision
from .queue import QueueConfig, QueueFilter, ReviewQueue
from .samples import SampleStore
from .undo import NothingToUndo, undo_last
from .validate import validate_fixed

STATIC_DIR = Path(__file__).parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Events that count as a decision made by an annotator (stats, "you today").
PUBLIC_DECISION = ("status", "reviewer", "decided_at", "revision", "note")
DECISION_ACTIONS = ("accept", "reject", "fix", "bulk_accept", "phrase_accept", "phrase_reject", "phrase_fix")


@dataclass
class ReviewContext:
    """Everything the request handlers share."""

    store: SampleStore
    engine: Engine
    queue: ReviewQueue
    validator: Validator
    secure_cookies: bool
    session_ttl: timedelta
    throttle: auth.LoginThrottle


class LoginRequest(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class MaskRle(BaseModel):
    size: list[int] = Field(min_length=2, max_length=2)
    counts: str = Field(max_length=2_000_000)


class FixPayload(BaseModel):
    gcg_caption: str = Field(max_length=100_000)
    mask_refs: list[int | None] = Field(max_length=10_000)
    # Masks drawn or corrected in the page (COCO compressed RLE); mask_refs[i] >= len(original masks)
    # points into this list.
    new_masks: list[MaskRle] = Field(default_factory=list, max_length=200)


class DecisionRequest(BaseModel):
    action: Literal["accept", "reject", "fix"]
    base_revision: int = Field(ge=0)
    note: str | None = Field(default=None, max_length=4000)
    fix: FixPayload | None = None


class PhraseDecisionRequest(BaseModel):
    action: Literal["accept", "reject", "fix"]
    base_revision: int = Field(ge=0)
    text: str | None = Field(default=None, max_length=2000)


class UserRequest(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    role: Literal["annotator", "lead"] = "annotator"


class UserChange(BaseModel):
    role: Literal["annotator", "lead"] | None = None
    active: bool | None = None


class BulkAcceptRequest(BaseModel):
    severities: list[Literal["none", "info", "warning", "error"]] = Field(min_length=1)
    flag_code: str | None = Field(default=None, max_length=200)
    queued_only: bool = False
    dry_run: bool = True


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null (priors have NaN for unknown lengths)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _clean_dict(value: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], _clean(value))


def _ctx(request: Request) -> ReviewContext:
    ctx: ReviewContext = request.app.state.review
    return ctx


def current_session(request: Request) -> auth.Session:
    """Dependency: the logged-in annotator, or 401."""
    session = auth.get_session(_ctx(request).engine, request.cookies.get(auth.SESSION_COOKIE))
    if session is None:
        raise HTTPException(status_code=401, detail="not logged in")
    return session


def csrf_session(request: Request, session: auth.Session = Depends(current_session)) -> auth.Session:
    """Dependency for state-changing requests: the session, if the request carries its CSRF token."""
    if not auth.csrf_ok(session, request.headers.get(auth.CSRF_HEADER)):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
    return session


def lead_session(session: auth.Session = Depends(current_session)) -> auth.Session:
    """Dependency: a lead's session, or 403."""
    if not session.is_lead:
        raise HTTPException(status_code=403, detail="for leads only")
    return session


def lead_csrf_session(session: auth.Session = Depends(csrf_session)) -> auth.Session:
    """Dependency: a lead's session on a state-changing request with its CSRF token, or 403."""
    if not session.is_lead:
        raise HTTPException(status_code=403, detail="for leads only")
    return session


def client_address(request: Request) -> str:
    """The address login throttling counts against (the peer, or what a trusted proxy forwarded)."""
    return request.client.host if request.client else "unknown"


def _queue_filter(
    flag_code: str | None = Query(default=None, max_length=200),
    category: str | None = Query(default=None, max_length=200),
    adjudicate: bool = Query(default=False),
    session: auth.Session = Depends(current_session),
) -> QueueFilter:
    if adjudicate and not session.is_lead:
        raise HTTPException(status_code=403, detail="the adjudication queue is for leads")
    return QueueFilter(flag_code=flag_code or None, category=category or None, adjudicate=adjudicate)


def _origin_allowed(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _sample_payload(
    ctx: ReviewContext, tile_id: str, sample: dict[str, Any], user: str = "", is_lead: bool = False
) -> dict[str, Any]:
    with ctx.engine.connect() as conn:
        decision = decision_dict(
            conn.execute(sa.select(decisions).where(decisions.c.tile_id == tile_id)).first()
        )
        phrases_decided = phrase_states(conn, tile_id)
        double: dict[str, Any] | None = None
        if is_double(conn, tile_id):
            done = review_rows(conn, tile_id)
            double = {
                "reviews": len(done),
                "mine": next((r["status"] for r in done if r["annotator"] == user), None),
            }
            if is_lead and len(done) >= 2:  # adjudication: the lead sees both reviews
                double["detail"] = [
                    {k: r[k] for k in ("annotator", "status", "note", "decided_at", "fixed")} for r in done
                ]
    original = {k: sample.get(k) for k in ("gcg_caption", "caption", "phrases")}
    if decision and decision["status"] == "fixed":
        current = {k: decision[k] for k in ("gcg_caption", "caption", "phrases", "mask_refs")}
        current["new_masks"] = decision.get("new_masks") or []
    else:
        current = {**original, "mask_refs": list(range(len(sample.get("masks") or []))), "new_masks": []}
    where = ctx.store.location(tile_id) or {}
    public_decision = None
    if decision:
        public_decision = {k: decision[k] for k in ("status", "reviewer", "decided_at", "revision", "note")}
    return _clean_dict(
        {
            "tile_id": tile_id,
            "image_id": sample.get("image_id"),
            "width": sample.get("width"),
            "height": sample.get("height"),
            "lmm_model": sample.get("lmm_model"),
            "prompt_version": sample.get("prompt_version"),
            "flags": sample.get("flags") or [],
            "max_severity": sample.get("max_severity") or "none",
            "masks": sample.get("masks") or [],
            "original": original,
            "current": current,
            "decision": public_decision,
            "revision": decision["revision"] if decision else 0,
            "phrase_decisions": {str(k): v for k, v in sorted(phrases_decided.items())},
            "double_review": double,
            "priors": ctx.store.priors(tile_id),
            "holder": ctx.queue.holder(tile_id),
            "queue": {
                "position": where.get("position"),
                "total": len(ctx.queue),
                "spot_check": bool(where.get("spot_check")),
            },
            "has_marks": ctx.store.image_path(tile_id, "marks") is not None,
        }
    )


def _double_stage(ctx: ReviewContext, tile_id: str) -> str:
    """Two-reviewer mode: ``review`` (a blind review is due), ``adjudication`` (two reviews disagree, a
    lead decides), ``decided``, or ``single`` (not a double-review tile)."""
    with ctx.engine.connect() as conn:
        if not is_double(conn, tile_id):
            return "single"
        if current_decision(conn, tile_id) is not None:
            return "decided"
        return "adjudication" if len(review_rows(conn, tile_id)) >= 2 else "review"


def _get_sample(ctx: ReviewContext, tile_id: str) -> dict[str, Any]:
    sample = ctx.store.get(tile_id)
    if sample is None:
        raise HTTPException(status_code=404, detail="unknown tile")
    return sample


def _error(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content=_clean({"error": error, "detail": message, **extra}))


def create_app(
    data_dir: Path | str,
    db_url: str | None = None,
    *,
    queue_config: QueueConfig | None = None,
    secure_cookies: bool = False,
    session_ttl: timedelta = timedelta(hours=12),
    validator: Validator = validate_fixed,
    throttle: auth.LoginThrottle | None = None,
) -> FastAPI:
    """Build the review app for one data directory.

    Args:
        data_dir: directory with ``samples.parquet`` (and ``instances.parquet``, tiles, marks).
        db_url: SQLAlchemy URL of the review database; default SQLite ``DIR/review.sqlite``.
        queue_config: spot-check share, seed and assignment lease.
        secure_cookies: mark the session cookie ``Secure`` (serve over HTTPS, e.g. behind a proxy).
        session_ttl: how long a login lasts.
        validator: re-validates fixes (``validate_fixed`` or a drop-in replacement).
        throttle: login failure limiter per client address (default: growing delays after 5 failures).
    """
    data_dir = Path(data_dir).resolve()
    if not (data_dir / "samples.parquet").is_file():
        raise FileNotFoundError(f"no samples.parquet in {data_dir}")
    engine = open_engine(db_url or default_db_url(data_dir))
    config = queue_config or QueueConfig()
    ensure_index(
        engine,
        data_dir,
        spot_check_rate=config.spot_check_rate,
        seed=config.seed,
        double_review_rate=config.double_review_rate,
    )
    store = SampleStore(data_dir, engine)
    queue = ReviewQueue(engine, config)
    app = FastAPI(title="geopixeld review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.review = ReviewContext(
        store, engine, queue, validator, secure_cookies, session_ttl, throttle or auth.LoginThrottle()
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        if request.method not in SAFE_METHODS and not _origin_allowed(request):
            return _error(403, "origin", "cross-origin request refused")
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        path = request.url.path
        if path.startswith("/api/") and "/image/" not in path:
            response.headers["Cache-Control"] = "no-store"
        elif path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-cache"  # revalidate, so an upgrade is never half-applied
        return response

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index(request: Request) -> Response:
        if auth.get_session(_ctx(request).engine, request.cookies.get(auth.SESSION_COOKIE)) is None:
            return RedirectResponse("/login", status_code=303)
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/login", include_in_schema=False)
    def login_page() -> Response:
        return FileResponse(STATIC_DIR / "login.html", headers={"Cache-Control": "no-store"})

    @app.post("/api/login")
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
        response = JSONResponse(
            {"user": session.user, "csrf_token": session.csrf_token, "role": session.role}
        )
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

    @app.post("/api/logout")
    def logout(request: Request, session: auth.Session = Depends(csrf_session)) -> Response:
        auth.end_session(_ctx(request).engine, request.cookies.get(auth.SESSION_COOKIE, ""), session.user)
        response = JSONResponse({"ok": True})
        response.delete_cookie(auth.SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @app.get("/api/me")
    def me(session: auth.Session = Depends(current_session)) -> dict[str, Any]:
        return {"user": session.user, "csrf_token": session.csrf_token, "role": session.role}

    @app.get("/api/queue/next")
    def queue_next(
        request: Request,
        after: str | None = Query(default=None, max_length=255),
        where: QueueFilter = Depends(_queue_filter),
        session: auth.Session = Depends(current_session),
    ) -> dict[str, Any]:
        # A GET that assigns: harmless to repeat, and SameSite=Strict keeps other sites from causing it.
        tile_id = _ctx(request).queue.next_for(session.user, after, where)
        return {"tile_id": tile_id}

    @app.get("/api/queue/peek")
    def queue_peek(
        request: Request,
        after: str | None = Query(default=None, max_length=255),
        where: QueueFilter = Depends(_queue_filter),
        session: auth.Session = Depends(current_session),
    ) -> dict[str, Any]:
        return {"tile_id": _ctx(request).queue.peek(session.user, after, where)}

    @app.get("/api/queue/summary")
    def queue_summary(
        request: Request,
        where: QueueFilter = Depends(_queue_filter),
        session: auth.Session = Depends(current_session),
    ) -> dict[str, Any]:
        ctx = _ctx(request)
        today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
        with ctx.engine.connect() as conn:
            mine_today = conn.execute(
                sa.select(sa.func.count()).where(
                    events.c.actor == session.user,
                    events.c.action.in_(DECISION_ACTIONS),
                    events.c.at >= today,
                )
            ).scalar_one()
        return {
            "total": ctx.queue.count(where),
            "remaining": ctx.queue.remaining(where),
            "in_progress": ctx.queue.count_in_progress(session.user),
            "samples": len(ctx.store),
            "today": int(mine_today),
        }

    @app.get("/api/queue/facets")
    def queue_facets(request: Request, session: auth.Session = Depends(current_session)) -> dict[str, Any]:
        out: dict[str, list[dict[str, Any]]] = {"flag_code": [], "category": []}
        with _ctx(request).engine.connect() as conn:
            for row in conn.execute(
                sa.select(index_facets).order_by(index_facets.c.kind, index_facets.c.value)
            ):
                out.setdefault(row.kind, []).append({"value": row.value, "samples": int(row.samples)})
        # Leads also see how many samples wait for adjudication (two reviewers disagreed).
        adjudicate = _ctx(request).queue.remaining(QueueFilter(adjudicate=True)) if session.is_lead else None
        return {"flag_codes": out["flag_code"], "categories": out["category"], "adjudicate": adjudicate}

    @app.get("/api/samples/{tile_id}")
    def get_sample(
        tile_id: str, request: Request, session: auth.Session = Depends(current_session)
    ) -> dict[str, Any]:
        ctx = _ctx(request)
        return _sample_payload(ctx, tile_id, _get_sample(ctx, tile_id), session.user, session.is_lead)

    @app.get("/api/samples/{tile_id}/image/{layer}")
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

    @app.post("/api/samples/{tile_id}/validate")
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

    @app.post("/api/samples/{tile_id}/decision")
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
        stage = _double_stage(ctx, tile_id)
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

    @app.post("/api/samples/{tile_id}/phrases/{phrase}/decision")
    def decide_phrase(
        tile_id: str,
        phrase: int,
        body: PhraseDecisionRequest,
        request: Request,
        session: auth.Session = Depends(csrf_session),
    ) -> Response:
        ctx = _ctx(request)
        sample = _get_sample(ctx, tile_id)
        if _double_stage(ctx, tile_id) in ("review", "adjudication"):
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

    @app.post("/api/undo")
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

    @app.post("/api/bulk-accept")
    def bulk(
        body: BulkAcceptRequest, request: Request, session: auth.Session = Depends(lead_csrf_session)
    ) -> Any:
        ctx = _ctx(request)
        si = sample_index
        query = (
            sa.select(si.c.tile_id)
            .outerjoin(decisions, decisions.c.tile_id == si.c.tile_id)
            .where(si.c.max_severity.in_(body.severities), decisions.c.tile_id.is_(None))
            .order_by(si.c.tile_id)
        )
        if body.flag_code is not None:
            query = query.where(si.c.flag_codes.contains(f"|{body.flag_code}|", autoescape=True))
        if body.queued_only:
            query = query.where(si.c.position.is_not(None))
        if body.dry_run:
            with ctx.engine.connect() as conn:
                count = conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar_one()
                sample_ids = list(conn.execute(query.limit(50)).scalars())
            return {"dry_run": True, "count": int(count), "tile_ids": sample_ids}
        accepted: list[str] = []
        n_accepted = 0
        cursor = ""
        while True:  # page by tile id: memory stays bounded by one page
            with ctx.engine.connect() as conn:
                page = list(conn.execute(query.where(si.c.tile_id > cursor).limit(2000)).scalars())
            if not page:
                break
            cursor = page[-1]
            done = bulk_accept(ctx.engine, page, actor=session.user, lease_cutoff=ctx.queue.lease_cutoff())
            n_accepted += len(done)
            accepted.extend(done[: max(0, 50 - len(accepted))])
        return {"dry_run": False, "count": n_accepted, "tile_ids": accepted}

    @app.get("/api/users")
    def list_users(request: Request, _: auth.Session = Depends(lead_session)) -> dict[str, Any]:
        with _ctx(request).engine.connect() as conn:
            rows = conn.execute(
                sa.select(users.c.name, users.c.role, users.c.active, users.c.created_at).order_by(
                    users.c.name
                )
            ).all()
        return {
            "users": [
                {"name": r.name, "role": r.role, "active": bool(r.active), "created_at": as_utc(r.created_at)}
                for r in rows
            ],
            "roles": list(ROLES),
        }

    @app.post("/api/users")
    def create_user(
        body: UserRequest, request: Request, session: auth.Session = Depends(lead_csrf_session)
    ) -> Any:
        try:
            auth.add_user(_ctx(request).engine, body.name, body.password, actor=session.user, role=body.role)
        except ValueError as exc:
            return _error(422, "user", str(exc))
        return {"name": body.name, "role": body.role}

    @app.post("/api/users/{name}")
    def change_user(
        name: str, body: UserChange, request: Request, session: auth.Session = Depends(lead_csrf_session)
    ) -> Any:
        values: dict[str, Any] = {}
        if body.role is not None:
            values["role"] = body.role
        if body.active is not None:
            values["active"] = body.active
        if name == session.user and (body.active is False or body.role == "annotator"):
            return _error(422, "user", "leads cannot demote or deactivate themselves")
        with _ctx(request).engine.begin() as conn:
            if (
                not values
                or conn.execute(sa.update(users).where(users.c.name == name).values(**values)).rowcount == 0
            ):
                return _error(404, "user", f"no user {name!r}" if values else "nothing to change")
            log_event(conn, actor=session.user, action="change_user", after={"user": name, **values})
        return {"name": name, **values}

    @app.get("/api/report")
    def report(request: Request, _: auth.Session = Depends(lead_session)) -> dict[str, Any]:
        return _clean_dict(agreement_report(_ctx(request).engine))

    @app.get("/api/stats")
    def stats(request: Request, _: auth.Session = Depends(lead_session)) -> dict[str, Any]:
        engine = _ctx(request).engine
        today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
        counted = (*DECISION_ACTIONS, "conflict", "undo")
        per: dict[str, dict[str, int]] = {}
        with engine.connect() as conn:
            for actor, action, n in conn.execute(
                sa.select(events.c.actor, events.c.action, sa.func.count())
                .where(events.c.action.in_(counted))
                .group_by(events.c.actor, events.c.action)
            ):
                per.setdefault(actor, dict.fromkeys(counted, 0))[action] = n
            for actor, n in conn.execute(
                sa.select(events.c.actor, sa.func.count())
                .where(events.c.action.in_(DECISION_ACTIONS), events.c.at >= today)
                .group_by(events.c.actor)
            ):
                per.setdefault(actor, dict.fromkeys(counted, 0))["today"] = n
            by_status: dict[str, int] = {
                str(status): int(n)
                for status, n in conn.execute(
                    sa.select(decisions.c.status, sa.func.count()).group_by(decisions.c.status)
                )
            }
        annotators = [{"name": name, **{"today": 0, **counts}} for name, counts in sorted(per.items())]
        return {"annotators": annotators, "decisions": by_status}

    @app.get("/api/events")
    def list_events(
        request: Request,
        tile_id: str | None = Query(default=None, max_length=255),
        limit: int = Query(default=100, ge=1, le=1000),
        session: auth.Session = Depends(current_session),
    ) -> dict[str, Any]:
        query = sa.select(events).order_by(events.c.id.desc()).limit(limit)
        if tile_id is not None:
            query = query.where(events.c.tile_id == tile_id)
            if not session.is_lead and _double_stage(_ctx(request), tile_id) in ("review", "adjudication"):
                query = query.where(events.c.actor == session.user)  # blind: not the other reviewer's
        elif not session.is_lead:
            query = query.where(events.c.actor == session.user)
        with _ctx(request).engine.connect() as conn:
            rows = conn.execute(query).all()
        return _clean_dict({"events": [_event_dict(row) for row in rows]})

    @app.get("/api/events/export")
    def export_event_log(request: Request, _: auth.Session = Depends(lead_session)) -> Response:
        engine = _ctx(request).engine

        def lines() -> Iterator[bytes]:
            with engine.connect() as conn:
                for row in conn.execute(sa.select(events).order_by(events.c.id)):
                    yield (json.dumps(_clean(_event_dict(row)), ensure_ascii=False) + "\n").encode()

        return StreamingResponse(
            lines(),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": 'attachment; filename="review-events.jsonl"'},
        )

    return app


def _event_dict(row: sa.Row[Any]) -> dict[str, Any]:
    record = dict(row._mapping)
    at = as_utc(record["at"])
    record["at"] = at.isoformat() if at else None
    return record
