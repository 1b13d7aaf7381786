"""Host pools: the pure rules behind "keep N hypervisor hosts of this template running".

A host pool is a tenant's named set of hosts stamped from one profile template, with a
desired size the appliance converges to (a reconcile loop, like a Kubernetes ReplicaSet).
Nothing here reads the store or the clock: the service passes the pool as values and
applies what :func:`reconcile` decides.

Host states (a table checked by :func:`~appliance.domain.states.transition`)::

    requested ──► ready ◄──► failed
        │           │           │
        └───────────┴─► releasing ─► released

``requested``: its row, profile (identities allocated) and stamp job exist; ``ready``: the
stamp (or a failover) brought it up; ``failed``: its stamp failed, or a failover of it is
in progress (*recovering*: the failover may bring it back as ``ready``, same host);
``releasing``: its release job takes it down; ``released``: gone (the row stays, history).

Spread (by the blades' chassis label): ``chassis`` never puts two hosts of a pool in one
chassis while a chassis without one has a fitting spare; ``chassis-strict`` refuses a second
host in a chassis; ``none`` takes placement's best fit. Blades without a chassis label are
one chassis, "(no chassis)".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from appliance.domain.names import NAME_RE


class HostState(StrEnum):
    REQUESTED = "requested"
    READY = "ready"
    FAILED = "failed"
    RELEASING = "releasing"
    RELEASED = "released"


H = HostState
HOST_TRANSITIONS: Mapping[HostState, frozenset[HostState]] = {
    H.REQUESTED: frozenset({H.READY, H.FAILED, H.RELEASING}),
    H.READY: frozenset({H.FAILED, H.RELEASING}),
    H.FAILED: frozenset({H.READY, H.RELEASING}),
    H.RELEASING: frozenset({H.RELEASED}),
    H.RELEASED: frozenset(),
}
LIVE_HOST_STATES = frozenset({H.REQUESTED, H.READY, H.FAILED})   # part of the pool (releasing is leaving)


class Spread(StrEnum):
    CHASSIS = "chassis"
    STRICT = "chassis-strict"
    NONE = "none"


# What the VM manager is told (webhooks and the event feed), DESIGN §8.
HOST_REQUESTED = "host.requested"
HOST_READY = "host.ready"
HOST_FAILED = "host.failed"
HOST_REPLACED = "host.replaced"
HOST_RELEASED = "host.released"
HOST_EVENTS = (HOST_REQUESTED, HOST_READY, HOST_FAILED, HOST_REPLACED, HOST_RELEASED)

NO_CHASSIS = "(no chassis)"
MAX_POOL_NAME = 55        # the pool's name is the prefix of its hosts' profile names (≤ 63)
MAX_SIZE = 10_000         # the appliance's scale target
MAX_NEW_PER_PASS = 25     # hosts requested in one reconcile transaction (the next pass goes on)


# --- sizes and quotas ---------------------------------------------------------------------


def pool_name_problem(name: str) -> str | None:
    if not NAME_RE.match(name):
        return f"{name!r} is not a lowercase name (a-z, 0-9, '-')"
    if len(name) > MAX_POOL_NAME:
        return f"is longer than {MAX_POOL_NAME} characters (it prefixes the hosts' profile names)"
    return None


def size_problems(*, min_size: int, max_size: int, size: int | None = None) -> list[tuple[str, str]]:
    """Problems with a pool's bounds (and a desired size, when given) as (field, reason)."""
    out = []
    if not 0 <= min_size <= MAX_SIZE:
        out.append(("min", f"{min_size} is outside 0-{MAX_SIZE}"))
    if not 0 <= max_size <= MAX_SIZE:
        out.append(("max", f"{max_size} is outside 0-{MAX_SIZE}"))
    elif min_size > max_size:
        out.append(("max", f"{max_size} is below min {min_size}"))
    if size is not None and not 0 <= size <= MAX_SIZE:
        out.append(("size", f"{size} is outside 0-{MAX_SIZE}"))
    return out


def size_refusal(pool: str, *, size: int, min_size: int, max_size: int) -> str | None:
    """Why pool ``pool`` cannot be set to ``size`` hosts, or None."""
    if size > max_size:
        return f"host pool {pool} has max {max_size}; {size} hosts asked (raise its max first)"
    if size < min_size:
        return f"host pool {pool} has min {min_size}; {size} hosts asked (lower its min first)"
    return None


def quota_refusal(tenant: str, quota: int | None, sizes: Mapping[str, int]) -> str | None:
    """Why the tenant's pools cannot have ``sizes`` (pool → desired size), or None.
    ``quota`` None: no quota."""
    total = sum(sizes.values())
    if quota is None or total <= quota:
        return None
    held = ", ".join(f"{p} {n}" for p, n in sorted(sizes.items()) if n)
    return f"tenant {tenant}'s quota is {quota} hosts; its pools would hold {total} ({held})"


# --- spread -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BladeOption:
    """A spare blade a host of the pool fits on; options come best first, as placement ranks them."""

    name: str
    chassis: str | None


def chassis_of(option: BladeOption) -> str:
    return option.chassis or NO_CHASSIS


@dataclass(frozen=True, slots=True)
class Choice:
    blade: str | None
    reason: str          # why this blade (or why none)


def choose(options: Sequence[BladeOption], taken: Mapping[str, int], spread: Spread) -> Choice:
    """The blade for the pool's next host. ``taken``: chassis → hosts of the pool there."""
    if not options:
        return Choice(None, "no spare blade meets the requirements")
    if spread is Spread.NONE:
        return Choice(options[0].name, "best fit (spread none)")
    emptiest = min(taken.get(chassis_of(o), 0) for o in options)
    if spread is Spread.STRICT and emptiest > 0:
        full = ", ".join(sorted({chassis_of(o) for o in options}))
        return Choice(None, f"spread chassis-strict: every chassis with a fitting spare ({full}) already holds a "
                            "host of the pool")
    best = next(o for o in options if taken.get(chassis_of(o), 0) == emptiest)
    where = chassis_of(best)
    if emptiest == 0:
        return Choice(best.name, f"chassis {where} holds no host of the pool")
    return Choice(best.name, f"every chassis with a fitting spare holds a host of the pool; {where} holds the "
                             f"fewest ({emptiest})")


def capacity(options: Sequence[BladeOption], taken: Mapping[str, int], spread: Spread, *, pending: int) -> int:
    """How many more hosts could be placed now: fitting spares, less ``pending`` hosts that
    will take one but have not chosen yet; under strict spread, one per chassis without a host."""
    if spread is Spread.STRICT:
        free = {chassis_of(o) for o in options} - {c for c, n in taken.items() if n > 0}
        return max(0, len(free) - pending)
    return max(0, len(options) - pending)


def taken_by(chassis: Iterable[str | None]) -> Counter[str]:
    """chassis → hosts there, from the chassis of each host's blade (None: no chassis label)."""
    return Counter(c or NO_CHASSIS for c in chassis)


# --- reconcile --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostView:
    id: str
    seq: int                 # order of request within the pool (newest is largest)
    state: HostState
    job_active: bool = False     # a job of its profile is unfinished (stamp, failover, release)
    recovering: bool = False     # failed while a failover of it is open: it may come back


@dataclass(frozen=True, slots=True)
class Room:
    """How many new hosts may be requested now, and why not more (None: no limit said)."""

    hosts: int
    why: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    add: int                          # new hosts to request
    release: tuple[str, ...]          # hosts to release: the pool is larger than its size
    replace: tuple[str, ...]          # failed for good: released, each paired with one of the new hosts
    waiting: str | None = None        # why the pool is not converging, for operators and the VM manager

    @property
    def idle(self) -> bool:
        return not (self.add or self.release or self.replace)


def is_dead(h: HostView) -> bool:
    """Failed for good: no failover of it is open and no job of it is running."""
    return h.state is HostState.FAILED and not h.recovering and not h.job_active


def reconcile(desired: int, hosts: Iterable[HostView], room: Room) -> Plan:
    """What to do so the pool holds ``desired`` hosts that are, or may become, ready.

    A host that failed for good is replaced: released once a new host is requested in its
    place (within ``room``; until then it stays, failed), or released outright when the pool
    no longer needs it. A pool larger than ``desired`` releases hosts not yet ready first,
    then the newest ready ones, then recovering ones (a failover in progress) last. Never
    more new hosts than ``room`` allows, so a crash between passes can never grow the pool
    beyond its size: each pass counts what exists.
    """
    live = [h for h in hosts if h.state in LIVE_HOST_STATES]
    dead = sorted((h for h in live if is_dead(h)), key=lambda h: h.seq)
    counted = [h for h in live if not is_dead(h)]
    release: list[str] = []
    add, waiting = 0, None
    short = desired - len(counted)
    if short < 0:
        def order(h: HostView) -> tuple[int, int]:
            rank = {HostState.REQUESTED: 0, HostState.READY: 1, HostState.FAILED: 2}[h.state]
            return rank, -h.seq
        release = [h.id for h in sorted(counted, key=order)[:-short]]
    elif short > 0:
        add = max(0, min(short, room.hosts, MAX_NEW_PER_PASS))
        if add < short and room.hosts < short:
            waiting = f"{short - add} more host(s) wanted: {room.why or 'no room'}"
    needed = dead[:max(short, 0)]                 # each waits for a new host to take its place
    release += [h.id for h in dead[len(needed):]]   # the pool no longer needs these
    return Plan(add=add, release=tuple(release), replace=tuple(h.id for h in needed[:add]), waiting=waiting)


def backoff_seconds(failures: int, *, first: float = 5.0, most: float = 300.0) -> float:
    """How long a pool waits before requesting hosts again after ``failures`` failed stamps in a row."""
    if failures <= 0:
        return 0.0
    return float(min(most, first * 2.0 ** (failures - 1)))
