"""Growth from utilisation: a host pool's SLA policy, evaluated on the hosts' reported metrics.

The VM manager reports each host's utilisation (CPU and memory in percent, VM count); a
policy such as "grow when the pool's average CPU is above 75 % for 5 minutes, shrink below
30 %, cool-down 10 minutes" moves the pool's desired size by ``step`` within min/max (and the
tenant's quota). Pure: the caller passes the clock (``now``, Unix seconds), the samples and
the state kept between evaluations, and records the decisions this returns with their
inputs, so ``anvil host-pool show`` can say why the pool grew.

A condition must hold at every evaluation for ``for_seconds`` (a dip resets it); after a
change nothing moves for ``cooldown_seconds``, and the window starts again. A sample older
than ``max_age_seconds`` does not count; with no fresh sample nothing is decided.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

METRICS = ("cpu", "memory")
MAX_SECONDS = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class ScalePolicy:
    metric: str = "cpu"
    grow_above: float = 75.0           # percent
    shrink_below: float = 30.0         # percent
    for_seconds: float = 300.0
    cooldown_seconds: float = 600.0
    step: int = 1
    max_age_seconds: float = 120.0

    def public(self) -> dict[str, Any]:
        return {"metric": self.metric, "growAbove": self.grow_above, "shrinkBelow": self.shrink_below,
                "forSeconds": self.for_seconds, "cooldownSeconds": self.cooldown_seconds, "step": self.step,
                "maxAgeSeconds": self.max_age_seconds}

    @classmethod
    def from_public(cls, d: Mapping[str, Any]) -> ScalePolicy:
        base = cls()
        return cls(metric=str(d.get("metric", base.metric)),
                   grow_above=float(d.get("growAbove", base.grow_above)),
                   shrink_below=float(d.get("shrinkBelow", base.shrink_below)),
                   for_seconds=float(d.get("forSeconds", base.for_seconds)),
                   cooldown_seconds=float(d.get("cooldownSeconds", base.cooldown_seconds)),
                   step=int(d.get("step", base.step)),
                   max_age_seconds=float(d.get("maxAgeSeconds", base.max_age_seconds)))


def policy_problems(p: ScalePolicy) -> list[tuple[str, str]]:
    """Every problem of a policy as (field, reason), with the API's field names."""
    out = []
    if p.metric not in METRICS:
        out.append(("metric", f"{p.metric!r} is not one of {', '.join(METRICS)}"))
    if not 0 < p.grow_above <= 100:
        out.append(("growAbove", f"{p.grow_above:g} is outside 0-100 %"))
    if not 0 <= p.shrink_below < 100:
        out.append(("shrinkBelow", f"{p.shrink_below:g} is outside 0-100 %"))
    elif p.shrink_below >= p.grow_above:
        out.append(("shrinkBelow", f"{p.shrink_below:g} % is not below growAbove {p.grow_above:g} % (the pool "
                                   "would grow and shrink on the same load)"))
    for name, value in (("forSeconds", p.for_seconds), ("cooldownSeconds", p.cooldown_seconds)):
        if not 0 <= value <= MAX_SECONDS:
            out.append((name, f"{value:g} is outside 0-{MAX_SECONDS:g} s"))
    if not 1 <= p.max_age_seconds <= MAX_SECONDS:
        out.append(("maxAgeSeconds", f"{p.max_age_seconds:g} is outside 1-{MAX_SECONDS:g} s"))
    if not 1 <= p.step <= 100:
        out.append(("step", f"{p.step} is outside 1-100"))
    return out


@dataclass(frozen=True, slots=True)
class PolicyState:
    """Kept with the pool between evaluations (Unix seconds)."""

    above_since: float | None = None
    below_since: float | None = None
    last_scaled_at: float | None = None
    blocked: str | None = None          # the last "would, but cannot" said, so it is said once

    def public(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_public(cls, d: Mapping[str, Any] | None) -> PolicyState:
        d = d or {}

        def num(k: str) -> float | None:
            v = d.get(k)
            return float(v) if isinstance(v, int | float) else None
        blocked = d.get("blocked")
        return cls(num("above_since"), num("below_since"), num("last_scaled_at"),
                   blocked if isinstance(blocked, str) else None)


@dataclass(frozen=True, slots=True)
class Sample:
    host: str
    at: float
    cpu: float | None = None
    memory: float | None = None
    vms: int | None = None

    def value(self, metric: str) -> float | None:
        v = self.cpu if metric == "cpu" else self.memory if metric == "memory" else None
        return v


@dataclass(frozen=True, slots=True)
class Decision:
    action: str              # grow | shrink | hold (wanted to move but could not)
    size_from: int
    size_to: int
    reason: str
    inputs: dict[str, Any]


def duration(seconds: float) -> str:
    """``5m 2s``, ``40s``, ``1h 3m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    return f"{s // 3600}h {s % 3600 // 60}m"


def evaluate(policy: ScalePolicy, state: PolicyState, samples: Sequence[Sample], *, now: float, size: int,
             min_size: int, max_size: int, ready: int, limit: int | None = None) -> tuple[Decision | None,
                                                                                         PolicyState]:
    """The decision now (None: nothing to do) and the state to keep. ``samples``: the newest
    one of each ready host; ``limit``: the largest size the tenant's quota allows (None: no quota)."""
    fresh = {s.host: v for s in samples
             if now - s.at <= policy.max_age_seconds and (v := s.value(policy.metric)) is not None}
    if not fresh:
        return None, replace(state, above_since=None, below_since=None)
    average = sum(fresh.values()) / len(fresh)
    inputs: dict[str, Any] = {"metric": policy.metric, "average": round(average, 2), "reporting": len(fresh),
                              "ready": ready, "samples": {h: round(v, 2) for h, v in sorted(fresh.items())}}
    if average > policy.grow_above:
        since = state.above_since if state.above_since is not None else now
        state = replace(state, above_since=since, below_since=None)
        word, threshold, target = ">", policy.grow_above, min(size + policy.step, max_size,
                                                              limit if limit is not None else max_size)
        bound = "its max" if target >= max_size else "the tenant's quota"
        action = "grow"
    elif average < policy.shrink_below:
        since = state.below_since if state.below_since is not None else now
        state = replace(state, below_since=since, above_since=None)
        word, threshold, target = "<", policy.shrink_below, max(size - policy.step, min_size)
        bound, action = "its min", "shrink"
    else:
        return None, replace(state, above_since=None, below_since=None, blocked=None)
    held = now - since
    inputs.update(threshold=threshold, heldSeconds=round(held, 1), forSeconds=policy.for_seconds)
    if held < policy.for_seconds:
        return None, state
    if state.last_scaled_at is not None and now - state.last_scaled_at < policy.cooldown_seconds:
        return None, state     # cooling down: the load of the last change is still settling
    why = (f"average {policy.metric} {average:.1f}% {word} {threshold:g}% for {duration(held)} "
           f"({len(fresh)} of {ready} ready hosts reporting)")
    if (action == "grow" and target <= size) or (action == "shrink" and target >= size):
        blocked = f"would {action} but the pool is at {bound} ({size})"
        if state.blocked == blocked:
            return None, state
        return Decision("hold", size, size, f"{why}; {blocked}", inputs), replace(state, blocked=blocked)
    fresh_state = PolicyState(last_scaled_at=now)
    return Decision(action, size, target, why, inputs), fresh_state
