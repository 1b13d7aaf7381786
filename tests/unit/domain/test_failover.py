"""Failover policy: spares go to the most important profiles first, the rest wait in order
with a reason; restart before move; a fence counts only when something confirmed it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.domain.failover import (
    FAILOVER_TRANSITIONS,
    FINAL_FAILOVER_STATES,
    Action,
    FailedProfile,
    FailoverDomain,
    FailoverState,
    Policy,
    decide,
    domain_problems,
    is_event_name,
    plan_spares,
    queue_order,
)
from appliance.domain.placement import Candidate, Requirements, rejection
from appliance.domain.states import BladeState, InvalidTransition, transition

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
BIG = Requirements(min_cpus=32, min_memory_gib=256, nics=2)


def spare(name: str, cpus: int = 16, mem: int = 128, nics: int = 2, **kw: object) -> Candidate:
    return Candidate(name=name, state=kw.pop("state", BladeState.SPARE), cpus=cpus, memory_gib=mem,  # type: ignore[arg-type]
                     nics=nics, **kw)  # type: ignore[arg-type]


def failed(name: str, priority: int = 0, minutes: int = 0, req: Requirements = Requirements()) -> FailedProfile:
    return FailedProfile(name, priority, T0 + timedelta(minutes=minutes), req)


# --- ordering -------------------------------------------------------------------------


def test_higher_priority_number_wins_the_only_spare() -> None:
    plan = plan_spares([failed("acme/web-01", 10), failed("acme/db-01", 100)], [spare("s1")])
    assert plan.assignments[0].profile == "acme/db-01" and plan.blade_for("acme/db-01") == "s1"
    assert [(w.profile, w.position, w.reason) for w in plan.waiting] == [
        ("acme/web-01", 1, "waiting for a spare: 1 higher-priority profile ahead")]


def test_same_priority_goes_to_the_first_failure_then_the_name() -> None:
    order = queue_order([failed("c", 5, 2), failed("b", 5, 1), failed("a", 5, 1), failed("z", 6, 9)])
    assert [p.name for p in order] == ["z", "a", "b", "c"]


def test_naive_and_aware_failure_times_compare_as_utc() -> None:
    naive = FailedProfile("naive", 0, (T0 + timedelta(minutes=1)).replace(tzinfo=None))
    assert [p.name for p in queue_order([naive, failed("aware", 0, 2)])] == ["naive", "aware"]


def test_waiting_reasons_count_who_took_the_spares() -> None:
    plan = plan_spares([failed("p1", 9), failed("p2", 9, 1), failed("p3", 5), failed("p4", 5, 1)],
                       [spare("s1"), spare("s2")])
    assert [a.profile for a in plan.assignments] == ["p1", "p2"]
    assert [(w.profile, w.position, w.reason) for w in plan.waiting] == [
        ("p3", 1, "waiting for a spare: 2 higher-priority profiles ahead"),
        ("p4", 2, "waiting for a spare: 2 higher-priority profiles ahead"),
    ]
    plan = plan_spares([failed("p1", 9), failed("p2", 5), failed("p3", 5, 1)], [spare("s1"), spare("s2")])
    assert plan.waiting[0].reason == (
        "waiting for a spare: 1 higher-priority profile and 1 earlier failure of the same priority ahead")


def test_an_empty_pool_says_so() -> None:
    plan = plan_spares([failed("p1")], [spare("busy", bound_to="x"), spare("m", state=BladeState.MAINTENANCE)])
    assert plan.assignments == ()
    assert plan.waiting[0].reason == "waiting for a spare: the spare pool has no available blade"
    assert plan_spares([failed("p1")], []).waiting[0].reason.endswith("no available blade")


def test_a_profile_no_spare_fits_waits_without_blocking_those_behind() -> None:
    plan = plan_spares([failed("big", 100, req=BIG), failed("small", 1)], [spare("s1"), spare("s2", cpus=4)])
    assert plan.blade_for("small") == "s1"
    assert [w.profile for w in plan.waiting] == ["big"]
    assert plan.waiting[0].reason == ("waiting for a spare that meets its requirements (s1: too few CPUs (16 < 32); "
                                      "s2: too few CPUs (4 < 32))")


def test_requirements_reasons_are_capped() -> None:
    plan = plan_spares([failed("big", req=BIG)], [spare(f"s{i}") for i in range(5)])
    assert plan.waiting[0].reason.endswith("; and 2 more)")


def test_the_best_fitting_spare_is_chosen_and_big_blades_kept_for_big_profiles() -> None:
    plan = plan_spares([failed("small", 100, req=Requirements(min_cpus=8)), failed("big", 1, req=BIG)],
                       [spare("huge", 64, 512), spare("exact", 8, 64)])
    assert plan.blade_for("small") == "exact" and plan.blade_for("big") == "huge"


def test_duplicates_are_refused() -> None:
    with pytest.raises(ValueError, match="'p' is listed twice"):
        plan_spares([failed("p"), failed("p", 1)], [spare("s")])
    with pytest.raises(ValueError, match="spare blade is listed twice"):
        plan_spares([failed("p")], [spare("s"), spare("s")])


# --- properties -----------------------------------------------------------------------

_names = st.text("abcdef", min_size=1, max_size=4)
_profiles = st.lists(
    st.builds(FailedProfile, _names, st.integers(-3, 3),
              st.integers(0, 20).map(lambda m: T0 + timedelta(minutes=m)),
              st.builds(Requirements, st.none() | st.integers(1, 64), st.none() | st.integers(1, 512),
                        st.integers(0, 4))),
    max_size=12, unique_by=lambda p: p.name)
_spares = st.lists(
    st.builds(Candidate, _names, st.sampled_from(list(BladeState)), st.none() | st.integers(1, 64),
              st.none() | st.integers(1, 512), st.integers(0, 4), st.none() | st.just("other"),
              st.none(), st.booleans()),
    max_size=12, unique_by=lambda c: c.name)


@settings(max_examples=300, deadline=None)
@given(_profiles, _spares)
def test_plan_invariants(profiles: list[FailedProfile], spares: list[Candidate]) -> None:
    plan = plan_spares(profiles, spares)
    by_name = {c.name: c for c in spares}
    blades = [a.blade for a in plan.assignments]
    # Never one spare twice, never a spare that fails the profile's requirements or is not available.
    assert len(blades) == len(set(blades))
    reqs = {p.name: p.requirements for p in profiles}
    for a in plan.assignments:
        assert rejection(reqs[a.profile], by_name[a.blade]) is None
    # Every profile is either assigned or waiting, once.
    seen = [a.profile for a in plan.assignments] + [w.profile for w in plan.waiting]
    assert sorted(seen) == sorted(p.name for p in profiles)
    # Waiting positions run 1..n in queue order.
    order = [p.name for p in queue_order(profiles)]
    assert [w.position for w in plan.waiting] == list(range(1, len(plan.waiting) + 1))
    assert [w.profile for w in plan.waiting] == [n for n in order if n in {w.profile for w in plan.waiting}]
    # Greedy by importance: a waiting profile could use no spare left unassigned.
    free = [c for c in spares if c.name not in blades]
    for w in plan.waiting:
        assert all(rejection(reqs[w.profile], c) is not None for c in free)
        assert w.reason.startswith("waiting for a spare")
    # Stable: input order does not matter.
    again = plan_spares(list(reversed(profiles)), list(reversed(spares)))
    assert again == plan


# --- policy, domains, fencing, record states ------------------------------------------


def test_policy_matches_the_profile_model() -> None:
    from appliance.domain.profile.model import FailoverPolicy

    assert [p.value for p in Policy] == [p.value for p in FailoverPolicy]


def test_restart_is_tried_first_then_the_profile_moves() -> None:
    assert decide(Policy.NONE, restarts_done=0, restart_attempts=1, bmc_reachable=True).action is Action.ALERT
    first = decide(Policy.RESTART, restarts_done=0, restart_attempts=2, bmc_reachable=True)
    assert (first.action, first.reason) == (Action.RESTART, "policy restart: power cycle 1 of 2")
    assert decide(Policy.RESTART, restarts_done=1, restart_attempts=2, bmc_reachable=True).action is Action.RESTART
    done = decide(Policy.RESTART, restarts_done=2, restart_attempts=2, bmc_reachable=True)
    assert done.action is Action.MOVE and "2 power cycles did not help" in done.reason
    assert decide(Policy.RESTART, restarts_done=0, restart_attempts=0, bmc_reachable=True).action is Action.MOVE
    dead = decide(Policy.RESTART, restarts_done=0, restart_attempts=3, bmc_reachable=False)
    assert dead.action is Action.MOVE and "BMC does not answer" in dead.reason
    assert decide(Policy.N_PLUS_1, restarts_done=0, restart_attempts=3, bmc_reachable=True).action is Action.MOVE


def test_domain_problems_name_every_field() -> None:
    ok = FailoverDomain("prod-web", "web-spares", 2, "https://hooks.example/anvil")
    assert domain_problems(ok, webhook_secret="s" * 32) == []
    assert domain_problems(FailoverDomain("prod-web"), webhook_secret=None) == []
    bad = FailoverDomain("Prod_Web", "Spares!", 11, "ftp://x", "d" * 256)
    fields = [f for f, _ in domain_problems(bad, webhook_secret="short")]
    assert fields == ["name", "sparePool", "restartAttempts", "description", "webhookUrl", "webhookSecret"]
    assert domain_problems(FailoverDomain("d", webhook_url="https://h/x"), webhook_secret=None) == [
        ("webhookSecret", "is required with a webhook URL (webhooks are always signed)")]
    assert domain_problems(FailoverDomain("d", webhook_url="https://h/x"), webhook_secret=None,
                           secret_required=False) == []
    assert domain_problems(FailoverDomain("d"), webhook_secret="s" * 20) == [
        ("webhookSecret", "is given without a webhook URL")]
    for url, why in (("https://u:p@h/x", "credentials do not belong"), ("https:///x", "has no host"),
                     ("https://h:99999/x", "not a valid URL"), ("https://h/a b", "whitespace")):
        problems = domain_problems(FailoverDomain("d", webhook_url=url), webhook_secret="s" * 20)
        assert problems and problems[0][0] == "webhookUrl" and why in problems[0][1], url
    assert domain_problems(FailoverDomain("d", webhook_url="https://h/x"), webhook_secret="s" * 15 + " ")[0][1] == (
        "must not contain whitespace or control characters")


def test_no_record_reaches_a_spare_without_passing_fenced() -> None:
    """Every path from detected to moving goes through fenced (exhaustive walk)."""
    reach: set[FailoverState] = set()
    todo = [FailoverState.DETECTED]
    while todo:
        s = todo.pop()
        for nxt in FAILOVER_TRANSITIONS[s]:
            if nxt is FailoverState.FENCED:
                continue
            if nxt not in reach:
                reach.add(nxt)
                todo.append(nxt)
    assert FailoverState.MOVING not in reach and FailoverState.WAITING not in reach
    assert FailoverState.BOOTING not in reach
    for final in FINAL_FAILOVER_STATES:
        assert FAILOVER_TRANSITIONS[final] == frozenset()
    assert set(FAILOVER_TRANSITIONS) == set(FailoverState)
    with pytest.raises(InvalidTransition):
        transition(FAILOVER_TRANSITIONS, FailoverState.NEEDS_OPERATOR, FailoverState.MOVING)


def test_event_names() -> None:
    assert is_event_name("spare-chosen") and is_event_name("fence-confirmed")
    assert not is_event_name("Spare chosen") and not is_event_name("x" * 33) and not is_event_name("")
