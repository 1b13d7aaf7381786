"""Capacity counters (pure): how a set of blades divides into spare, committed, in use,
failed and in maintenance, in blades, CPUs and memory.

- ``spare``: no binding, state spare (what placement can use now);
- ``committed``: bound to a profile, whatever the binding's progress (stamping, active, releasing);
- ``inUse``: bound and active (the profile is running there); a part of ``committed``;
- ``failed``: failed or fenced, out of service until an admin clears it;
- ``maintenance``: held out of the spares by an admin.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

COUNTERS = ("total", "spare", "committed", "inUse", "failed", "maintenance")


@dataclass(frozen=True, slots=True)
class BladeFact:
    name: str
    state: str
    bound: bool
    cpus: int
    memory_gib: int
    chassis: str | None = None


def buckets(b: BladeFact) -> tuple[str, ...]:
    """The counters ``b`` adds to (always ``total``)."""
    out = ["total"]
    if b.bound:
        out.append("committed")
        if b.state == "active":
            out.append("inUse")
    elif b.state == "spare":
        out.append("spare")
    if b.state in ("failed", "fenced"):
        out.append("failed")
    elif b.state == "maintenance":
        out.append("maintenance")
    return tuple(out)


@dataclass(slots=True)
class Tally:
    blades: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    cpus: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    memory_gib: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))

    def add(self, b: BladeFact) -> None:
        for key in buckets(b):
            self.blades[key] += 1
            self.cpus[key] += b.cpus
            self.memory_gib[key] += b.memory_gib

    def public(self) -> dict[str, Any]:
        return {"blades": dict(self.blades), "cpus": dict(self.cpus), "memoryGiB": dict(self.memory_gib)}


def tally(blades: Iterable[BladeFact]) -> Tally:
    t = Tally()
    for b in blades:
        t.add(b)
    return t
