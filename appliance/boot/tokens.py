"""Boot attempts, boot tokens and heartbeat secrets (DESIGN §7, §8).

A *boot attempt* is opened by the engine — the set-boot step of a stamp or failover,
the restart step of a failover — never by a request on the provisioning network. It is
a ``boot`` row of :class:`~appliance.store.tables.BootTokenRow` for one binding
generation, with a random ``nonce`` and the job that waits for it; opening one voids
the binding's earlier attempts.

The attempt's token is ``HMAC(boot key, nonce)``. The boot key is a file of its own in
the state directory (``boot.key``, 0600) that the engine and the boot role both read —
the boot role never reads the secrets key. So serving a script is a pure read (the
token is derived, not stored), and the database holds only the nonce and the token's
SHA-256: reading ``anvil.db`` yields no usable token.

The callback (appliance.boot.http) spends the token once, from the blade's expected
address (appliance.boot.peers), and gets a heartbeat secret in its answer, stored as its
SHA-256 too. A blade whose image calls back again later with the same token (its OS
rebooted) gets a fresh heartbeat secret only once its agent has gone quiet, so a replay
while the real agent still beats changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.orm import Session

from appliance.store.tables import BindingRow, BootTokenRow, utcnow

BOOT = "boot"
HEARTBEAT = "heartbeat"
KEY_FILE = "boot.key"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class BootKey:
    """The key boot tokens are derived with. ``repr`` never shows it."""

    secret: bytes

    def __repr__(self) -> str:
        return "BootKey(***)"

    @classmethod
    def load(cls, path: Path) -> BootKey:
        """The key in ``path``, created (32 random bytes, mode 0600) if missing; safe against
        the engine and the boot role creating it at once."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32).hex().encode())
        for _ in range(50):     # a concurrent creator may not have written it yet
            raw = path.read_bytes().strip()
            if raw:
                return cls(bytes.fromhex(raw.decode()))
            time.sleep(0.01)
        raise OSError(f"{path}: the boot key file is empty")

    @classmethod
    def ephemeral(cls) -> BootKey:
        """A key for an engine and a boot service that share one process (tests)."""
        return cls(secrets.token_bytes(32))

    def token(self, nonce: str) -> str:
        return hmac.new(self.secret, b"boot-token:" + nonce.encode(), hashlib.sha256).hexdigest()


# ---- the engine: opening a boot attempt -----------------------------------------------------

_VOID_BOOT = (update(BootTokenRow)
              .where(BootTokenRow.binding_id == bindparam("binding"), BootTokenRow.kind == BOOT,
                     BootTokenRow.voided_at.is_(None))
              .values(voided_at=bindparam("now")))


def open_attempt(session: Session, binding: BindingRow, key: BootKey, *, job_id: str | None) -> str:
    """A new boot attempt for ``binding``'s (live) generation, awaited by ``job_id``; the
    binding's earlier attempts stop working. Returns the attempt's token (the engine does not
    need it; tests do). Raises ValueError when the generation is not live."""
    if binding.state != "live":
        raise ValueError(f"binding {binding.id} generation {binding.generation} is not live")
    now = utcnow()
    session.flush()
    session.connection().execute(_VOID_BOOT, {"binding": binding.id, "now": now})
    nonce = secrets.token_hex(16)
    token = key.token(nonce)
    session.add(BootTokenRow(binding_id=binding.id, generation=binding.generation, kind=BOOT,
                             token_hash=_hash(token), nonce=nonce, job_id=job_id, created_at=now))
    session.flush()
    return token


# ---- the boot service: reading the token for a script ------------------------------------

_ATTEMPT = (select(BootTokenRow.nonce)
            .where(BootTokenRow.binding_id == bindparam("binding"), BootTokenRow.generation == bindparam("gen"),
                   BootTokenRow.kind == BOOT, BootTokenRow.voided_at.is_(None), BootTokenRow.nonce.is_not(None))
            .order_by(BootTokenRow.id.desc()).limit(1))


def attempt_token(conn: Connection, binding_id: int, generation: int, key: BootKey) -> str | None:
    """The token of the binding generation's current boot attempt, derived; None when the engine
    opened none (then the script boots without one, and no callback can be made). A read."""
    nonce = conn.execute(_ATTEMPT, {"binding": binding_id, "gen": generation}).scalar()
    return key.token(nonce) if nonce else None


# ---- the callback ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Presented:
    """A boot token found valid in the store: its attempt row and binding (not yet spent)."""

    attempt: BootTokenRow
    binding: BindingRow


def find_attempt(session: Session, token: str) -> Presented | None:
    """The attempt ``token`` belongs to, when it is not voided and its binding generation is live."""
    found = _live_token(session, token, BOOT)
    return Presented(*found) if found is not None else None


def agent_quiet_since(session: Session, binding_id: int) -> datetime | None:
    """When the binding's agent last showed life (its newest heartbeat secret issued or used)."""
    row = session.scalars(select(BootTokenRow).where(BootTokenRow.binding_id == binding_id,
                                                     BootTokenRow.kind == HEARTBEAT)
                          .order_by(BootTokenRow.id.desc()).limit(1)).first()
    if row is None:
        return None
    return row.last_seen_at or row.created_at


def spend(session: Session, presented: Presented, *, now: datetime) -> tuple[bool, str]:
    """Spend the attempt (the first time only) and issue the generation's heartbeat secret,
    voiding earlier ones. Returns (first use, heartbeat secret)."""
    first = presented.attempt.used_at is None
    if first:
        presented.attempt.used_at = now
    return first, _issue_heartbeat(session, presented.binding)


def quiet_enough(session: Session, binding_id: int, *, now: datetime, quiet: timedelta) -> bool:
    """Whether a spent token may be presented again: the agent has sent nothing for ``quiet``
    (its OS rebooted). While it still beats, a second callback is a replay."""
    last = agent_quiet_since(session, binding_id)
    if last is None:
        return True
    last = last if last.tzinfo else last.replace(tzinfo=now.tzinfo)
    return now - last >= quiet


# ---- heartbeat secrets ---------------------------------------------------------------------------

# At most the newest heartbeat secret of a binding is live: earlier ones are voided when a new one is
# issued; only the newest few rows are looked at, so voiding stays O(1) however many have piled up.
_RECENT = 16
_COL = BootTokenRow.__table__.c
_VOID = (update(BootTokenRow)
         .where(BootTokenRow.id.in_(select(BootTokenRow.id)
                                    .where(BootTokenRow.binding_id == bindparam("binding"),
                                           BootTokenRow.kind == bindparam("token_kind"))
                                    .order_by(BootTokenRow.id.desc()).limit(_RECENT).scalar_subquery()),
                BootTokenRow.voided_at.is_(None))
         .values(voided_at=bindparam("now", type_=_COL.voided_at.type)))
_ADD_IF_LIVE = insert(BootTokenRow).from_select(
    ["binding_id", "generation", "kind", "token_hash", "created_at"],
    select(BindingRow.id, BindingRow.generation, bindparam("token_kind", type_=_COL.kind.type),
           bindparam("hash", type_=_COL.token_hash.type), bindparam("now", type_=_COL.created_at.type))
    .where(BindingRow.id == bindparam("binding"), BindingRow.state == "live",
           BindingRow.generation == bindparam("gen"))).returning(BootTokenRow.id)


def _issue_heartbeat(session: Session, binding: BindingRow) -> str:
    session.flush()
    conn = session.connection()
    now = utcnow()
    conn.execute(_VOID, {"binding": binding.id, "token_kind": HEARTBEAT, "now": now})
    secret = secrets.token_urlsafe(32)
    added = conn.execute(_ADD_IF_LIVE, {"binding": binding.id, "gen": binding.generation, "token_kind": HEARTBEAT,
                                        "hash": _hash(secret), "now": now})
    # RETURNING, not rowcount: psycopg reports -1 for INSERT … SELECT.
    if added.first() is None:
        raise ValueError(f"binding {binding.id} generation {binding.generation} is not live")
    return secret


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


def check_heartbeat(session: Session, secret: str) -> BindingRow | None:
    """Record a heartbeat; the binding it belongs to, or None for a wrong or stale secret."""
    found = _live_token(session, secret, HEARTBEAT)
    if found is None:
        return None
    row, binding = found
    row.last_seen_at = utcnow()
    return binding
