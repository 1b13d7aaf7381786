"""Tables. Every invariant that can be a constraint is one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class ProfileRow(Base):
    """A ServerProfile or ServerProfileTemplate; ``document`` is the canonical dict."""

    __tablename__ = "profiles"
    __table_args__ = (UniqueConstraint("kind", "tenant", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    tenant: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(63))
    document: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(32), default="unassigned")
    # NULL: this site holds the profile and may stamp it. Otherwise the name of the paired site
    # where it is owned or live (a replica from there, or one whose lease DR activation moved
    # away): this site refuses to stamp it (appliance.sites.lease).
    site_lease: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class IdentityPoolRow(Base):
    __tablename__ = "identity_pools"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    kind: Mapped[str] = mapped_column(String(8))
    start: Mapped[str] = mapped_column(String(255))
    end: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str | None] = mapped_column(String(223))
    size: Mapped[int] = mapped_column(BigInteger)
    # Where the next allocation starts looking; allocation wraps to 0 to reuse released offsets.
    next_offset: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdentityRow(Base):
    """One identity in use. ``space`` groups kinds that share a namespace (WWPN and WWNN are both WWNs)."""

    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("space", "value"),
        UniqueConstraint("pool_id", "offset"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    space: Mapped[str] = mapped_column(String(8))
    value: Mapped[str] = mapped_column(String(255))
    pool_id: Mapped[int | None] = mapped_column(ForeignKey("identity_pools.id", ondelete="RESTRICT"), index=True)
    offset: Mapped[int | None] = mapped_column(BigInteger)
    # The profile holding it; deleting the profile returns the identity to its pool.
    profile_id: Mapped[int | None] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"), index=True)
    path: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SwitchRow(Base):
    __tablename__ = "switches"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    driver: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(512))
    username: Mapped[str] = mapped_column(String(255), default="")
    password_enc: Mapped[str | None] = mapped_column(Text)
    privacy_enc: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def new_uuid() -> str:
    return str(uuid4())


class BladeRow(Base):
    __tablename__ = "blades"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    # Stable for the blade's life (the Bare Metal API's node UUID); a client may choose it at enrolment.
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_uuid)
    bmc_address: Mapped[str] = mapped_column(String(512))
    driver: Mapped[str] = mapped_column(String(32))
    username: Mapped[str] = mapped_column(String(255))
    # Fernet token of the BMC password; never the password itself.
    password_enc: Mapped[str] = mapped_column(Text)
    verify_tls: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(32), default="spare", index=True)
    chassis: Mapped[str | None] = mapped_column(String(63))
    slot: Mapped[int | None] = mapped_column(Integer)
    cpus: Mapped[int | None] = mapped_column(Integer)
    memory_gib: Mapped[int | None] = mapped_column(Integer)
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_failed_at: Mapped[datetime | None]
    state_reason: Mapped[str | None] = mapped_column(String(512))
    # The rack controller cabled to the blade's provisioning NIC (appliance.services.racks); None:
    # the appliance's own boot role serves it.
    rack_id: Mapped[int | None] = mapped_column(ForeignKey("racks.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RackRow(Base):
    """A rack controller: a boot role on one provisioning network, registered with the region with
    its own token (stored hashed), serving the blades whose ``rack_id`` is this row's."""

    __tablename__ = "racks"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    networks: Mapped[list[str]] = mapped_column(JSON, default=list)       # declared by the admin
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    version: Mapped[str | None] = mapped_column(String(64))
    boot_url: Mapped[str | None] = mapped_column(String(255))             # how its blades reach it
    reported_networks: Mapped[list[str]] = mapped_column(JSON, default=list)  # from its heartbeat
    last_seen_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BaremetalNodeRow(Base):
    """What the Bare Metal (Ironic-compatible) API keeps about a blade beyond Anvil's own model
    (appliance.api.ironic): the state the API holds a blade in while it is not available
    (``hold``: enroll, verifying, manageable, inspecting, inspect failed, cleaning, clean failed;
    the blade itself is then in maintenance), the client's free-form fields, and the last deploy
    or undeploy asked through the API. A blade without a row is simply available or in use."""

    __tablename__ = "baremetal_nodes"

    blade_id: Mapped[int] = mapped_column(ForeignKey("blades.id", ondelete="CASCADE"), primary_key=True)
    hold: Mapped[str | None] = mapped_column(String(16))
    hold_since: Mapped[datetime | None]
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    instance_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)    # those Anvil has no column for
    driver_info: Mapped[dict[str, Any]] = mapped_column(default=dict)   # keys Anvil does not use; no secrets
    last_error: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(String(36))
    profile_id: Mapped[int | None] = mapped_column(ForeignKey("profiles.id", ondelete="SET NULL"))
    made_profile: Mapped[bool] = mapped_column(Boolean, default=False)  # profile_id was made for this node
    provision_updated_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BladeNicRow(Base):
    """A blade NIC by burned-in MAC, and the switch port it is cabled to."""

    __tablename__ = "blade_nics"
    __table_args__ = (
        UniqueConstraint("blade_id", "position"),
        UniqueConstraint("mac"),
        UniqueConstraint("switch_id", "port"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    blade_id: Mapped[int] = mapped_column(ForeignKey("blades.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(63))
    mac: Mapped[str] = mapped_column(String(17))
    switch_id: Mapped[int | None] = mapped_column(ForeignKey("switches.id", ondelete="RESTRICT"))
    port: Mapped[str | None] = mapped_column(String(63))


UNREVOKED = text("revoked_at IS NULL")


class ApiTokenRow(Base):
    """A bearer token, stored as its SHA-256; the token itself is shown once. A name is unique
    among its owner's tokens that are not revoked (``owner``: who created it)."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        Index("uq_api_tokens_owner_name", "owner", "name", unique=True, sqlite_where=UNREVOKED,
              postgresql_where=UNREVOKED),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    owner: Mapped[str] = mapped_column(String(128), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="admin")
    tenant: Mapped[str | None] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


LIVE = text("state = 'live'")
ACTIVE_JOB = text("state IN ('pending', 'running', 'waiting', 'rolling_back')")


class BindingRow(Base):
    """Profile ↔ blade. At most one *live* binding per profile and per blade, enforced by
    partial unique indexes; ``generation`` grows with every binding of the profile."""

    __tablename__ = "bindings"
    __table_args__ = (
        UniqueConstraint("profile_id", "generation"),
        Index("uq_bindings_live_profile", "profile_id", unique=True, sqlite_where=LIVE, postgresql_where=LIVE),
        Index("uq_bindings_live_blade", "blade_id", unique=True, sqlite_where=LIVE, postgresql_where=LIVE),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id", ondelete="RESTRICT"))
    blade_id: Mapped[int] = mapped_column(ForeignKey("blades.id", ondelete="RESTRICT"))
    generation: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="live")
    job_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]


class JobRow(Base):
    """A durable job. Only the engine leader runs jobs; ``lease_owner`` is that leader."""

    __tablename__ = "jobs"
    __table_args__ = (
        # One unfinished job per profile: concurrent assigns of one profile cannot both proceed.
        Index("uq_jobs_active_profile", "profile_id", unique=True, sqlite_where=ACTIVE_JOB,
              postgresql_where=ACTIVE_JOB),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    profile_id: Mapped[int | None] = mapped_column(ForeignKey("profiles.id", ondelete="SET NULL"), index=True)
    subject: Mapped[str] = mapped_column(String(255))
    tenant: Mapped[str | None] = mapped_column(String(63), index=True)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    step_index: Mapped[int] = mapped_column(Integer, default=0)
    step_count: Mapped[int] = mapped_column(Integer, default=0)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    waiting_for: Mapped[str | None] = mapped_column(String(255))
    wait_event: Mapped[str | None] = mapped_column(String(64))
    deadline_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # The SHA-256 of (caller, tenant, key) (appliance.services.scope), and of the request it was sent with.
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]


class JobStepRow(Base):
    __tablename__ = "job_steps"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class JobEventRow(Base):
    """What happened in a job, in order; feeds `job watch` and /jobs/{id}/events."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class LeaderRow(Base):
    """The engine leader's lease and fencing token (PostgreSQL adds an advisory lock)."""

    __tablename__ = "engine_leader"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime]
    # The fencing token: one more at every change of leader; step commits check it.
    epoch: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class BladePoolRow(Base):
    """A named set of blades (the pool ``spares``, every enrolled blade, is implicit)."""

    __tablename__ = "blade_pools"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    tenant: Mapped[str | None] = mapped_column(String(63))   # granted to this tenant, if any
    description: Mapped[str] = mapped_column(String(255), default="")
    # Which blades placement tries first: physical (VM slots last, the default), virtual, or any.
    prefer: Mapped[str] = mapped_column(String(8), default="physical", server_default="physical")
    # The firmware baseline a stamp onto one of its blades checks when the profile names none,
    # and how (report, refuse, update-first); no baseline: nothing is checked.
    firmware_baseline: Mapped[str | None] = mapped_column(String(63))
    firmware_policy: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BladePoolMemberRow(Base):
    __tablename__ = "blade_pool_members"

    pool_id: Mapped[int] = mapped_column(ForeignKey("blade_pools.id", ondelete="CASCADE"), primary_key=True)
    blade_id: Mapped[int] = mapped_column(ForeignKey("blades.id", ondelete="CASCADE"), primary_key=True)


# --- access control and audit


class UserRow(Base):
    """A local user of the console and API; the password is stored as an scrypt hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    tenant: Mapped[str | None] = mapped_column(String(63))
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LoginThrottleRow(Base):
    """Failed logins of one user from one source address, and that pair's lock: a lock never
    shuts the user out from another address (appliance.services.users)."""

    __tablename__ = "login_throttle"
    __table_args__ = (UniqueConstraint("user_id", "source"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(64))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsoleSessionRow(Base):
    """A console login: the cookie's SHA-256, and the CSRF token its forms must carry."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class AuditRow(Base):
    """One change, append-only; ``hash`` covers the entry and ``prev_hash`` (a chain)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    who: Mapped[str] = mapped_column(String(128))
    origin: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(16))
    resource: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(255))
    tenant: Mapped[str | None] = mapped_column(String(63), index=True)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    keyed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))  # HMAC, not SHA-256


# --- boot services


class BootTokenRow(Base):
    """A boot-time credential for one binding generation, stored as its SHA-256.

    ``kind`` is ``boot`` (a boot attempt the engine opened for ``job_id``: the token is
    HMAC(boot key, ``nonce``), put on the kernel command line and spent by the callback;
    a new attempt voids the previous one) or ``heartbeat`` (handed out once in the
    callback's answer, required by every heartbeat of that generation).
    """

    __tablename__ = "boot_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    binding_id: Mapped[int] = mapped_column(ForeignKey("bindings.id", ondelete="CASCADE"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    nonce: Mapped[str | None] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]
    voided_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]


class BootDiscoveryRow(Base):
    """Facts a machine the appliance does not know posted while network-booting."""

    __tablename__ = "boot_discoveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    uuid: Mapped[str | None] = mapped_column(String(36))
    peer: Mapped[str | None] = mapped_column(String(64))
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# --- health monitoring and failover

OPEN_FAILOVER = text("state NOT IN ('succeeded', 'failed', 'cancelled')")


class FailoverDomainRow(Base):
    """Profiles protected by the blades of a spare pool (profiles join through
    ``spec.failover.domain``). The webhook secret is stored as a Fernet token only."""

    __tablename__ = "failover_domains"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    # A blade pool's name; not a foreign key because the default pool `spares` is not stored.
    spare_pool: Mapped[str] = mapped_column(String(63), default="spares")
    description: Mapped[str] = mapped_column(String(255), default="")
    restart_attempts: Mapped[int] = mapped_column(Integer, default=1)
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_secret_enc: Mapped[str | None] = mapped_column(Text)
    # VM hosts whose free slots are spares of last resort (after every physical spare).
    vm_hosts: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class VmHostRow(Base):
    """A libvirt host enrolled as a blade source: its slots are blades with driver ``libvirt``
    (named ``NAME-01``…), each a domain Anvil defined there with this shape."""

    __tablename__ = "vm_hosts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    uri: Mapped[str] = mapped_column(String(1024))
    bridge: Mapped[str] = mapped_column(String(15))
    bridge_type: Mapped[str] = mapped_column(String(8), default="linux")
    slots: Mapped[int] = mapped_column(Integer)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    nics: Mapped[int] = mapped_column(Integer, default=1)
    accel: Mapped[str] = mapped_column(String(8), default="qemu")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BladeHealthRow(Base):
    """One health sample of a blade; the newest few hundred per blade are kept."""

    __tablename__ = "blade_health"
    __table_args__ = (Index("ix_blade_health_blade_id_id", "blade_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    blade_id: Mapped[int] = mapped_column(ForeignKey("blades.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(16))           # poll | event | heartbeat | probe
    ok: Mapped[bool] = mapped_column(Boolean)
    power: Mapped[str | None] = mapped_column(String(16))
    health: Mapped[str | None] = mapped_column(String(16))    # the BMC's own rollup (OK, Warning, Critical)
    verdict: Mapped[str | None] = mapped_column(String(16))   # the detector's: healthy, failed, flapping…
    detail: Mapped[str] = mapped_column(String(512), default="")


class FailoverRow(Base):
    """One failover of one profile, with its timeline. Names are copied (not only ids)
    so the history outlives deleted profiles and blades. At most one open failover per
    profile, enforced by a partial unique index."""

    __tablename__ = "failovers"
    __table_args__ = (
        Index("uq_failovers_open_profile", "profile_id", unique=True, sqlite_where=OPEN_FAILOVER,
              postgresql_where=OPEN_FAILOVER),
        Index("ix_failovers_domain_id", "domain", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    profile_id: Mapped[int | None] = mapped_column(ForeignKey("profiles.id", ondelete="SET NULL"))
    tenant: Mapped[str] = mapped_column(String(63))
    profile: Mapped[str] = mapped_column(String(63))
    domain: Mapped[str] = mapped_column(String(63))
    policy: Mapped[str] = mapped_column(String(8))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    drill: Mapped[bool] = mapped_column(Boolean, default=False)
    from_blade: Mapped[str | None] = mapped_column(String(63), index=True)
    to_blade: Mapped[str | None] = mapped_column(String(63))
    state: Mapped[str] = mapped_column(String(24), default="detected", index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    fence: Mapped[str | None] = mapped_column(String(16))    # how the old blade was confirmed fenced
    timeline: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    detected_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]


class BmcEventSubscriptionRow(Base):
    """A subscription the monitor made on a BMC's event service (one per endpoint, which
    may speak for many blades). Only a hash of the bearer token the BMC sends is kept."""

    __tablename__ = "bmc_event_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(512), unique=True)
    uri: Mapped[str] = mapped_column(String(1024))            # the subscription resource on the BMC
    destination: Mapped[str] = mapped_column(String(2048))    # where the BMC posts, as subscribed
    token_hash: Mapped[str] = mapped_column(String(64))       # sha256 hex of the bearer token
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_event_at: Mapped[datetime | None] = mapped_column()


# --- change records (the CMDB feed, and the source of usage)


class ChangeRow(Base):
    """One change to a blade, profile, binding, VLAN, LUN grant, firmware or BIOS setting,
    append-only (triggers refuse UPDATE and DELETE), written in the transaction of the change
    itself (appliance.store.changes). ``name`` is the resource's key: a blade's name, a
    profile's or binding's ``tenant/name``, a port's ``switch:port``, a LUN's ``target#lun``."""

    __tablename__ = "change_records"
    __table_args__ = (Index("ix_change_records_resource_name_id", "resource", "name", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    who: Mapped[str] = mapped_column(String(128))
    resource: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    tenant: Mapped[str | None] = mapped_column(String(63), index=True)
    action: Mapped[str] = mapped_column(String(16))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    step: Mapped[str | None] = mapped_column(String(64))


# --- host pools: hypervisor hosts for VM managers (appliance.domain.hostpool)

LIVE_HOST = text("state != 'released'")


class HostPoolRow(Base):
    """A tenant's pool of hosts stamped from one template; ``desired`` is what the engine's
    reconcile loop converges to. ``policy`` (SLA growth) and ``policy_state`` are the JSON of
    appliance.domain.hostpool_policy's values."""

    __tablename__ = "host_pools"
    __table_args__ = (UniqueConstraint("tenant", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    tenant: Mapped[str] = mapped_column(String(63))
    template: Mapped[str] = mapped_column(String(63))
    blade_pool: Mapped[str] = mapped_column(String(63), default="spares")
    min_size: Mapped[int] = mapped_column(Integer, default=0)
    max_size: Mapped[int] = mapped_column(Integer, default=100)
    desired: Mapped[int] = mapped_column(Integer, default=0)
    spread: Mapped[str] = mapped_column(String(16), default="chassis")
    keep_profiles: Mapped[bool] = mapped_column(Boolean, default=False)
    next_seq: Mapped[int] = mapped_column(Integer, default=1)
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    policy_state: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    failures: Mapped[int] = mapped_column(Integer, default=0)      # failed stamps in a row
    backoff_until: Mapped[datetime | None]
    waiting: Mapped[str | None] = mapped_column(Text)              # why the pool is not at its size
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class HostRow(Base):
    """One host of a pool. ``id`` is the host's stable id for its whole life (failovers
    keep it); ``identity`` is what it was given when requested (UUID, MACs, IQN). The row
    stays after release, as history; one host per profile while not released."""

    __tablename__ = "hosts"
    __table_args__ = (
        UniqueConstraint("pool_id", "seq"),
        Index("ix_hosts_pool_id_state", "pool_id", "state"),
        Index("uq_hosts_live_profile", "profile_id", unique=True, sqlite_where=LIVE_HOST,
              postgresql_where=LIVE_HOST),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("host_pools.id", ondelete="CASCADE"))
    tenant: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(63))                  # its profile's name
    seq: Mapped[int] = mapped_column(Integer)
    profile_id: Mapped[int | None] = mapped_column(ForeignKey("profiles.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(16), default="requested", index=True)
    blade: Mapped[str | None] = mapped_column(String(63))          # chosen, then running on
    job_id: Mapped[str | None] = mapped_column(String(36))         # its latest stamp or release job
    failover_id: Mapped[int | None] = mapped_column(Integer)       # the failover it is or was in
    reason: Mapped[str | None] = mapped_column(Text)
    identity: Mapped[dict[str, Any]] = mapped_column(default=dict)
    management_address: Mapped[str | None] = mapped_column(String(64))
    keep_profile: Mapped[bool] = mapped_column(Boolean, default=False)
    replaces: Mapped[str | None] = mapped_column(String(36))
    replaced_by: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ready_at: Mapped[datetime | None]
    released_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class HostEventRow(Base):
    """What a pool's VM manager is told, in order; ``id`` is the feed's resumable cursor."""

    __tablename__ = "host_events"
    __table_args__ = (Index("ix_host_events_pool_id_id", "pool_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("host_pools.id", ondelete="CASCADE"))
    tenant: Mapped[str] = mapped_column(String(63))
    host_id: Mapped[str] = mapped_column(String(36))
    event: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class HostWebhookRow(Base):
    """A receiver of a pool's events, delivered in order: ``cursor`` is the last event handled
    (delivered, or given up after the retries); the secret is stored as a Fernet token only."""

    __tablename__ = "host_webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("host_pools.id", ondelete="CASCADE"), index=True)
    tenant: Mapped[str] = mapped_column(String(63))
    url: Mapped[str] = mapped_column(String(2048))
    secret_enc: Mapped[str] = mapped_column(Text)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)     # failed tries of the event after the cursor
    next_attempt_at: Mapped[datetime | None]
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    given_up: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class HostDeliveryRow(Base):
    """One try of delivering one event to one webhook (the webhook's delivery log)."""

    __tablename__ = "host_deliveries"
    __table_args__ = (Index("ix_host_deliveries_webhook_id_id", "webhook_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("host_webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(BigInteger)
    event: Mapped[str] = mapped_column(String(32))
    delivery: Mapped[str] = mapped_column(String(36))
    attempt: Mapped[int] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(300))
    elapsed_ms: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class HostMetricRow(Base):
    """A host's newest utilisation report (what the SLA policy averages)."""

    __tablename__ = "host_metrics"

    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("host_pools.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    cpu: Mapped[float | None] = mapped_column(Float)
    memory: Mapped[float | None] = mapped_column(Float)
    vms: Mapped[int | None] = mapped_column(Integer)


class HostPoolDecisionRow(Base):
    """A change of a pool's size the SLA policy made (or wanted and could not), with its inputs."""

    __tablename__ = "host_pool_decisions"
    __table_args__ = (Index("ix_host_pool_decisions_pool_id_id", "pool_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("host_pools.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    action: Mapped[str] = mapped_column(String(16))
    size_from: Mapped[int] = mapped_column(Integer)
    size_to: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)


class HostQuotaRow(Base):
    """The most hosts a tenant's pools may hold together (no row: no quota)."""

    __tablename__ = "host_quotas"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), unique=True)
    max_hosts: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def name(self) -> str:     # what the audit trail names it by
        return self.tenant


# --- sites: paired peer appliances and replication to them (appliance.sites)


class LocalSiteRow(Base):
    """This appliance's own site name (one row, set when it first pairs)."""

    __tablename__ = "local_site"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SitePairCodeRow(Base):
    """A one-time pairing code this site printed (`anvil site pair-code`), stored as its SHA-256."""

    __tablename__ = "site_pair_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class SiteRow(Base):
    """A paired peer appliance. Its certificate is pinned (SHA-256 of the DER); ``token_enc`` is the
    DR token it gave us (Fernet, like BMC passwords), ``their_token_id`` the api_tokens row of the
    DR token we gave it; ``key_enc`` the HMAC key records between us are signed with.

    Replication cursors: ``outbox_seq`` the last record queued for it, ``acked_seq`` the last it
    acknowledged (the sender advances it only on an ack); ``inbox_seq`` the last record from it
    applied here (written in the transaction that applies the record), ``inbox_at`` when, and
    ``inbox_record_at`` when that record was made at its origin (the lag)."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    url: Mapped[str] = mapped_column(String(2048))
    cert_fingerprint: Mapped[str] = mapped_column(String(64))    # sha256 hex of the DER
    cert_pem: Mapped[str] = mapped_column(Text)
    token_enc: Mapped[str] = mapped_column(Text)
    their_token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id", ondelete="SET NULL"))
    key_enc: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="paired")
    push: Mapped[bool] = mapped_column(Boolean, default=False)   # we replicate our records to it
    outbox_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    acked_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    inbox_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    inbox_at: Mapped[datetime | None]
    inbox_record_at: Mapped[datetime | None]
    inbox_last: Mapped[str | None] = mapped_column(String(300))  # "kind key" of the last record applied
    last_contact_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ReplicationOutboxRow(Base):
    """A signed record queued for a peer, in stream order (``seq``); deleted once acknowledged."""

    __tablename__ = "replication_outbox"
    __table_args__ = (UniqueConstraint("site_id", "seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(255))
    op: Mapped[str] = mapped_column(String(8))                   # put | delete
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    sig: Mapped[str] = mapped_column(String(64))


class ReplicationSentRow(Base):
    """Sender side: the digest of each record last queued for a peer (what the next scan diffs against)."""

    __tablename__ = "replication_sent"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)


class ReplicationAppliedRow(Base):
    """Receiver side: the last version (stream seq) applied per peer, kind and key; a row here also
    marks the object as a replica of that peer's."""

    __tablename__ = "replication_applied"

    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)


class DrPlanRow(Base):
    """A DR plan (appliance.dr.plan). ``origin_site`` is NULL for a plan made here (this site is its
    primary) and names the primary for a plan replicated here (this site recovers it)."""

    __tablename__ = "dr_plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    recovery_site: Mapped[str] = mapped_column(String(63))
    origin_site: Mapped[str | None] = mapped_column(String(63))
    document: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DrRunRow(Base):
    """One rehearsal, activation or failback of a plan at this site, kept as its record (auditors
    read the last successful rehearsal). ``detail`` keeps what the run must undo (the documents
    an activation replaced)."""

    __tablename__ = "dr_runs"
    __table_args__ = (Index("ix_dr_runs_plan_started", "plan", "started_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    plan: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16))          # rehearsal | activation | failback
    state: Mapped[str] = mapped_column(String(16), default="running")   # running | succeeded | failed
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    created_by: Mapped[str | None] = mapped_column(String(128))
    primary_lost: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    rto_seconds: Mapped[float | None] = mapped_column(Float)
    profiles: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class DrRunProfileRow(Base):
    """One profile of a run: where it came up and how long after the run started (its RTO)."""

    __tablename__ = "dr_run_profiles"
    __table_args__ = (UniqueConstraint("run_id", "tenant", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("dr_runs.id", ondelete="CASCADE"), index=True)
    tenant: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(63))
    stamped_as: Mapped[str] = mapped_column(String(63))    # the clone's name in a rehearsal
    wave: Mapped[int] = mapped_column(Integer, default=0)
    pool: Mapped[str | None] = mapped_column(String(63))
    blade: Mapped[str | None] = mapped_column(String(63))
    job_id: Mapped[str | None] = mapped_column(String(36))
    state: Mapped[str] = mapped_column(String(16), default="pending")   # pending | up | failed | torn-down
    rto_seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
