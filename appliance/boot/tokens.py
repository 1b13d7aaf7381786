"""Boot tokens and heartbeat secrets: random, handed out once, stored as their SHA-256.

A boot token is one-time and belongs to one binding generation; issuing a new one voids
the previous ones of that binding. The callback spends it and issues the generation's
heartbeat secret (voiding any earlier heartbeat secret of the binding).

Issuing is two Core statements (no ORM flush): the iPXE script endpoint issues one per
request, at up to thousands per second.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.orm import Session

from appliance.store.tables import BindingRow, BootTokenRow, utcnow

BOOT = "boot"
HEARTBEAT = "heartbeat"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Generation(Protocol):
    """A binding generation: a BindingRow, or the look-up's plain value."""

    @property
    def id(self) -> int: ...

    @property
    def generation(self) -> int: ...


# Each issue voids the live tokens of its kind before adding one, so at most the newest token
# of a kind is live: only the newest few are looked at, and voiding stays O(1) however many
# voided tokens a binding has piled up (the index is on binding_id alone).
_RECENT = 16
_COL = BootTokenRow.__table__.c
_VOID = (update(BootTokenRow)
         .where(BootTokenRow.id.in_(select(BootTokenRow.id)
                                    .where(BootTokenRow.binding_id == bindparam("binding"),
                                           BootTokenRow.kind == bindparam("token_kind"))
                                    .order_by(BootTokenRow.id.desc()).limit(_RECENT).scalar_subquery()),
                BootTokenRow.voided_at.is_(None))
         .values(voided_at=bindparam("now", type_=_COL.voided_at.type)))
# Added only while the generation is live, checked in the same statement.
_ADD_IF_LIVE = insert(BootTokenRow).from_select(
    ["binding_id", "generation", "kind", "token_hash", "created_at"],
    select(BindingRow.id, BindingRow.generation, bindparam("token_kind", type_=_COL.kind.type),
           bindparam("hash", type_=_COL.token_hash.type), bindparam("now", type_=_COL.created_at.type))
    .where(BindingRow.id == bindparam("binding"), BindingRow.state == "live",
           BindingRow.generation == bindparam("gen"))).returning(BootTokenRow.id)


def issue_token(conn: Connection, binding_id: int, generation: int, kind: str) -> str | None:
    """A fresh token of ``kind`` for the binding generation, voiding the earlier ones of that kind;
    None (and nothing added) when that generation is not live. Runs in the caller's transaction."""
    now = utcnow()
    conn.execute(_VOID, {"binding": binding_id, "token_kind": kind, "now": now})
    token = secrets.token_urlsafe(32)
    added = conn.execute(_ADD_IF_LIVE, {"binding": binding_id, "gen": generation, "token_kind": kind,
                                        "hash": _hash(token), "now": now})
    # RETURNING, not rowcount: psycopg reports -1 for INSERT … SELECT.
    return token if added.first() is not None else None


def _issue(session: Session, binding: Generation, kind: str) -> str:
    session.flush()   # the ORM's pending changes first: the statements below go to the connection
    token = issue_token(session.connection(), binding.id, binding.generation, kind)
    if token is None:
        raise ValueError(f"binding {binding.id} generation {binding.generation} is not live")
    return token


def issue_boot_token(session: Session, binding: Generation) -> str:
    """A fresh one-time boot token for ``binding``'s generation; earlier ones stop working.
    Raises ValueError when that generation is not live."""
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
