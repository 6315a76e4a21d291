"""Annotator accounts, password hashing, sessions and CSRF tokens.

Passwords are hashed with scrypt (``hashlib.scrypt``; N=2**15, r=8, p=1, 16-byte salt) and compared in
constant time. A login creates a server-side session: the browser gets a random token in an HttpOnly,
SameSite=Strict cookie, the database keeps only its SHA-256, and each session has its own CSRF token
that state-changing requests must echo in the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from .db import as_utc, log_event, sessions, users, utcnow

SESSION_COOKIE = "gpx_session"
CSRF_HEADER = "X-CSRF-Token"
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_PASSWORD_LENGTH = 8
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}


def hash_password(
    password: str, *, n: int = _SCRYPT["n"], r: int = _SCRYPT["r"], p: int = _SCRYPT["p"]
) -> str:
    """``scrypt$n$r$p$salt$hash`` (salt and hash base64) for ``password``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=2**27)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded`` (from ``hash_password``)."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=2**27,
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def _dummy_hash() -> str:
    # Verifying against this when the user does not exist keeps "no such user" as slow as "wrong password".
    return hash_password(secrets.token_hex(8))


def add_user(engine: Engine, name: str, password: str, *, replace: bool = False, actor: str = "cli") -> None:
    """Create annotator ``name`` (or set a new password with ``replace``).

    Raises:
        ValueError: bad name, password shorter than 8 characters, or the user exists and not ``replace``.
    """
    if not USER_NAME.match(name):
        raise ValueError(
            "user names are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"passwords need at least {MIN_PASSWORD_LENGTH} characters")
    encoded = hash_password(password)
    with engine.begin() as conn:
        exists = conn.execute(sa.select(users.c.name).where(users.c.name == name)).first() is not None
        if exists and not replace:
            raise ValueError(f"user {name!r} exists (use --replace to set a new password)")
        if exists:
            conn.execute(
                sa.update(users).where(users.c.name == name).values(password_hash=encoded, active=True)
            )
            conn.execute(sa.delete(sessions).where(sessions.c.user_name == name))
        else:
            try:
                conn.execute(
                    sa.insert(users).values(
                        name=name, password_hash=encoded, active=True, created_at=utcnow()
                    )
                )
            except IntegrityError as exc:
                raise ValueError(f"user {name!r} exists") from exc
        log_event(conn, actor=actor, action="password_reset" if exists else "add_user", after={"user": name})


def authenticate(engine: Engine, name: str, password: str) -> bool:
    """True when ``name`` is an active user with this password."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(users.c.password_hash, users.c.active).where(users.c.name == name)
        ).first()
    if row is None or not row.active:
        verify_password(password, _dummy_hash())
        return False
    return verify_password(password, row.password_hash)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    """A logged-in annotator: who, and the CSRF token their page must send back."""

    user: str
    csrf_token: str


def create_session(engine: Engine, user: str, ttl: timedelta) -> tuple[str, Session]:
    """Start a session for ``user``; returns ``(cookie token, session)``."""
    token = secrets.token_urlsafe(32)
    session = Session(user=user, csrf_token=secrets.token_urlsafe(32))
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(sa.delete(sessions).where(sessions.c.expires_at < now))
        conn.execute(
            sa.insert(sessions).values(
                token_hash=_token_hash(token),
                user_name=user,
                csrf_token=session.csrf_token,
                created_at=now,
                expires_at=now + ttl,
            )
        )
        log_event(conn, actor=user, action="login")
    return token, session


def get_session(engine: Engine, token: str | None) -> Session | None:
    """The live session of a cookie token, or None (unknown, expired, or the user was deactivated)."""
    if not token or len(token) > 256:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(sessions.c.user_name, sessions.c.csrf_token, sessions.c.expires_at)
            .join(users, users.c.name == sessions.c.user_name)
            .where(sessions.c.token_hash == _token_hash(token), users.c.active.is_(True))
        ).first()
    if row is None or (as_utc(row.expires_at) or utcnow()) <= utcnow():
        return None
    return Session(user=row.user_name, csrf_token=row.csrf_token)


def end_session(engine: Engine, token: str, user: str) -> None:
    """Log out: forget the session of ``token``."""
    with engine.begin() as conn:
        conn.execute(sa.delete(sessions).where(sessions.c.token_hash == _token_hash(token)))
        log_event(conn, actor=user, action="logout")


def csrf_ok(session: Session, header_value: str | None) -> bool:
    """True when the request echoes the session's CSRF token."""
    return bool(header_value) and hmac.compare_digest(session.csrf_token.encode(), str(header_value).encode())


class LoginThrottle:
    """Slows password guessing: after ``max_failures`` failed logins for a name, that name is locked for
    ``lockout_s`` seconds (in memory, per server process)."""

    def __init__(self, max_failures: int = 5, lockout_s: float = 60.0) -> None:
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def locked(self, name: str) -> bool:
        with self._lock:
            count, since = self._failures.get(name, (0, 0.0))
            if count >= self.max_failures and time.monotonic() - since < self.lockout_s:
                return True
            if count >= self.max_failures:
                self._failures.pop(name, None)
            return False

    def failed(self, name: str) -> None:
        with self._lock:
            count, _ = self._failures.get(name, (0, 0.0))
            self._failures[name] = (count + 1, time.monotonic())

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)
