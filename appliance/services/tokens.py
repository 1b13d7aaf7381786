"""Bearer API tokens: shown once, stored as SHA-256, revocable, with an expiry.

On first start the appliance creates an admin token and writes it once to a
0600 file in the state directory (DESIGN §7).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from appliance.errors import NotFound
from appliance.store import Store
from appliance.store.tables import ApiTokenRow

TOKEN_PREFIX = "anvil_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    token_name: str
    role: str
    tenant: str | None


class TokenService:
    def __init__(self, store: Store) -> None:
        self._store = store

    def create(self, name: str, *, role: str = "admin", tenant: str | None = None,
               ttl: timedelta | None = None) -> str:
        """Create a token and return it; this is the only time it is visible."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + ttl if ttl else None
        with self._store.write() as s:
            s.add(ApiTokenRow(name=name, token_hash=hash_token(token), role=role, tenant=tenant, expires_at=expires))
        return token

    def authenticate(self, token: str) -> Principal | None:
        with self._store.read() as s:
            row = s.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == hash_token(token)))
        if row is None or row.revoked_at is not None:
            return None
        if row.expires_at is not None:
            exp = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
            if exp <= datetime.now(UTC):
                return None
        return Principal(token_name=row.name, role=row.role, tenant=row.tenant)

    def revoke(self, name: str) -> None:
        with self._store.write() as s:
            rows = list(s.scalars(select(ApiTokenRow).where(ApiTokenRow.name == name,
                                                             ApiTokenRow.revoked_at.is_(None))))
            if not rows:
                raise NotFound("token", name)
            for row in rows:
                row.revoked_at = datetime.now(UTC)

    def ensure_admin_token(self, path: Path) -> str | None:
        """Create the first admin token unless its file exists; returns it when newly created."""
        if path.exists():
            return None
        token = self.create("admin-initial", role="admin")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        return token
