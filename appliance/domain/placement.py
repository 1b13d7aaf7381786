"""Placement: which spare blade a profile goes to, and why the others were rejected.

Pure: the caller passes the inventory as :class:`Candidate` values. Ranking is
physical blades before virtual ones (a VM host's slots: spares of last resort, DESIGN
§8) unless the pool prefers virtual ones or neither, then fewest surplus resources
(keep big blades for big profiles), then least recently failed (a blade that never
failed beats one that failed yesterday), then name for a stable order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from appliance.domain.states import BladeState


@dataclass(frozen=True, slots=True)
class Requirements:
    min_cpus: int | None = None
    min_memory_gib: int | None = None
    nics: int = 0                      # NICs the profile uses; the blade needs at least as many


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    state: BladeState
    cpus: int | None
    memory_gib: int | None
    nics: int
    bound_to: str | None = None        # profile holding a live binding, if any
    last_failed_at: datetime | None = None
    in_pool: bool = True
    out_reason: str | None = None      # why it is out of the pool, when not simply "not in the requested pool"
    virtual: bool = False              # a VM host's domain slot (driver libvirt)


PREFERENCES = ("physical", "virtual", "any")


@dataclass(frozen=True, slots=True)
class Rejection:
    blade: str
    reason: str


@dataclass(frozen=True, slots=True)
class Placement:
    chosen: tuple[str, ...]            # acceptable blades, best first
    rejected: tuple[Rejection, ...]

    @property
    def best(self) -> str | None:
        return self.chosen[0] if self.chosen else None


def rejection(req: Requirements, c: Candidate) -> str | None:
    """Why ``c`` cannot take a profile with ``req``, or None if it can."""
    if not c.in_pool:
        return c.out_reason or "not in the requested pool"
    if c.bound_to is not None:
        return f"bound to profile {c.bound_to}"
    if c.state is BladeState.MAINTENANCE:
        return "in maintenance"
    if c.state is BladeState.FAILED:
        return "failed (an admin must clear it)"
    if c.state is not BladeState.SPARE:
        return f"not spare ({c.state})"
    if req.min_cpus is not None:
        if c.cpus is None:
            return "CPU count unknown (inspect the blade)"
        if c.cpus < req.min_cpus:
            return f"too few CPUs ({c.cpus} < {req.min_cpus})"
    if req.min_memory_gib is not None:
        if c.memory_gib is None:
            return "memory unknown (inspect the blade)"
        if c.memory_gib < req.min_memory_gib:
            return f"too little memory ({c.memory_gib} GiB < {req.min_memory_gib} GiB)"
    if c.nics < req.nics:
        return f"too few NICs ({c.nics} < {req.nics})"
    return None


def _surplus(req: Requirements, c: Candidate) -> float:
    """Relative resources beyond the requirement; unknown or unrequired counts as none."""
    s = 0.0
    if req.min_cpus and c.cpus:
        s += (c.cpus - req.min_cpus) / req.min_cpus
    if req.min_memory_gib and c.memory_gib:
        s += (c.memory_gib - req.min_memory_gib) / req.min_memory_gib
    if req.nics and c.nics:
        s += (c.nics - req.nics) / req.nics
    return s


def _kind_rank(prefer: str, c: Candidate) -> int:
    if prefer == "any":
        return 0
    return 0 if c.virtual == (prefer == "virtual") else 1


def place(req: Requirements, candidates: Iterable[Candidate], *, prefer: str = "physical") -> Placement:
    """Acceptable blades best first (see the module docstring) and why the others are not.
    ``prefer``: ``physical`` (default), ``virtual`` or ``any``, a blade pool's setting."""
    if prefer not in PREFERENCES:
        raise ValueError(f"prefer {prefer!r} is not one of {', '.join(PREFERENCES)}")
    ok: list[Candidate] = []
    rejected: list[Rejection] = []
    for c in sorted(candidates, key=lambda c: c.name):
        reason = rejection(req, c)
        if reason is None:
            ok.append(c)
        else:
            rejected.append(Rejection(c.name, reason))
    never = datetime.min
    ok.sort(key=lambda c: (_kind_rank(prefer, c), _surplus(req, c),
                           (c.last_failed_at.replace(tzinfo=None) if c.last_failed_at else never), c.name))
    return Placement(tuple(c.name for c in ok), tuple(rejected))
