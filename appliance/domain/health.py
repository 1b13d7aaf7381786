"""A failure detector per monitored target (a blade's BMC, a profile's heartbeat).

Pure: fed timestamped samples, it reads no clock. Times are seconds on any clock
that does not jump (the monitor passes ``loop.time()``); only differences matter.

Three layers, each with its own knob in :class:`DetectorPolicy`:

1. **Debounce.** ``fail_after`` consecutive misses declare the target failed;
   ``recover_after`` consecutive good samples declare it healthy again. One lost poll
   never fails a blade, one answer never clears it.
2. **Flap damping.** Each healthy ↔ failed change is remembered for ``flap_window``
   seconds. At ``flap_changes`` changes within the window the reported health is held
   at ``flapping``: a blade that keeps coming and going triggers no failover.
3. **Release.** Flapping ends when the debounced state has not changed for
   ``stable_for`` seconds; then the detector reports that state, and a release into
   ``failed`` is a declaration like any other (the failover starts then).

Defaults (a 30 s poll): failed after 3 misses (~90 s), healthy after 2 answers,
flapping at 4 changes within 10 minutes, released after 5 stable minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Health(StrEnum):
    UNKNOWN = "unknown"    # not enough samples yet
    HEALTHY = "healthy"
    FAILED = "failed"
    FLAPPING = "flapping"  # changing too often; held until stable


@dataclass(frozen=True, slots=True)
class DetectorPolicy:
    fail_after: int = 3
    recover_after: int = 2
    flap_changes: int = 4
    flap_window: float = 600.0
    stable_for: float = 300.0

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(f"{k}: {v}" for k, v in problems))

    def problems(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for name in ("fail_after", "recover_after"):
            value = getattr(self, name)
            if not 1 <= value <= 1000:
                out.append((name, f"{value} is outside 1-1000"))
        if not 2 <= self.flap_changes <= 1000:
            out.append(("flap_changes", f"{self.flap_changes} is outside 2-1000"))
        for name in ("flap_window", "stable_for"):
            value = getattr(self, name)
            if not 0 < value <= 86400:
                out.append((name, f"{value} is outside (0, 86400] seconds"))
        return out


@dataclass(frozen=True, slots=True)
class Sample:
    at: float          # seconds, on the caller's steady clock
    ok: bool


@dataclass(frozen=True, slots=True)
class Detector:
    """The state of one target; replaced, never changed, by :func:`observe`."""

    reported: Health = Health.UNKNOWN   # what the monitor acts on
    settled: Health = Health.UNKNOWN    # the debounced state, also while flapping
    misses: int = 0                     # consecutive
    successes: int = 0                  # consecutive
    changes: tuple[float, ...] = ()     # times of settled healthy ↔ failed changes inside the window
    changed_at: float | None = None     # when ``settled`` last changed
    last_at: float | None = None
    since: float | None = None          # when ``reported`` took its value


@dataclass(frozen=True, slots=True)
class Observation:
    detector: Detector
    previous: Health
    stale: bool = False                 # older than the last sample; ignored

    @property
    def changed(self) -> bool:
        return self.detector.reported is not self.previous

    @property
    def declared_failed(self) -> bool:
        """The reported health just became failed: the moment to start a failover."""
        return self.changed and self.detector.reported is Health.FAILED

    @property
    def recovered(self) -> bool:
        return self.changed and self.detector.reported is Health.HEALTHY and self.previous is not Health.UNKNOWN


def _settle(d: Detector, ok: bool, p: DetectorPolicy) -> tuple[Health, int, int]:
    misses, successes = (0, d.successes + 1) if ok else (d.misses + 1, 0)
    settled = d.settled
    if not ok and misses >= p.fail_after:
        settled = Health.FAILED
    elif ok and successes >= p.recover_after:
        settled = Health.HEALTHY
    return settled, misses, successes


def observe(d: Detector, sample: Sample, policy: DetectorPolicy) -> Observation:
    """Feed one sample. Samples older than the last one are ignored (``stale``): probes
    finishing out of order must not rewind the state."""
    if d.last_at is not None and sample.at < d.last_at:
        return Observation(d, d.reported, stale=True)
    now = sample.at
    settled, misses, successes = _settle(d, sample.ok, policy)
    changes, changed_at = d.changes, d.changed_at
    if settled is not d.settled:
        changed_at = now
        if d.settled is not Health.UNKNOWN:  # leaving "unknown" is a first verdict, not a flap
            changes = (*changes, now)
    changes = tuple(t for t in changes if now - t < policy.flap_window)
    reported: Health
    if d.reported is Health.FLAPPING:
        steady = changed_at is not None and now - changed_at >= policy.stable_for
        if steady and settled is not Health.UNKNOWN:
            reported = settled
            changes = ()  # released: the flaps that led here are paid for
        else:
            reported = Health.FLAPPING
    elif len(changes) >= policy.flap_changes:
        reported = Health.FLAPPING
    else:
        reported = settled
    since = d.since if reported is d.reported else now
    return Observation(replace(d, reported=reported, settled=settled, misses=misses, successes=successes,
                               changes=changes, changed_at=changed_at, last_at=now, since=since), d.reported)
