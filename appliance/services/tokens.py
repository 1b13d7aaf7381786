"""Bearer API tokens: shown once, stored as SHA-256, revocable, with an expiry.

On first start the appliance creates an admin token and writes it once to a
0600 file in the state directory (DESIGN §7). A token has a role and may be
scoped to a tenant, like a user (see appliance.services.users).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from appliance.errors import Conflict, Issue, NotFound, ValidationError
from appliance.services.users import Principal, check_role_and_tenant
from appliance.store import Store
from appliance.store.prepared import Prepared
from appliance.store.tables import ApiTokenRow

__all__ = ["TOKEN_PREFIX", "Principal", "TokenInfo", "TokenService", "hash_token"]

TOKEN_PREFIX = "anvil_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Every API request asks this; run on the driver's cursor (the ORM's row cost 0.3 ms a request).
_T = ApiTokenRow
_BY_HASH = Prepared(select(_T.id, _T.name, _T.role, _T.tenant, _T.expires_at, _T.revoked_at)
                    .where(_T.token_hash == bindparam("h")))


def _aware(t: datetime | None) -> datetime | None:
    return t if t is None or t.tzinfo else t.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    name: str
    owner: str
    role: str
    tenant: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def public(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "owner": self.owner, "role": self.role, "tenant": self.tenant,
                "state": self.state(datetime.now(UTC)),
                "createdAt": self.created_at.isoformat(),
                "expiresAt": self.expires_at.isoformat() if self.expires_at else None,
                "revokedAt": self.revoked_at.isoformat() if self.revoked_at else None}


def parse_ttl(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise ValidationError([Issue("expires", f"{text!r} is not a duration such as 90d, 12h, 30m")])
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])


class TokenService:
    def __init__(self, store: Store) -> None:
        self._store = store

    def create(self, name: str, *, role: str = "admin", tenant: str | None = None,
               ttl: timedelta | None = None, owner: str = "appliance") -> str:
        """Create a token and return it; this is the only time it is visible. ``owner`` is who
        creates it (``local:root``, ``user:7``…): Conflict when the owner already has a live token
        of that name."""
        issues = check_role_and_tenant(role, tenant)
        if not name or len(name) > 63:
            issues.append(Issue("name", "must be 1 to 63 characters"))
        if issues:
            raise ValidationError(issues, source=f"token {name}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + ttl if ttl else None
        try:
            with self._store.write() as s:
                s.add(ApiTokenRow(name=name, owner=owner, token_hash=hash_token(token), role=role, tenant=tenant,
                                  expires_at=expires))
        except IntegrityError:
            raise Conflict(f"you already have a live token named {name!r}; revoke it or choose another name") \
                from None
        return token

    def authenticate(self, token: str) -> Principal | None:
        with self._store.snapshot() as conn:
            got = _BY_HASH.rows(conn, h=hash_token(token))
        if not got:
            return None
        token_id, name, role, tenant, expires, revoked = got[0]
        if revoked is not None:
            return None
        exp = _aware(datetime.fromisoformat(expires) if isinstance(expires, str) else expires)  # SQLite: text
        if exp is not None and exp <= datetime.now(UTC):
            return None
        return Principal(name=name, role=role, tenant=tenant, kind="token", id=token_id)

    def is_live(self, token_id: int) -> bool:
        """Whether token ``token_id`` is still neither revoked nor expired (long streams re-check it)."""
        with self._store.read() as s:
            row = s.get(ApiTokenRow, token_id)
        if row is None or row.revoked_at is not None:
            return False
        exp = _aware(row.expires_at)
        return exp is None or exp > datetime.now(UTC)

    def list(self, *, tenant: str | None = None) -> list[TokenInfo]:
        with self._store.read() as s:
            stmt = select(ApiTokenRow).order_by(ApiTokenRow.name, ApiTokenRow.id)
            if tenant is not None:
                stmt = stmt.where(ApiTokenRow.tenant == tenant)
            return [TokenInfo(r.id, r.name, r.owner, r.role, r.tenant, _aware(r.created_at) or r.created_at,
                              _aware(r.expires_at), _aware(r.revoked_at)) for r in s.scalars(stmt)]

    def revoke(self, name: str, *, token_id: int | None = None, owner: str | None = None) -> TokenInfo:
        """Revoke one live token: the one with ``token_id``, else ``owner``'s token called ``name``,
        else the only live token called ``name``. Conflict when several owners have one of that
        name (then give the id: ``anvil token list`` shows it)."""
        with self._store.write() as s:
            stmt = select(ApiTokenRow).where(ApiTokenRow.revoked_at.is_(None))
            stmt = stmt.where(ApiTokenRow.id == token_id) if token_id is not None else \
                stmt.where(ApiTokenRow.name == name)
            rows = list(s.scalars(stmt))
            if token_id is not None and rows and rows[0].name != name and name:
                rows = []
            mine = [r for r in rows if owner is not None and r.owner == owner]
            if mine:
                rows = mine
            if not rows:
                raise NotFound("token", name if token_id is None else f"{name}#{token_id}")
            if len(rows) > 1:
                ids = ", ".join(str(r.id) for r in rows)
                raise Conflict(f"several live tokens are named {name!r} (ids {ids}); revoke one by its id")
            row = rows[0]
            row.revoked_at = datetime.now(UTC)
            return TokenInfo(row.id, row.name, row.owner, row.role, row.tenant, row.created_at,
                             _aware(row.expires_at), _aware(row.revoked_at))

    def ensure_admin_token(self, path: Path) -> str | None:
        """Create the first admin token unless its file exists; returns it when newly created."""
        if path.exists():
            return None
        token = self.create("admin-initial", role="admin", owner="appliance")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        return token
