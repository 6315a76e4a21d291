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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from .db import ROLES, as_utc, log_event, sessions, users, utcnow

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


def add_user(
    engine: Engine,
    name: str,
    password: str,
    *,
    replace: bool = False,
    actor: str = "cli",
    role: str = "annotator",
) -> None:
    """Create user ``name`` with ``role`` (``annotator`` or ``lead``), or with ``replace`` set a new
    password and role for an existing one.

    Raises:
        ValueError: bad name or role, password shorter than 8 characters, or the user exists and not
            ``replace``.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
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
                sa.update(users)
                .where(users.c.name == name)
                .values(password_hash=encoded, active=True, role=role)
            )
            conn.execute(sa.delete(sessions).where(sessions.c.user_name == name))
        else:
            try:
                conn.execute(
                    sa.insert(users).values(
                        name=name, password_hash=encoded, active=True, created_at=utcnow(), role=role
                    )
                )
            except IntegrityError as exc:
                raise ValueError(f"user {name!r} exists") from exc
        log_event(
            conn,
            actor=actor,
            action="password_reset" if exists else "add_user",
            after={"user": name, "role": role},
        )


class UserRecord(TypedDict):
    """A user as the leads' user list shows it (no password hash)."""

    name: str
    role: str
    active: bool
    created_at: datetime | None


def list_users(engine: Engine) -> list[UserRecord]:
    """Every user, by name (``created_at`` aware UTC)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(users.c.name, users.c.role, users.c.active, users.c.created_at).order_by(users.c.name)
        ).all()
    return [
        {"name": r.name, "role": r.role, "active": bool(r.active), "created_at": as_utc(r.created_at)}
        for r in rows
    ]


def update_user(
    engine: Engine, name: str, *, actor: str, role: str | None = None, active: bool | None = None
) -> bool:
    """Set the ``role`` and/or ``active`` flag of user ``name`` (those given), logged as ``change_user``
    by ``actor``; False when there is no such user.

    Raises:
        ValueError: neither ``role`` nor ``active`` given, or an unknown role.
    """
    values: dict[str, str | bool] = {}
    if role is not None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        values["role"] = role
    if active is not None:
        values["active"] = active
    if not values:
        raise ValueError("nothing to change")
    with engine.begin() as conn:
        if conn.execute(sa.update(users).where(users.c.name == name).values(**values)).rowcount == 0:
            return False
        log_event(conn, actor=actor, action="change_user", after={"user": name, **values})
    return True


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
    role: str = "annotator"

    @property
    def is_lead(self) -> bool:
        return self.role == "lead"


def create_session(engine: Engine, user: str, ttl: timedelta) -> tuple[str, Session]:
    """Start a session for ``user``; returns ``(cookie token, session)``."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    with engine.begin() as conn:
        role = conn.execute(sa.select(users.c.role).where(users.c.name == user)).scalar()
        session = Session(user=user, csrf_token=secrets.token_urlsafe(32), role=str(role or "annotator"))
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
            sa.select(sessions.c.user_name, sessions.c.csrf_token, sessions.c.expires_at, users.c.role)
            .join(users, users.c.name == sessions.c.user_name)
            .where(sessions.c.token_hash == _token_hash(token), users.c.active.is_(True))
        ).first()
    if row is None or (as_utc(row.expires_at) or utcnow()) <= utcnow():
        return None
    return Session(user=row.user_name, csrf_token=row.csrf_token, role=str(row.role or "annotator"))


def end_session(engine: Engine, token: str, user: str) -> None:
    """Log out: forget the session of ``token``."""
    with engine.begin() as conn:
        conn.execute(sa.delete(sessions).where(sessions.c.token_hash == _token_hash(token)))
        log_event(conn, actor=user, action="logout")


def csrf_ok(session: Session, header_value: str | None) -> bool:
    """True when the request echoes the session's CSRF token."""
    return bool(header_value) and hmac.compare_digest(session.csrf_token.encode(), str(header_value).encode())


class LoginThrottle:
    """Slows password guessing per client address, with growing delays; never a lock on a user name.

    An address may fail ``free_failures`` logins in a row; after that each further attempt must wait
    ``base_delay_s * 2 ** (failures - free_failures)`` seconds (at most ``max_delay_s``) after its last
    failure, and is refused with 429 before then. A success resets the address. Because the count is
    kept per address and not per name, guessing one password across many names is slowed as much as
    many passwords for one name, and the real user, logging in from their own address, is never locked
    out by someone else's failures; even on a shared address the wait is bounded by ``max_delay_s``.
    Kept in memory per server process; addresses idle for ``forget_s`` are forgotten.

    Args:
        free_failures: failures allowed without delay.
        base_delay_s: the first delay, in seconds.
        max_delay_s: the longest delay, in seconds.
        forget_s: seconds after the last failure when an address starts afresh.
        clock: monotonic seconds (tests pass a fake clock).
    """

    def __init__(
        self,
        free_failures: int = 5,
        base_delay_s: float = 1.0,
        max_delay_s: float = 300.0,
        forget_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = 100_000,
    ) -> None:
        self.free_failures = free_failures
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.forget_s = forget_s
        self.clock = clock
        self.max_addresses = max_addresses
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def delay_after(self, failures: int) -> float:
        """Seconds an address must wait after its ``failures``-th failure in a row."""
        if failures < self.free_failures:
            return 0.0
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** (failures - self.free_failures)))

    def wait_s(self, address: str) -> float:
        """Seconds before ``address`` may try again (0: now)."""
        with self._lock:
            count, last = self._failures.get(address, (0, 0.0))
            if not count:
                return 0.0
            elapsed = self.clock() - last
            if elapsed >= self.forget_s:
                self._failures.pop(address, None)
                return 0.0
            return max(0.0, self.delay_after(count) - elapsed)

    def failed(self, address: str) -> None:
        with self._lock:
            now = self.clock()
            count, last = self._failures.get(address, (0, now))
            if now - last >= self.forget_s:
                count = 0
            self._failures[address] = (count + 1, now)
            if len(self._failures) > self.max_addresses:  # drop the longest-idle addresses
                for stale, _ in sorted(self._failures.items(), key=lambda kv: kv[1][1])[
                    : len(self._failures) - self.max_addresses
                ]:
                    self._failures.pop(stale, None)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
