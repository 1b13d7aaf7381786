"""Bindings and blade-time from the change records (pure: the records come in, sums go out).

A binding's records, per profile (``tenant/name``), in order: ``assign`` or ``move`` opens
it on a blade (``after.blade``), and ``release``, ``rollback``, ``fence``, ``end`` or
``forget`` closes it (``before.blade``). Replaying them gives which profile is on which
blade; the time between an opening and its closing is that profile's blade-time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class ReplayError(ValueError):
    """The records contradict themselves (a binding closed that was never opened, or opened twice)."""


@dataclass(frozen=True, slots=True)
class BindingChange:
    id: int
    at: datetime
    profile: str            # tenant/name
    tenant: str
    action: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None


def _blade(side: Mapping[str, Any] | None) -> str | None:
    return str(side["blade"]) if side and side.get("blade") else None


def replay(changes: Iterable[BindingChange]) -> dict[str, str]:
    """profile → blade, as the records leave it. Each record's ``before`` must match the state
    the records before it built (ReplayError otherwise, naming the record)."""
    bound: dict[str, str] = {}
    for c in changes:
        was, now = _blade(c.before), _blade(c.after)
        if bound.get(c.profile) != was:
            raise ReplayError(f"change #{c.id} ({c.action} {c.profile}) starts from blade {was}, "
                              f"but the records before it leave {bound.get(c.profile)}")
        if now is None:
            bound.pop(c.profile, None)
        else:
            if now in bound.values():
                raise ReplayError(f"change #{c.id} binds {c.profile} to {now}, which holds another profile")
            bound[c.profile] = now
    return bound


@dataclass(frozen=True, slots=True)
class Usage:
    profile: str
    tenant: str
    seconds: float

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


def blade_time(changes: Iterable[BindingChange], start: datetime, end: datetime) -> list[Usage]:
    """Each profile's blade-time within ``[start, end)`` (a binding still open counts until
    ``end``, which the caller caps at now); profiles with none are left out. Sorted by profile."""
    opened: dict[str, tuple[datetime, str]] = {}
    total: dict[str, float] = {}
    tenants: dict[str, str] = {}

    def add(profile: str, since: datetime, until: datetime) -> None:
        lo, hi = max(since, start), min(until, end)
        if hi > lo:
            total[profile] = total.get(profile, 0.0) + (hi - lo).total_seconds()

    for c in changes:
        tenants[c.profile] = c.tenant
        if c.profile in opened and _blade(c.before) is not None:
            add(c.profile, opened.pop(c.profile)[0], c.at)
        blade = _blade(c.after)
        if blade is not None:
            opened[c.profile] = (c.at, blade)
    for profile, (since, _) in opened.items():
        add(profile, since, end)
    return [Usage(p, tenants[p], total[p]) for p in sorted(total)]


def by_tenant(usage: Iterable[Usage]) -> dict[str, float]:
    out: dict[str, float] = {}
    for u in usage:
        out[u.tenant] = out.get(u.tenant, 0.0) + u.seconds
    return dict(sorted(out.items()))
