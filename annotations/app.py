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

import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from . import auth
from .db import (
    default_db_url,
    open_engine,
)
from .decisions import (
    Validator,
)
from .index import ensure_index
from .queue import QueueConfig, QueueFilter, ReviewQueue
from .samples import SampleStore
from .tile_state import tile_state
from .validate import validate_fixed

STATIC_DIR = Path(__file__).parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Events that count as a decision made by an annotator (stats, "you today").
PUBLIC_DECISION = ("status", "reviewer", "decided_at", "revision", "note")


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
    state = tile_state(ctx.engine, tile_id, user, is_lead)
    decision = state.decision
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
            "phrase_decisions": {str(k): v for k, v in sorted(state.phrases.items())},
            "double_review": state.double,
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
    from .routes import router  # the handlers; imported here, they import this module's helpers

    app.include_router(router)

    return app
