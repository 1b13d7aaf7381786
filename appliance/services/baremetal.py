"""The store side of the Bare Metal (Ironic-compatible) API: blades read as nodes, in bulk, and
the few things that API keeps beyond Anvil's model (``baremetal_nodes``, one row per blade at most).

Anvil's model stays the authority: a blade is spare (placement may take it), in maintenance,
failed, or bound to a profile by a live binding. What the API adds is a *hold*: the state the
API keeps a blade in while it is not available for deployment (Ironic's ``enroll``,
``manageable``, and the states of the work between them). A held blade is in Anvil maintenance
with :data:`HOLD_REASON`, so placement never takes it; an admin's own maintenance keeps the
admin's reason, which is how the two are told apart. Releasing a hold returns the blade to the
spares (or leaves it in the admin's maintenance).

Every look-up goes through :mod:`appliance.services.scope`: a tenant-scoped caller sees only
the blades bound to its profiles, and anything else reads as missing. Nothing here knows
Ironic's field names or state names beyond the hold values; appliance.api.ironic maps both ways.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from appliance.domain.states import BLADE_TRANSITIONS, BladeState, transition
from appliance.drivers.protocols import BladeFacts
from appliance.engine.steps import KINDS
from appliance.errors import Conflict, NotFound
from appliance.secrets import SecretBox
from appliance.services import scope as lookup
from appliance.services.blades import BladeService, Enrollment
from appliance.services.inventory import latest_health
from appliance.services.profiles import PROFILE, ProfileService
from appliance.services.scope import Scope
from appliance.store import Store
from appliance.store.tables import BaremetalNodeRow, BindingRow, BladeRow, JobRow, ProfileRow

log = logging.getLogger(__name__)

HOLD_REASON = "held by the Bare Metal API until it is provided"
HOLDS = frozenset({"enroll", "verifying", "manageable", "inspecting", "inspect failed", "cleaning", "clean failed"})
SORT_KEYS = ("id", "name", "uuid", "created_at", "updated_at")
_CHUNK = 500
# What a node record needs of a blade: read as columns, not as ORM objects (a list page of a
# hundred nodes spent more on loading objects than on anything else).
NODE_COLUMNS = (BladeRow.id, BladeRow.uuid, BladeRow.name, BladeRow.driver, BladeRow.bmc_address, BladeRow.username,
                BladeRow.verify_tls, BladeRow.state, BladeRow.state_reason, BladeRow.cpus, BladeRow.memory_gib,
                BladeRow.facts, BladeRow.created_at, BladeRow.updated_at)
_IDS: Any = bindparam("ids", expanding=True)
_EDGES = select(BaremetalNodeRow.__table__).where(BaremetalNodeRow.blade_id.in_(_IDS))
_BOUND = (select(BindingRow.blade_id, BindingRow.job_id, ProfileRow.tenant, ProfileRow.name,
                 ProfileRow.document["spec"]["identity"]["uuid"].as_string())
          .join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
          .where(BindingRow.state == "live", BindingRow.blade_id.in_(_IDS)))


@dataclass(frozen=True, slots=True)
class JobFacts:
    id: str
    kind: str
    state: str
    step: str | None          # the step it is at (None once over)
    error: str | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A blade as the Bare Metal API shows it: Anvil's facts plus the API's own row."""

    id: int
    uuid: str
    name: str
    driver: str
    bmc: str
    username: str
    verify_tls: bool
    state: str
    state_reason: str | None
    cpus: int | None
    memory_gib: int | None
    facts: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    hold: str | None = None
    hold_since: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    instance_info: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    driver_info: dict[str, Any] = field(default_factory=dict)
    last_error: str | None = None
    provision_updated_at: datetime | None = None
    profile: tuple[str, str] | None = None     # (tenant, name) of the profile live on it
    profile_uuid: str | None = None            # that profile's identity UUID, when concrete
    job: JobFacts | None = None                # the last deploy or undeploy asked through the API
    binding_job: JobFacts | None = None        # the job that made its live binding
    power: str | None = None                   # the monitor's last reading
    power_at: datetime | None = None           # when it was taken

    @property
    def held(self) -> str | None:
        """The API's hold, when it still applies (a blade an admin returned to the spares has none)."""
        return self.hold if self.hold in HOLDS and self.state != BladeState.SPARE else None


@dataclass(frozen=True, slots=True)
class NodeFields:
    """The free-form fields a client sets; None leaves one as it is."""

    extra: dict[str, Any] | None = None
    instance_info: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None        # beyond cpus and memory
    driver_info: dict[str, Any] | None = None       # keys Anvil does not use, no secrets
    cpus: int | None = None
    memory_gib: int | None = None
    clear_cpus: bool = False
    clear_memory: bool = False


def aware(t: datetime | None) -> datetime | None:
    return None if t is None else t if t.tzinfo else t.replace(tzinfo=UTC)


def _at(text: str | None) -> datetime | None:
    return aware(datetime.fromisoformat(text)) if text else None


def _now() -> datetime:
    return datetime.now(UTC)


def _step(kind: str, index: int, state: str) -> str | None:
    names = KINDS[kind].step_names if kind in KINDS else []
    return names[index] if state in ("pending", "running", "waiting", "rolling_back") and index < len(names) else None


def _jobs(s: Session, ids: Iterable[str]) -> dict[str, JobFacts]:
    wanted = sorted({i for i in ids if i})
    out: dict[str, JobFacts] = {}
    for i in range(0, len(wanted), _CHUNK):
        for j in s.execute(select(JobRow.id, JobRow.kind, JobRow.state, JobRow.step_index, JobRow.error,
                                  JobRow.finished_at).where(JobRow.id.in_(wanted[i:i + _CHUNK]))):
            out[j.id] = JobFacts(j.id, j.kind, j.state, _step(j.kind, j.step_index, j.state), j.error,
                                 aware(j.finished_at))
    return out


def records(s: Session, blades: Sequence[Any]) -> list[NodeRecord]:
    """Node records of ``blades`` (:class:`BladeRow` objects, or rows of :data:`NODE_COLUMNS`), in
    their order, in a few reads whatever their number."""
    ids = [b.id for b in blades]
    conn = s.connection()
    edges: dict[int, Any] = {}
    bound: dict[int, tuple[str | None, str, str, str | None]] = {}
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        edges.update({e.blade_id: e for e in conn.execute(_EDGES, {"ids": chunk}).all()})
        for blade_id, job_id, tenant, name, puuid in conn.execute(_BOUND, {"ids": chunk}).all():
            bound[blade_id] = (job_id, tenant, name, puuid)
    jobs = _jobs(s, [e.job_id for e in edges.values() if e.job_id] + [b[0] for b in bound.values() if b[0]])
    health = latest_health(s, ids)
    out = []
    for b in blades:
        e, live = edges.get(b.id), bound.get(b.id)
        puuid = live[3] if live and live[3] and not live[3].startswith("pool:") else None
        out.append(NodeRecord(
            id=b.id, uuid=b.uuid, name=b.name, driver=b.driver, bmc=b.bmc_address, username=b.username,
            verify_tls=b.verify_tls, state=b.state, state_reason=b.state_reason, cpus=b.cpus,
            memory_gib=b.memory_gib, facts=dict(b.facts or {}), created_at=aware(b.created_at) or _now(),
            updated_at=aware(b.updated_at) or _now(),
            hold=e.hold if e else None, hold_since=aware(e.hold_since) if e else None,
            extra=dict(e.extra or {}) if e else {}, instance_info=dict(e.instance_info or {}) if e else {},
            properties=dict(e.properties or {}) if e else {}, driver_info=dict(e.driver_info or {}) if e else {},
            last_error=e.last_error if e else None,
            provision_updated_at=aware(e.provision_updated_at) if e else None,
            profile=(live[1], live[2]) if live else None, profile_uuid=puuid,
            job=jobs.get(e.job_id) if e and e.job_id else None,
            binding_job=jobs.get(live[0]) if live and live[0] else None,
            power=(health.get(b.id) or {}).get("power"), power_at=_at((health.get(b.id) or {}).get("healthAt"))))
    return out


class BaremetalService:
    def __init__(self, store: Store, box: SecretBox) -> None:
        self._store = store
        self._box = box

    # -- reading ---------------------------------------------------------------------

    def node(self, scope: Scope, ident: str) -> NodeRecord:
        """The node ``ident`` (UUID or name) in the caller's sight; NotFound otherwise."""
        with self._store.read() as s:
            return records(s, [lookup.blade_row_by_ident(s, scope, ident)])[0]

    def nodes(self, scope: Scope, *, limit: int, marker: str | None = None, sort_key: str = "id",
              sort_dir: str = "asc", driver: str | None = None, associated: bool | None = None,
              keep: Callable[[NodeRecord], bool] | None = None) -> tuple[list[NodeRecord], bool]:
        """A page of nodes in sight, ordered by ``sort_key`` (then id), after the node ``marker``
        (a UUID or name in sight); ``keep`` filters on what only records tell. Returns the page
        and whether more may follow."""
        if sort_key not in SORT_KEYS:
            raise ValueError(f"sort_key {sort_key!r} is not one of {SORT_KEYS}")
        column = getattr(BladeRow, sort_key)
        desc = sort_dir == "desc"
        with self._store.read() as s:
            stmt = lookup.blades_in_sight(select(*NODE_COLUMNS), scope)
            if driver is not None:
                stmt = stmt.where(BladeRow.driver == driver)
            if associated is not None:
                live = select(BindingRow.blade_id).where(BindingRow.state == "live")
                stmt = stmt.where(BladeRow.id.in_(live) if associated else BladeRow.id.not_in(live))
            if marker is not None:
                m_id, value = lookup.blade_columns_by_ident(s, scope, marker, BladeRow.id, column)
                after = (column < value) | ((column == value) & (BladeRow.id < m_id)) if desc else \
                    (column > value) | ((column == value) & (BladeRow.id > m_id))
                stmt = stmt.where(after)
            stmt = stmt.order_by(column.desc() if desc else column, BladeRow.id.desc() if desc else BladeRow.id)
            page: list[NodeRecord] = []
            offset = 0
            while len(page) <= limit:
                rows = s.connection().execute(stmt.offset(offset).limit(limit + 1 if keep is None else _CHUNK)).all()
                got = records(s, rows)
                page += [r for r in got if keep is None or keep(r)]
                offset += len(rows)
                if keep is None or len(rows) < _CHUNK:
                    break
            return page[:limit], len(page) > limit

    # -- writing ---------------------------------------------------------------------

    def enroll(self, req: Enrollment, *, hold: str | None, fields: NodeFields) -> NodeRecord:
        """Enrol a blade for the API: held in ``hold`` (in maintenance from its first moment) or
        spare at once (None), with the client's free-form fields."""
        with self._store.write() as s:
            row = BladeService(self._store, self._box).enroll_in(
                s, Enrollment(**{**_fields_of(req), "maintenance_reason": HOLD_REASON if hold else None}))
            edge = BaremetalNodeRow(blade_id=row.id, hold=hold, hold_since=_now() if hold else None,
                                    extra=fields.extra or {}, instance_info=fields.instance_info or {},
                                    properties=fields.properties or {}, driver_info=fields.driver_info or {},
                                    provision_updated_at=_now())
            s.add(edge)
            s.flush()
            return records(s, [row])[0]

    def update(self, scope: Scope, ident: str, fields: NodeFields | Callable[[NodeRecord], NodeFields]) -> NodeRecord:
        """Set ``fields``, or what ``fields(node)`` makes of the node as it is inside this write (a
        patch: read and written in one transaction, so concurrent patches of one node all land)."""
        with self._store.write() as s:
            blade = lookup.blade_row_by_ident(s, scope, ident, lock=True)
            if callable(fields):
                fields = fields(records(s, [blade])[0])
            edge = _edge(s, blade.id)
            for name in ("extra", "instance_info", "properties", "driver_info"):
                value = getattr(fields, name)
                if value is not None:
                    setattr(edge, name, value)
            if fields.cpus is not None or fields.clear_cpus:
                blade.cpus = fields.cpus
            if fields.memory_gib is not None or fields.clear_memory:
                blade.memory_gib = fields.memory_gib
            s.flush()
            return records(s, [blade])[0]

    def set_hold(self, scope: Scope, ident: str, new: str | None, *, expect: frozenset[str | None],
                 error: str | None = None, clear_job: bool = False, facts: BladeFacts | None = None) -> NodeRecord:
        """Move the node's hold from one of ``expect`` (None: not held) to ``new`` in one
        transaction; Conflict when it is elsewhere by now (another request won) or bound to a
        profile. Holding a spare blade puts it into maintenance (:data:`HOLD_REASON`); ending the
        hold returns it to the spares unless an admin's maintenance holds it. ``facts`` (an
        inspection's) go into the inventory in the same transaction."""
        with self._store.write() as s:
            blade = lookup.blade_row_by_ident(s, scope, ident, lock=True)
            if s.scalar(select(BindingRow.id).where(BindingRow.blade_id == blade.id, BindingRow.state == "live")):
                raise Conflict(f"blade {blade.name!r} is bound to a profile")
            edge = _edge(s, blade.id)
            current = edge.hold if edge.hold in HOLDS and blade.state != BladeState.SPARE else None
            if current not in expect:
                raise Conflict(f"blade {blade.name!r} is {current or blade.state} by now")
            if new is None:
                if blade.state == BladeState.MAINTENANCE and blade.state_reason == HOLD_REASON:
                    blade.state = transition(BLADE_TRANSITIONS, BladeState(blade.state), BladeState.SPARE,
                                             what=f"blade {blade.name}").value
                    blade.state_reason = None
            elif blade.state == BladeState.SPARE:
                blade.state = transition(BLADE_TRANSITIONS, BladeState.SPARE, BladeState.MAINTENANCE,
                                         what=f"blade {blade.name}").value
                blade.state_reason = HOLD_REASON
            if facts is not None:
                BladeService(self._store, self._box).apply_facts_in(s, blade, facts)
            edge.hold, edge.hold_since = new, _now()
            edge.last_error = error
            edge.provision_updated_at = _now()
            if clear_job:
                edge.job_id = None
            s.flush()
            log.info("bare metal API: blade %s %s -> %s", blade.name, current or "available", new or "available",
                     extra={"blade": blade.name})
            return records(s, [blade])[0]

    def set_maintenance(self, scope: Scope, ident: str, on: bool, reason: str | None = None) -> NodeRecord:
        """The API's maintenance flag is Anvil's maintenance with an admin's reason (the API's own
        hold is not maintenance to a client)."""
        with self._store.write() as s:
            blade = lookup.blade_row_by_ident(s, scope, ident)
            edge = _edge(s, blade.id)
            held = edge.hold in HOLDS and blade.state != BladeState.SPARE
            if on:
                if blade.state not in (BladeState.SPARE, BladeState.MAINTENANCE):
                    raise Conflict(f"blade {blade.name!r} is {blade.state}; Anvil takes only a spare blade "
                                   "(or one in maintenance already) into maintenance")
                blade.state = BladeState.MAINTENANCE.value
                blade.state_reason = (reason or "set through the Bare Metal API")[:512]
            elif blade.state == BladeState.MAINTENANCE and blade.state_reason != HOLD_REASON:
                if held:
                    blade.state_reason = HOLD_REASON
                else:
                    blade.state, blade.state_reason = BladeState.SPARE.value, None
            elif blade.state in (BladeState.FAILED, BladeState.FENCED):
                raise Conflict(f"blade {blade.name!r} is {blade.state}: an admin clears it once repaired "
                               f"(anvil failover clear {blade.name})")
            s.flush()
            return records(s, [blade])[0]

    def record_job(self, scope: Scope, ident: str, job_id: str | None, *, instance_info: dict[str, Any] | None = None
                   ) -> None:
        """Remember (or forget, None) the node's last deploy or undeploy: its state follows that job."""
        with self._store.write() as s:
            note_job(s, lookup.blade_row_by_ident(s, scope, ident).id, job_id, instance_info=instance_info)

    def delete(self, scope: Scope, ident: str) -> None:
        """Delete the blade (BladeService.delete's rules) and a profile made for it, if unassigned."""
        with self._store.read() as s:
            blade = lookup.blade_row_by_ident(s, scope, ident)
            edge = s.get(BaremetalNodeRow, blade.id)
            made = s.get(ProfileRow, edge.profile_id) if edge is not None and edge.made_profile and \
                edge.profile_id else None
            name, made_name = blade.name, (made.tenant, made.name) if made is not None else None
        BladeService(self._store, self._box).delete(name)
        if made_name is not None:
            # In use again, or gone already: then it is not the node's to delete any more.
            with contextlib.suppress(Conflict, NotFound):
                ProfileService(self._store).delete(PROFILE, made_name[0], made_name[1])


def note_job(s: Session, blade_id: int, job_id: str | None, *, profile_id: int | None = None,
             made_profile: bool = False, instance_info: dict[str, Any] | None = None) -> None:
    """In the caller's transaction (the one that creates the job): the node's state follows ``job_id``."""
    edge = _edge(s, blade_id)
    edge.job_id, edge.last_error, edge.provision_updated_at = job_id, None, _now()
    if profile_id is not None:
        edge.profile_id, edge.made_profile = profile_id, made_profile
    if instance_info is not None:
        edge.instance_info = instance_info


def _edge(s: Session, blade_id: int) -> BaremetalNodeRow:
    edge = s.get(BaremetalNodeRow, blade_id)
    if edge is None:
        edge = BaremetalNodeRow(blade_id=blade_id, extra={}, instance_info={}, properties={}, driver_info={})
        s.add(edge)
        s.flush()
    return edge


def _fields_of(req: Enrollment) -> dict[str, Any]:
    return {f: getattr(req, f) for f in Enrollment.__dataclass_fields__}
