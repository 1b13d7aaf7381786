"""Change records: every change to a blade, profile, binding, VLAN, LUN grant, firmware or BIOS
setting, appended in the transaction of the change itself.

Two ways in, one table (:class:`~appliance.store.tables.ChangeRow`):

- **Rows** (blades, profiles, bindings) are watched: every write session of the
  :class:`~appliance.store.Store` records, on each flush, what its inserts, updates and deletes
  of those tables changed, whoever made them (a service, the engine, the monitor, the CLI).
  A rolled-back change therefore leaves no record, and no code path can forget to write one.
- **Hardware** (a switch port's VLANs, a LUN's initiators, firmware, BIOS) has no row of its
  own: a step calls :func:`hardware` once per change, which queues the record on the step's
  context; the runner writes it in the transaction that records the step done, so it exists
  exactly when the store says the step happened. ``before`` is the last recorded ``after`` of
  that resource (what the CMDB last heard), not a read of the device.

Who: the actor of the request or CLI call (appliance.store.audit), else the submitter of the
job whose step made the change, else ``engine``/``appliance``. The job and step come from a
context variable the runner sets around each step's database work (:func:`within`).

Time: the store's clock (``Store.clock``), injected by tests so usage can be checked to the
second; records of one transaction share one ``at`` and keep their order by id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, event, insert, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from appliance.store.audit import current_actor
from appliance.store.tables import BindingRow, BladeRow, ChangeRow, JobRow, ProfileRow, utcnow

if TYPE_CHECKING:
    from appliance.engine.model import StepContext

T = TypeVar("T")
CLOCK = "anvil.changes.clock"      # session.info: the store's clock
SUBMITTERS = "anvil.changes.submitters"   # session.info: the store's Submitters (shared by its sessions)
_WHO = "anvil.changes.who"         # session.info: job id -> its submitter, within one transaction

# Resource kinds, as they appear in records, filters and `--resource KIND/NAME`.
BLADE, PROFILE, BINDING, VLAN, LUN, FIRMWARE, BIOS = "blade", "profile", "binding", "vlan", "lun", "firmware", "bios"
KINDS = (BLADE, PROFILE, BINDING, VLAN, LUN, FIRMWARE, BIOS)

# Bookkeeping that says nothing about the resource, and secrets that never leave their row.
_SKIP = frozenset({"id", "created_at", "updated_at", "last_failed_at", "password_enc"})
# What a binding's end is called, by the kind of job that ended it.
_ENDED_BY = {"stamp": "rollback", "unstamp": "release", "failover": "fence"}


@dataclass(frozen=True, slots=True)
class JobStep:
    """The job step whose database work is running (set by the engine's runner)."""

    job_id: str
    kind: str
    step: str


_current: ContextVar[JobStep | None] = ContextVar("anvil_change_step", default=None)


def within(ref: JobStep, fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` made to run as ``ref``'s work (on whatever thread runs it: executor threads do not
    inherit the caller's context variables)."""
    def run() -> T:
        token = _current.set(ref)
        try:
            return fn()
        finally:
            _current.reset(token)
    return run


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [_plain(v) for v in value]
    return value


class Submitters:
    """Who submitted each job, as the store's sessions looked it up: a job's submitter never
    changes, and every write of a step that changes a watched row wants it (a stamp's bind and
    activate: one read each, under SQLite inside the one writer lock). Bounded: forgotten in bulk."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._by_job: dict[str, str] = {}

    def get(self, job_id: str) -> str | None:
        return self._by_job.get(job_id)

    def put(self, job_id: str, who: str) -> None:
        if len(self._by_job) >= self.LIMIT:
            self._by_job.clear()
        self._by_job[job_id] = who


def _who(conn: Connection, info: dict[str, Any], ref: JobStep | None) -> str:
    actor = current_actor()
    if actor is not None:
        return actor.who
    if ref is None:
        return "appliance"
    shared: Submitters | None = info.get(SUBMITTERS)
    known: dict[str, str] = info.setdefault(_WHO, {})
    if ref.job_id not in known:
        by = shared.get(ref.job_id) if shared is not None else None
        if by is None:
            by = conn.execute(select(JobRow.created_by).where(JobRow.id == ref.job_id)).scalar() or "engine"
            if shared is not None:
                shared.put(ref.job_id, by)
        known[ref.job_id] = by
    return known[ref.job_id]


def _columns(obj: Any, *, old: bool) -> dict[str, Any]:
    state = inspect(obj)
    out: dict[str, Any] = {}
    for attr in state.mapper.column_attrs:
        if attr.key in _SKIP:
            continue
        hist = state.attrs[attr.key].history
        value = (hist.deleted[0] if hist.deleted else hist.unchanged[0] if hist.unchanged else None) if old \
            else getattr(obj, attr.key)
        out[attr.key] = _plain(value)
    return out


def _changed(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The columns an update changed: their values before and after."""
    before, after = _columns(obj, old=True), _columns(obj, old=False)
    keys = [k for k in after if before.get(k) != after[k]]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}


def _profile_key(s: Session, profile_id: int) -> tuple[str, str]:
    row = s.get(ProfileRow, profile_id)
    return (row.tenant, f"{row.tenant}/{row.name}") if row is not None else ("?", f"?/#{profile_id}")


def _blade_name(s: Session, blade_id: int) -> str:
    row = s.get(BladeRow, blade_id)
    return row.name if row is not None else f"#{blade_id}"


def _binding_record(s: Session, row: BindingRow, action: str, ref: JobStep | None) -> dict[str, Any] | None:
    tenant, key = _profile_key(s, row.profile_id)
    where = {"blade": _blade_name(s, row.blade_id), "generation": row.generation}
    if action == "create":
        return {"resource": BINDING, "name": key, "tenant": tenant, "before": None, "after": where,
                "action": "move" if ref is not None and ref.kind == "failover" else "assign"}
    if action == "update":
        hist = inspect(row).attrs.state.history
        if not (hist.deleted and hist.deleted[0] == "live" and row.state != "live"):
            return None
    elif row.state != "live":
        return None   # forgetting an ended binding's history changes nothing
    return {"resource": BINDING, "name": key, "tenant": tenant, "before": where, "after": None,
            "action": _ENDED_BY.get(ref.kind, "end") if ref is not None else "forget"}


def _records(s: Session) -> list[dict[str, Any]]:
    ref = _current.get()
    out: list[dict[str, Any]] = []
    for action, objs in (("create", s.new), ("update", s.dirty), ("delete", s.deleted)):
        for obj in objs:
            if isinstance(obj, BindingRow):
                rec = _binding_record(s, obj, action, ref)
                if rec is not None:
                    out.append(rec)
                continue
            if not isinstance(obj, BladeRow | ProfileRow):
                continue
            before: dict[str, Any] | None
            after: dict[str, Any] | None
            if action == "update":
                if not s.is_modified(obj, include_collections=False):
                    continue
                before, after = _changed(obj)
                if not after:
                    continue
            else:
                before = _columns(obj, old=True) if action == "delete" else None
                after = _columns(obj, old=False) if action == "create" else None
            if isinstance(obj, BladeRow):
                out.append({"resource": BLADE, "name": obj.name, "tenant": None, "action": action,
                            "before": before, "after": after})
            else:
                out.append({"resource": PROFILE, "name": f"{obj.tenant}/{obj.name}", "tenant": obj.tenant,
                            "action": action, "before": before, "after": after})
    return out


def _before_flush(s: Session, _ctx: Any, _instances: Any) -> None:
    with s.no_autoflush:
        found = _records(s)
        if not found:
            return
        ref = _current.get()
        clock: Callable[[], datetime] = s.info.get(CLOCK, utcnow)
        at, who = clock(), _who(s.connection(), s.info, ref)
    for rec in found:
        s.add(ChangeRow(at=at, who=who, job_id=ref.job_id if ref else None, step=ref.step if ref else None,
                        **rec))


def _forget(s: Session) -> None:
    s.info.pop(_WHO, None)


def install(factory: sessionmaker[Session]) -> None:
    """Record the changes every write session made by ``factory`` makes to watched rows."""
    event.listen(factory, "before_flush", _before_flush)
    event.listen(factory, "after_commit", _forget)
    event.listen(factory, "after_soft_rollback", lambda s, _t: _forget(s))


# ---- hardware, through a step ------------------------------------------------------------------


def hardware(ctx: StepContext, resource: str, name: str, action: str, after: dict[str, Any] | None,
             *, tenant: str | None = None) -> None:
    """Queue the record of a change a step made on hardware (``resource`` one of VLAN, LUN,
    FIRMWARE, BIOS); written with the step's completion (or its undo's). ``tenant`` defaults
    to the job's."""
    ctx.changes.append({"resource": resource, "name": name, "action": action, "after": _plain(after),
                        "tenant": tenant if tenant is not None else ctx.params.get("tenant")})


def write_queued(conn: Connection, info: dict[str, Any], ref: JobStep, queued: Iterable[dict[str, Any]],
                 *, at: datetime) -> None:
    """Insert the records :func:`hardware` queued for ``ref``, in the caller's transaction."""
    rows = []
    for rec in queued:
        last = conn.execute(select(ChangeRow.after).where(ChangeRow.resource == rec["resource"],
                                                          ChangeRow.name == rec["name"])
                            .order_by(ChangeRow.id.desc()).limit(1)).first()
        rows.append({**rec, "before": last[0] if last else None, "at": at, "job_id": ref.job_id,
                     "step": ref.step, "who": _who(conn, info, ref)})
    if rows:
        conn.execute(insert(ChangeRow), rows)
