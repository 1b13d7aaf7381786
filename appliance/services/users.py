"""Local users, roles, tenant scope, console sessions and login throttling.

Passwords are stored as scrypt hashes (``scrypt$n$r$p$salt$hash``, standard library;
no password is ever stored or logged). Roles are ordered: ``viewer`` reads,
``operator`` may also assign, release and act on blades' power and boot, ``admin``
may do everything. A user or token scoped to a tenant sees and touches only that
tenant's profiles, jobs and audit entries, and the blades bound to its profiles.

Throttling (fail2ban-style, per user *and* source address): after ``MAX_FAILURES``
wrong passwords for one user from one address, that address is locked out of that user
for ``LOCK_SECONDS``, doubling with every further failure (at most ``MAX_LOCK_SECONDS``),
even with the right password. Other addresses are never locked by it, so nobody can lock
the admin out by guessing from somewhere else; instead every login of a user whose
password was recently guessed at from anywhere waits a bounded delay
(:meth:`UserService.login_delay`, at most ``MAX_DELAY`` seconds), which slows guessing
spread over many addresses. :class:`AddressThrottle` also slows one address trying many
user names. A successful login clears its own address's failures only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, select

from appliance.errors import AnvilError, Conflict, Issue, NotFound, ValidationError
from appliance.store import Store
from appliance.store.tables import ConsoleSessionRow, LoginThrottleRow, UserRow

ROLES = ("viewer", "operator", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MAX_FAILURES = 5
LOCK_SECONDS = 30
MAX_LOCK_SECONDS = 900
MAX_DELAY = 3.0                      # seconds: the most any login waits for guesses made elsewhere
FAILURE_WINDOW = timedelta(minutes=15)
MAX_PASSWORD = 1024                  # bytes of a password worth hashing; longer is refused unhashed
SESSION_TTL = timedelta(hours=12)
MIN_PASSWORD = 8
# In the state directory: the first admin's password chosen at the appliance's first boot (read once, deleted).
INITIAL_ADMIN_PASSWORD = "admin.initial-password"
_SCRYPT = (2**14, 8, 1)


class LoginThrottled(AnvilError):
    """Too many failed logins; try again later."""

    retryable = True

    def __init__(self, until: datetime) -> None:
        self.until = until
        super().__init__(f"too many failed logins; locked until {until.isoformat(timespec='seconds')}")


class AddressThrottle:
    """Failed logins per client address in a sliding window (in memory, per process).

    Complements the per-user lock: one address trying many user names is slowed down too.
    """

    def __init__(self, *, limit: int = 20, window: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit, self._window, self._clock = limit, window, clock
        self._fails: dict[str, deque[float]] = {}

    def _recent(self, address: str) -> deque[float]:
        q = self._fails.setdefault(address, deque())
        cutoff = self._clock() - self._window
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def blocked(self, address: str) -> bool:
        return len(self._recent(address)) >= self._limit

    def failed(self, address: str) -> None:
        self._recent(address).append(self._clock())
        if len(self._fails) > 10_000:   # bound the memory: forget the quietest addresses
            for key in [k for k, v in self._fails.items() if not v][:5000]:
                del self._fails[key]


def role_allows(role: str, needed: str) -> bool:
    return _RANK.get(role, -1) >= _RANK[needed]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (console or API) or a token."""

    name: str
    role: str
    tenant: str | None
    kind: str = "token"   # "token" | "user"
    id: int | None = None  # the user's or token's row id: token names repeat across owners

    @property
    def who(self) -> str:
        """How the audit and jobs name the caller; a token by name *and* id (names are not unique)."""
        if self.kind == "token" and self.id is not None:
            return f"token:{self.name}#{self.id}"
        return f"{self.kind}:{self.name}"

    @property
    def key(self) -> str:
        """A stable identity of the caller (scopes its idempotency keys)."""
        return f"{self.kind}:{self.id if self.id is not None else self.name}"

    @property
    def token_name(self) -> str:   # the name before users existed; kept for callers
        return self.name

    def allows(self, needed: str) -> bool:
        return role_allows(self.role, needed)


@dataclass(frozen=True, slots=True)
class UserInfo:
    name: str
    role: str
    tenant: str | None
    locked_until: datetime | None
    created_at: datetime

    def public(self) -> dict[str, object]:
        return {"name": self.name, "role": self.role, "tenant": self.tenant,
                "lockedUntil": self.locked_until.isoformat() if self.locked_until else None,
                "createdAt": self.created_at.isoformat()}


def hash_password(password: str) -> str:
    n, r, p = _SCRYPT
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        algo, n, r, p, salt, digest = stored.split("$")
        if algo != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


# Spent on unknown users too, so timing does not tell which names exist.
_DUMMY_HASH = hash_password("not a password")


def _aware(t: datetime | None) -> datetime | None:
    return t if t is None or t.tzinfo else t.replace(tzinfo=UTC)


def _info(row: UserRow, locked: datetime | None = None) -> UserInfo:
    """``locked``: the latest lock of one of the user's sources (informational: it shuts out only that source)."""
    return UserInfo(row.name, row.role, row.tenant, _aware(locked), row.created_at)


def check_role_and_tenant(role: str, tenant: str | None) -> list[Issue]:
    issues = []
    if role not in ROLES:
        issues.append(Issue("role", f"{role!r} is not one of {', '.join(ROLES)}"))
    if tenant is not None and not re.match(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", tenant):
        issues.append(Issue("tenant", f"{tenant!r} is not a lowercase name"))
    return issues


class UserService:
    def __init__(self, store: Store, *, clock: type[datetime] = datetime) -> None:
        self._store = store
        self._clock = clock

    def _now(self) -> datetime:
        return self._clock.now(UTC)

    def add(self, name: str, password: str, *, role: str, tenant: str | None = None) -> UserInfo:
        issues = check_role_and_tenant(role, tenant)
        if not _NAME.match(name):
            issues.append(Issue("name", f"{name!r} is not a lowercase user name"))
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            issues.append(Issue("password", f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"))
        if issues:
            raise ValidationError(issues, source=f"user {name}")
        with self._store.write() as s:
            if s.scalar(select(UserRow.id).where(UserRow.name == name)) is not None:
                raise Conflict(f"user {name!r} already exists")
            row = UserRow(name=name, password_hash=hash_password(password), role=role, tenant=tenant,
                          failed_logins=0)
            s.add(row)
            s.flush()
            return _info(row)

    def list(self) -> list[UserInfo]:
        with self._store.read() as s:
            locks = dict(s.execute(select(LoginThrottleRow.user_id, func.max(LoginThrottleRow.locked_until))
                                   .group_by(LoginThrottleRow.user_id)).all())
            return [_info(r, locks.get(r.id)) for r in s.scalars(select(UserRow).order_by(UserRow.name))]

    def get(self, name: str) -> UserInfo:
        with self._store.read() as s:
            return _info(self._row(s, name))

    def set_password(self, name: str, password: str) -> None:
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise ValidationError([Issue("password", f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")])
        with self._store.write() as s:
            row = self._row(s, name)
            row.password_hash = hash_password(password)
            s.execute(delete(LoginThrottleRow).where(LoginThrottleRow.user_id == row.id))
            # A new password ends every console session of the user.
            s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.user_id == row.id))

    def delete(self, name: str) -> None:
        with self._store.write() as s:
            row = self._row(s, name)
            if row.role == "admin" and row.tenant is None:
                admins = s.scalars(select(UserRow.id).where(UserRow.role == "admin", UserRow.tenant.is_(None)))
                if len(list(admins)) == 1:
                    raise Conflict(f"user {name!r} is the last appliance admin")
            s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.user_id == row.id))
            s.delete(row)

    def authenticate(self, name: str, password: str, *, source: str = "local") -> Principal | None:
        """The user's principal if the password is right; None if not. Raises LoginThrottled while
        ``source`` (the client address) is locked out of this user."""
        now = self._now()
        source = source[:64]
        with self._store.write() as s:
            row = s.scalar(select(UserRow).where(UserRow.name == name))
            if row is None or len(password) > MAX_PASSWORD:
                check_password(password[:MAX_PASSWORD], _DUMMY_HASH)
                return None
            pair = s.scalar(select(LoginThrottleRow).where(LoginThrottleRow.user_id == row.id,
                                                           LoginThrottleRow.source == source))
            locked = _aware(pair.locked_until) if pair is not None else None
            if locked is not None and locked > now:
                raise LoginThrottled(locked)
            if check_password(password, row.password_hash):
                if pair is not None:
                    s.delete(pair)
                return Principal(row.name, row.role, row.tenant, kind="user", id=row.id)
            if pair is None:
                pair = LoginThrottleRow(user_id=row.id, source=source, failures=0)
                s.add(pair)
            pair.failures += 1
            pair.updated_at = now
            if pair.failures >= MAX_FAILURES:
                secs = min(LOCK_SECONDS * 2 ** (pair.failures - MAX_FAILURES), MAX_LOCK_SECONDS)
                pair.locked_until = now + timedelta(seconds=secs)
            # Forget sources that have been quiet for a day: the table stays as small as the attack.
            s.execute(delete(LoginThrottleRow).where(LoginThrottleRow.updated_at < now - timedelta(days=1)))
            return None

    def login_delay(self, name: str) -> float:
        """Seconds every login of ``name`` waits now: nothing until ``MAX_FAILURES`` recent wrong
        passwords from all sources together, then doubling from 0.25 s up to ``MAX_DELAY``."""
        since = self._now() - FAILURE_WINDOW
        with self._store.read() as s:
            recent = s.scalar(select(func.coalesce(func.sum(LoginThrottleRow.failures), 0))
                              .join(UserRow, UserRow.id == LoginThrottleRow.user_id)
                              .where(UserRow.name == name, LoginThrottleRow.updated_at >= since)) or 0
        if recent < MAX_FAILURES:
            return 0.0
        return float(min(0.25 * 2 ** min(recent - MAX_FAILURES, 8), MAX_DELAY))

    def ensure_initial_admin(self, path: Path, chosen: Path | None = None) -> str | None:
        """At set-up, when there is no user yet: add ``admin``.

        Its password is the first line of ``chosen`` when that file exists (the appliance image's
        first boot writes the admin's answer there), which is then deleted; otherwise a random one,
        written once to ``path`` (0600). Returns the password when the user was created.
        """
        with self._store.read() as s:
            if s.scalar(select(UserRow.id).limit(1)) is not None:
                return None
        if chosen is not None and chosen.exists():
            lines = chosen.read_text().splitlines()
            self.add("admin", lines[0] if lines else "", role="admin")
            chosen.unlink()
            return lines[0]
        if path.exists():
            return None
        password = secrets.token_urlsafe(12)
        self.add("admin", password, role="admin")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        return password

    # -- console sessions --------------------------------------------------
    def open_session(self, name: str) -> tuple[str, str]:
        """A new session for ``name``: (cookie value, CSRF token). Only the cookie's hash is stored."""
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        with self._store.write() as s:
            row = self._row(s, name)
            s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at < self._now()))
            s.add(ConsoleSessionRow(session_hash=hashlib.sha256(cookie.encode()).hexdigest(), user_id=row.id,
                                    csrf_token=csrf, expires_at=self._now() + SESSION_TTL))
        return cookie, csrf

    def resolve_session(self, cookie: str) -> tuple[Principal, str] | None:
        """(principal, CSRF token) of a live session, or None."""
        digest = hashlib.sha256(cookie.encode()).hexdigest()
        with self._store.read() as s:
            got = s.execute(select(ConsoleSessionRow, UserRow).join(UserRow, UserRow.id == ConsoleSessionRow.user_id)
                            .where(ConsoleSessionRow.session_hash == digest)).first()
        if got is None:
            return None
        sess, user = got
        exp = _aware(sess.expires_at)
        if exp is None or exp <= self._now():
            return None
        return Principal(user.name, user.role, user.tenant, kind="user", id=user.id), sess.csrf_token

    def close_session(self, cookie: str) -> None:
        digest = hashlib.sha256(cookie.encode()).hexdigest()
        with self._store.write() as s:
            s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.session_hash == digest))

    @staticmethod
    def _row(s: object, name: str) -> UserRow:
        from sqlalchemy.orm import Session

        assert isinstance(s, Session)
        row = s.scalar(select(UserRow).where(UserRow.name == name))
        if row is None:
            raise NotFound("user", name)
        return row
