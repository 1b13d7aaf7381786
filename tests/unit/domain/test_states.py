"""Every pair of states, for every machine: allowed exactly when the table says so."""

from __future__ import annotations

import itertools
from enum import StrEnum

import pytest

from appliance.domain.states import (
    BLADE_TRANSITIONS,
    FINAL_JOB_STATES,
    JOB_TRANSITIONS,
    PROFILE_TRANSITIONS,
    BladeState,
    InvalidTransition,
    JobState,
    ProfileState,
    transition,
)

MACHINES = [(BladeState, BLADE_TRANSITIONS), (ProfileState, PROFILE_TRANSITIONS), (JobState, JOB_TRANSITIONS)]


@pytest.mark.parametrize(("enum", "table"), MACHINES, ids=["blade", "profile", "job"])
def test_every_pair_is_allowed_exactly_when_listed(enum: type[StrEnum], table: dict) -> None:  # type: ignore[type-arg]
    assert set(table) == set(enum), "every state has a row"
    for current, wanted in itertools.product(enum, enum):
        allowed = current == wanted or wanted in table[current]
        if allowed:
            assert transition(table, current, wanted) == wanted
        else:
            with pytest.raises(InvalidTransition) as exc:
                transition(table, current, wanted, what="thing")
            assert f"thing cannot go from {current} to {wanted}" == str(exc.value)


def test_final_job_states_have_no_way_out() -> None:
    for state in FINAL_JOB_STATES:
        assert JOB_TRANSITIONS[state] == frozenset()


def test_every_state_is_reachable_from_the_start() -> None:
    for start, table in ((BladeState.SPARE, BLADE_TRANSITIONS), (ProfileState.UNASSIGNED, PROFILE_TRANSITIONS),
                         (JobState.PENDING, JOB_TRANSITIONS)):
        seen, todo = {start}, [start]
        while todo:
            for nxt in table[todo.pop()]:  # type: ignore[index]
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen == set(type(start)), type(start).__name__


def test_a_stamp_and_a_release_walk_the_tables() -> None:
    path = [BladeState.SPARE, BladeState.STAMPING, BladeState.ACTIVE, BladeState.RELEASING, BladeState.SPARE]
    for a, b in itertools.pairwise(path):
        transition(BLADE_TRANSITIONS, a, b)
    with pytest.raises(InvalidTransition):
        transition(BLADE_TRANSITIONS, BladeState.MAINTENANCE, BladeState.ACTIVE)
    with pytest.raises(InvalidTransition):
        transition(PROFILE_TRANSITIONS, ProfileState.UNASSIGNED, ProfileState.ACTIVE)
