"""Boot tokens and heartbeat secrets: random, handed out once, stored as their SHA-256.

A boot token is one-time and belongs to one binding generation; issuing a new one voids
the previous ones of that binding. The callback spends it and issues the generation's
heartbeat secret (voiding any earlier heartbeat secret of the binding).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from appliance.store.tables import BindingRow, BootTokenRow, utcnow

BOOT = "boot"
HEARTBEAT = "heartbeat"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _issue(session: Session, binding: BindingRow, kind: str) -> str:
    now = utcnow()
    session.execute(update(BootTokenRow)
                    .where(BootTokenRow.binding_id == binding.id, BootTokenRow.kind == kind,
                           BootTokenRow.voided_at.is_(None))
                    .values(voided_at=now))
    token = secrets.token_urlsafe(32)
    session.add(BootTokenRow(binding_id=binding.id, generation=binding.generation, kind=kind,
                             token_hash=_hash(token), created_at=now))
    session.flush()
    return token


def issue_boot_token(session: Session, binding: BindingRow) -> str:
    """A fresh one-time boot token for ``binding``'s generation; earlier ones stop working."""
    return _issue(session, binding, BOOT)


@dataclass(frozen=True, slots=True)
class Spent:
    binding_id: int
    generation: int
    blade_id: int
    profile_id: int
    job_id: str | None
    heartbeat_secret: str


def _live_token(session: Session, token: str, kind: str) -> tuple[BootTokenRow, BindingRow] | None:
    if not token or len(token) > 256:
        return None
    row = session.scalars(select(BootTokenRow).where(BootTokenRow.token_hash == _hash(token),
                                                     BootTokenRow.kind == kind)).first()
    if row is None or row.voided_at is not None:
        return None
    binding = session.get(BindingRow, row.binding_id)
    if binding is None or binding.state != "live" or binding.generation != row.generation:
        return None
    return row, binding


def spend_boot_token(session: Session, token: str) -> Spent | None:
    """Spend a boot token: None unless it is unused, not voided and its binding generation is live."""
    found = _live_token(session, token, BOOT)
    if found is None or found[0].used_at is not None:
        return None
    row, binding = found
    row.used_at = utcnow()
    secret = _issue(session, binding, HEARTBEAT)
    return Spent(binding.id, binding.generation, binding.blade_id, binding.profile_id, binding.job_id, secret)


def check_heartbeat(session: Session, secret: str) -> BindingRow | None:
    """Record a heartbeat; the binding it belongs to, or None for a wrong or stale secret."""
    found = _live_token(session, secret, HEARTBEAT)
    if found is None:
        return None
    row, binding = found
    row.last_seen_at = utcnow()
    return binding
