"""State machines for blades, profiles and jobs: a table of allowed transitions each.

The engine moves states only through :func:`transition`, so a state that the
table does not allow can never be written (MAAS-style; no FSM library).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar


class BladeState(StrEnum):
    SPARE = "spare"              # no binding; available unless in maintenance or failed
    STAMPING = "stamping"        # bound; being brought up with its profile
    ACTIVE = "active"            # bound and running its profile
    RELEASING = "releasing"      # being taken down; returns to spare
    FAILED = "failed"            # taken out of service for repair; an admin clears it
    FENCED = "fenced"            # confirmed cut off from the profile's storage and networks
    MAINTENANCE = "maintenance"  # held out of the spare pool by an admin


class ProfileState(StrEnum):
    UNASSIGNED = "unassigned"
    STAMPING = "stamping"
    ACTIVE = "active"
    RELEASING = "releasing"
    FAILED = "failed"
    NEEDS_OPERATOR = "needs-operator"


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"


B, P, J = BladeState, ProfileState, JobState

BLADE_TRANSITIONS: Mapping[BladeState, frozenset[BladeState]] = {
    B.SPARE: frozenset({B.STAMPING, B.MAINTENANCE, B.FAILED}),
    B.STAMPING: frozenset({B.ACTIVE, B.RELEASING, B.SPARE, B.FAILED, B.FENCED}),
    B.ACTIVE: frozenset({B.RELEASING, B.FAILED, B.FENCED}),
    B.RELEASING: frozenset({B.SPARE, B.FAILED, B.FENCED}),
    B.FENCED: frozenset({B.FAILED, B.SPARE}),
    B.FAILED: frozenset({B.SPARE, B.MAINTENANCE, B.FENCED}),
    B.MAINTENANCE: frozenset({B.SPARE, B.FAILED}),
}

PROFILE_TRANSITIONS: Mapping[ProfileState, frozenset[ProfileState]] = {
    P.UNASSIGNED: frozenset({P.STAMPING}),
    P.STAMPING: frozenset({P.ACTIVE, P.RELEASING, P.UNASSIGNED, P.FAILED}),
    P.ACTIVE: frozenset({P.RELEASING, P.FAILED}),
    P.RELEASING: frozenset({P.UNASSIGNED, P.FAILED}),
    P.FAILED: frozenset({P.STAMPING, P.RELEASING, P.UNASSIGNED, P.NEEDS_OPERATOR}),
    P.NEEDS_OPERATOR: frozenset({P.STAMPING, P.RELEASING, P.FAILED}),
}

JOB_TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    J.PENDING: frozenset({J.RUNNING, J.CANCELLED, J.ROLLING_BACK}),
    J.RUNNING: frozenset({J.WAITING, J.SUCCEEDED, J.FAILED, J.ROLLING_BACK}),
    J.WAITING: frozenset({J.RUNNING, J.FAILED, J.ROLLING_BACK}),
    J.ROLLING_BACK: frozenset({J.ROLLED_BACK, J.FAILED}),
    J.SUCCEEDED: frozenset(),
    J.FAILED: frozenset(),
    J.ROLLED_BACK: frozenset(),
    J.CANCELLED: frozenset(),
}

ACTIVE_JOB_STATES = frozenset({J.PENDING, J.RUNNING, J.WAITING, J.ROLLING_BACK})
FINAL_JOB_STATES = frozenset({J.SUCCEEDED, J.FAILED, J.ROLLED_BACK, J.CANCELLED})

S = TypeVar("S", bound=StrEnum)


class InvalidTransition(ValueError):
    """A state change the table does not allow."""

    def __init__(self, what: str, current: str, wanted: str) -> None:
        super().__init__(f"{what} cannot go from {current} to {wanted}")
        self.what, self.current, self.wanted = what, current, wanted


def transition(table: Mapping[S, frozenset[S]], current: S, wanted: S, *, what: str = "state") -> S:
    """Return ``wanted`` if ``current → wanted`` is allowed (or a no-op); raise InvalidTransition otherwise.

    Staying in the same state is always allowed: steps are re-run after a crash and must converge.
    """
    if current == wanted or wanted in table[current]:
        return wanted
    raise InvalidTransition(what, current, wanted)
