"""The audit trail: every change made on behalf of someone, in the same transaction.

Who acted is an :class:`Actor` in a context variable, set once per CLI call
(``local:OSUSER``), per API request (the user or token name, and the peer address)
and per console request. Write sessions of the :class:`~appliance.store.Store`
watch their flushes: each insert, update or delete of an audited table, made
while an actor is set, becomes one :class:`AuditRow` with the values before and
after, written in the same transaction as the change (so a rolled-back change
leaves no entry). The engine runs without an actor; what it does follows from a
job, and the job's submission is audited.

Each entry carries the hash of the previous one (a chain): ``verify`` recomputes
it and names the first entry that does not match. A store opened with an
:class:`~appliance.store.audit_seal.AuditSeal` keys the chain (HMAC with a key
outside the database) and moves the signed head after each commit (see that
module for what this protects against). Triggers make the table append-only, and
writers serialise on the chain's tail (SQLite: the write lock of BEGIN IMMEDIATE;
PostgreSQL: a transaction-level advisory lock).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, func, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

# Re-exported: the actor is set where changes are made, and read here (appliance.store.actor).
from appliance.store.actor import Actor as Actor
from appliance.store.actor import acting_as as acting_as
from appliance.store.actor import current_actor as current_actor
from appliance.store.actor import set_actor as set_actor
from appliance.store.audit_seal import GENESIS, AuditSeal, Head, unkeyed_hash
from appliance.store.tables import AuditRow, utcnow

_LOCK_KEY = 0x616E76696C  # "anvil": the PostgreSQL advisory lock of the audit chain's tail
_PENDING = "anvil.audit.pending"
SEAL = "anvil.audit.seal"           # session.info: the store's AuditSeal, if any
_NEW_HEAD = "anvil.audit.new_head"  # session.info: the head to write once the commit is done
_COMMITTED_HEAD = "anvil.audit.committed_head"   # session.info: committed, its file not written yet

# table → resource name used in the trail
AUDITED = {
    "profiles": "profile", "identity_pools": "identity-pool", "blades": "blade", "switches": "switch",
    "blade_pools": "blade-pool", "api_tokens": "token", "users": "user", "jobs": "job",
    "host_pools": "host-pool", "host_webhooks": "host-webhook", "host_quotas": "host-quota",
    "dr_plans": "dr-plan",
    "racks": "rack",    # added, removed, token rotated; heartbeats are core updates, not in the trail
}
# Never copied into the trail, whatever the table.
SECRET_COLUMNS = frozenset({"password_enc", "privacy_enc", "password_hash", "token_hash", "session_hash",
                            "csrf_token", "secret_enc"})
# Bookkeeping that changes with every write and says nothing about the change.
NOISE_COLUMNS = frozenset({"updated_at", "failed_logins", "locked_until"})


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _values(obj: Any, *, committed: bool) -> dict[str, Any]:
    state = inspect(obj)
    out: dict[str, Any] = {}
    for attr in state.mapper.column_attrs:
        key = attr.key
        if key in NOISE_COLUMNS or key == "id":
            continue
        if key in SECRET_COLUMNS and getattr(obj, key) is not None:
            changed = not committed and bool(state.attrs[key].history.deleted)
            out[key] = "*** (changed)" if changed else "***"
            continue
        if committed:
            hist = state.attrs[key].history
            if hist.deleted:
                value = hist.deleted[0]
            elif hist.unchanged:
                value = hist.unchanged[0]
            else:
                value = getattr(obj, key)
        else:
            value = getattr(obj, key)
        out[key] = _plain(value)
    return out


def _key(obj: Any) -> str:
    name = getattr(obj, "name", None)
    if name is None:
        name = getattr(obj, "id", None)
    return str(name)


def _before_flush(session: Session, _ctx: Any, _instances: Any) -> None:
    actor = current_actor()
    if actor is None:
        return
    pending: dict[tuple[str, str], dict[str, Any]] = session.info.setdefault(_PENDING, {})
    for action, objs in (("create", session.new), ("update", session.dirty), ("delete", session.deleted)):
        for obj in objs:
            table = getattr(obj, "__tablename__", None)
            if table not in AUDITED:
                continue
            if action == "update" and not session.is_modified(obj, include_collections=False):
                continue
            before = None if action == "create" else _values(obj, committed=True)
            after = None if action == "delete" else _values(obj, committed=False)
            if action == "update" and before == after:
                continue
            entry_key = (table, _key(obj))
            prior = pending.get(entry_key)
            if prior is not None:  # the same object flushed twice in one transaction: one entry
                if prior["action"] == "create" and action == "delete":
                    del pending[entry_key]
                    continue
                prior["after"] = after
                if action == "delete":
                    prior["action"] = "delete"
                continue
            pending[entry_key] = {"action": action, "resource": AUDITED[table], "name": _key(obj),
                                  "tenant": getattr(obj, "tenant", None), "before": before, "after": after,
                                  "actor": actor}


def entry_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """The unkeyed hash of entries written without a seal (and before the chain was keyed)."""
    return unkeyed_hash(prev_hash, fields)


def hashed_fields(row: AuditRow) -> dict[str, Any]:
    at = (row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)).astimezone(UTC)
    return {"at": at.isoformat(timespec="microseconds"), "who": row.who, "origin": row.origin,
            "action": row.action, "resource": row.resource, "name": row.name, "tenant": row.tenant,
            "before": row.before, "after": row.after}


def _tail(session: Session) -> tuple[int, str]:
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    last = conn.execute(select(AuditRow.id, AuditRow.hash).order_by(AuditRow.id.desc()).limit(1)).first()
    return (int(last[0]), str(last[1])) if last is not None else (0, GENESIS)


def _count_through(session: Session, seal: AuditSeal, tail: tuple[int, str], added: int, last_id: int) -> int:
    """Entries up to ``last_id``: from the head when it names the tail we chained on (the one this
    process committed last, else the file's), else counted."""
    tail_id = tail[0]
    mine = seal.last_committed()
    if mine is not None and (mine.last_id, mine.last_hash) == tail:
        return mine.count + added
    try:
        head = seal.read_head()
    except ValueError:
        head = None
    if head is not None and head.last_id == tail_id:
        return head.count + added
    return int(session.scalar(select(func.count(AuditRow.id)).where(AuditRow.id <= last_id)) or 0)


def _before_commit(session: Session) -> None:
    session.flush()  # the changes still unflushed are recorded by this flush
    pending: dict[tuple[str, str], dict[str, Any]] | None = session.info.pop(_PENDING, None)
    if not pending:
        return
    seal: AuditSeal | None = session.info.get(SEAL)
    tail = _tail(session)
    prev = tail[1]
    rows = []
    for entry in pending.values():
        actor: Actor = entry["actor"]
        row = AuditRow(at=utcnow(), who=actor.who, origin=actor.origin, action=entry["action"],
                       resource=entry["resource"], name=entry["name"], tenant=entry["tenant"],
                       before=entry["before"], after=entry["after"], prev_hash=prev, keyed=seal is not None)
        fields = hashed_fields(row)
        row.hash = seal.entry_hash(prev, fields) if seal is not None else unkeyed_hash(prev, fields)
        prev = row.hash
        session.add(row)
        rows.append(row)
    session.flush()
    if seal is not None:
        last = rows[-1]
        session.info[_NEW_HEAD] = Head(_count_through(session, seal, tail, len(rows), last.id), last.id, last.hash)


def _after_commit(session: Session) -> None:
    head: Head | None = session.info.pop(_NEW_HEAD, None)
    seal: AuditSeal | None = session.info.get(SEAL)
    if head is not None and seal is not None:
        seal.committed(head)
        session.info[_COMMITTED_HEAD] = head


def publish_head(session: Session) -> None:
    """Write the signed head of the entries ``session`` committed (if any) to its file. The store
    calls it once its writer lock is released: under SQLite every writer of the process waits
    for that lock, and the file's write and rename took longer than the transaction itself
    under a busy disk (a hundred deploys at once: 4.7 ms of 14 ms a submit). The next commit
    meanwhile counts from the head noted in memory, not from the file."""
    head: Head | None = session.info.pop(_COMMITTED_HEAD, None)
    seal: AuditSeal | None = session.info.get(SEAL)
    if head is not None and seal is not None:
        seal.advance(head)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop(_NEW_HEAD, None)
    session.info.pop(_COMMITTED_HEAD, None)


def install(factory: sessionmaker[Session]) -> None:
    """Audit every write session made by ``factory``."""
    event.listen(factory, "before_flush", _before_flush)
    event.listen(factory, "before_commit", _before_commit)
    event.listen(factory, "after_commit", _after_commit)
    event.listen(factory, "after_soft_rollback", lambda s, _t: _after_rollback(s))


def record(session: Session, *, action: str, resource: str, name: str, tenant: str | None = None,
           before: dict[str, Any] | None = None, after: dict[str, Any] | None = None) -> None:
    """Add an entry for a change that is not a row of an audited table (power, boot: acts on hardware)."""
    actor = current_actor()
    if actor is None:
        return
    pending: dict[tuple[str, str], dict[str, Any]] = session.info.setdefault(_PENDING, {})
    pending[(f"{resource}:{action}", f"{name}:{len(pending)}")] = {
        "action": action, "resource": resource, "name": name, "tenant": tenant, "before": before,
        "after": after, "actor": actor}
