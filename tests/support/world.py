"""What really ran: the emulated rack's own histories joined with the profile each blade was stamped with.

The store's unique indexes already forbid two live bindings of one profile or one blade, so
checking them proves nothing. What must never happen is in the world: a blade's OS running
one profile and then another without a power-off between (it was re-stamped while on), or
one profile's identity on two powered-on, reachable blades at once (its MACs, addresses and
LUN in use twice). The inputs are the emulators' records: each BMC's power changes
(``redfish_emulator.power_history``) and, where the switch shuts ports, when every port of
a blade was down (the blade is cut off then, though still on). Stamps are the bindings, with
the times the store gave them. Pure functions: tests feed them what they read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

INF = math.inf


@dataclass(frozen=True, slots=True)
class Span:
    start: float
    end: float = INF    # open: still so when the record ends

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        return f"{self.start:.3f}..{'now' if self.end == INF else f'{self.end:.3f}'}"


@dataclass(frozen=True, slots=True)
class Stamp:
    """A binding of ``profile`` to ``blade`` from ``span.start`` (created) to ``span.end`` (ended)."""

    blade: str
    profile: str
    span: Span


def spans_when(changes: Iterable[tuple[float, bool]], *, initially: bool = False) -> list[Span]:
    """The spans during which a flag was true, from its changes ``(time, new value)`` (any order;
    repeats of the current value are no change)."""
    out: list[Span] = []
    since: float | None = -INF if initially else None
    for at, value in sorted(changes, key=lambda c: c[0]):
        if value and since is None:
            since = at
        elif not value and since is not None:
            out.append(Span(since, at))
            since = None
    if since is not None:
        out.append(Span(since))
    return out


def minus(spans: Sequence[Span], holes: Sequence[Span]) -> list[Span]:
    """``spans`` with ``holes`` cut out."""
    out = list(spans)
    for hole in holes:
        cut: list[Span] = []
        for s in out:
            if not s.overlaps(hole):
                cut.append(s)
                continue
            if s.start < hole.start:
                cut.append(Span(s.start, hole.start))
            if hole.end < s.end:
                cut.append(Span(hole.end, s.end))
        out = cut
    return out


def violations(power: Mapping[str, Sequence[tuple[float, bool]]], stamps: Sequence[Stamp],
               cut_off: Mapping[str, Sequence[tuple[float, bool]]] | None = None) -> list[str]:
    """What broke "one profile per blade, one blade per profile" in the world (empty when nothing).

    ``power``: per blade, its power changes ``(time, on)`` as its BMC applied them (off before
    the first). ``cut_off``: per blade, changes of "every switch port of it is down" (a blade
    isolated by fencing runs but reaches nothing). A blade *runs* a profile during a powered-on
    span when a stamp of it overlaps that span: what it booted stays until it is powered off.
    """
    cut_off = cut_off or {}
    problems: list[str] = []
    running: dict[str, list[tuple[str, Span]]] = {}   # profile -> (blade, reachable span) it ran on
    for blade in sorted(set(power) | {s.blade for s in stamps}):
        isolated = spans_when(cut_off.get(blade, ()))
        for on in spans_when(power.get(blade, ())):
            profiles = sorted({s.profile for s in stamps if s.blade == blade and s.span.overlaps(on)})
            if len(profiles) > 1:
                problems.append(f"blade {blade} ran {' then '.join(profiles)} without a power-off between "
                                f"(on {on})")
            for profile in profiles:
                running.setdefault(profile, []).extend((blade, span) for span in minus([on], isolated))
    for profile, spans in sorted(running.items()):
        for i, (blade_a, a) in enumerate(spans):
            for blade_b, b in spans[i + 1:]:
                if blade_a != blade_b and a.overlaps(b):
                    problems.append(f"profile {profile} ran on {blade_a} ({a}) and {blade_b} ({b}) at once")
    return problems
