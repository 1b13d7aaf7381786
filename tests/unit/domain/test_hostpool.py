"""Host pools' pure rules: the reconcile decision, spread by chassis, sizes and quotas."""

from __future__ import annotations

import pytest

from appliance.domain.hostpool import (
    HOST_TRANSITIONS,
    MAX_NEW_PER_PASS,
    BladeOption,
    HostState,
    HostView,
    Room,
    Spread,
    backoff_seconds,
    capacity,
    choose,
    pool_name_problem,
    quota_refusal,
    reconcile,
    size_problems,
    size_refusal,
    taken_by,
)
from appliance.domain.states import InvalidTransition, transition

R, OK, F, REL = HostState.REQUESTED, HostState.READY, HostState.FAILED, HostState.RELEASING
PLENTY = Room(100)


def h(i: int, state: HostState, **kw: bool) -> HostView:
    return HostView(id=f"h{i}", seq=i, state=state, **kw)


def test_an_empty_pool_requests_what_it_lacks() -> None:
    plan = reconcile(5, [], PLENTY)
    assert (plan.add, plan.release, plan.replace, plan.waiting) == (5, (), (), None)


def test_hosts_requested_or_recovering_count_so_a_rerun_never_over_grows() -> None:
    hosts = [h(1, R, job_active=True), h(2, OK), h(3, F, recovering=True, job_active=True)]
    assert reconcile(3, hosts, PLENTY).idle
    # Run again with nothing changed (a crash between passes): still nothing to add.
    assert reconcile(3, hosts, PLENTY).add == 0
    assert reconcile(4, hosts, PLENTY).add == 1


def test_released_and_releasing_hosts_do_not_count() -> None:
    plan = reconcile(2, [h(1, OK), h(2, REL), h(3, HostState.RELEASED)], PLENTY)
    assert plan.add == 1 and plan.release == ()


def test_a_host_failed_for_good_is_replaced() -> None:
    plan = reconcile(2, [h(1, OK), h(2, F)], PLENTY)
    assert plan.replace == ("h2",) and plan.add == 1 and plan.release == ()
    # Not while a failover of it is open, nor while a job of it still runs.
    assert reconcile(2, [h(1, OK), h(2, F, recovering=True)], PLENTY).idle
    assert reconcile(2, [h(1, OK), h(2, F, job_active=True)], PLENTY).idle


def test_a_failed_host_waits_for_its_replacement_unless_the_pool_no_longer_needs_it() -> None:
    no_room = Room(0, "backing off")
    plan = reconcile(2, [h(1, OK), h(2, F)], no_room)
    assert plan.idle and plan.waiting == "1 more host(s) wanted: backing off"
    plan = reconcile(1, [h(1, OK), h(2, F)], no_room)      # shrunk meanwhile: released, not replaced
    assert (plan.release, plan.replace, plan.add) == (("h2",), (), 0)
    plan = reconcile(3, [h(1, OK), h(2, F), h(3, F)], Room(1))
    assert (plan.replace, plan.release, plan.add) == (("h2",), (), 1)   # h3 waits for the next room
    plan = reconcile(2, [h(1, OK), h(2, F), h(3, F)], Room(1))
    assert (plan.replace, plan.release, plan.add) == (("h2",), ("h3",), 1)   # one replacement is enough


def test_shrinking_releases_hosts_not_yet_ready_then_the_newest_ready_and_recovering_last() -> None:
    hosts = [h(1, OK), h(2, OK), h(3, F, recovering=True), h(4, R), h(5, OK), h(6, R)]
    assert reconcile(4, hosts, PLENTY).release == ("h6", "h4")
    assert reconcile(2, hosts, PLENTY).release == ("h6", "h4", "h5", "h2")
    assert reconcile(0, hosts, PLENTY).release == ("h6", "h4", "h5", "h2", "h1", "h3")


def test_room_bounds_the_growth_and_says_why() -> None:
    plan = reconcile(5, [h(1, OK)], Room(1, "no spare blade meets the requirements"))
    assert plan.add == 1
    assert plan.waiting == "3 more host(s) wanted: no spare blade meets the requirements"
    assert reconcile(MAX_NEW_PER_PASS * 3, [], PLENTY).add == MAX_NEW_PER_PASS
    assert reconcile(MAX_NEW_PER_PASS * 3, [], PLENTY).waiting is None   # only the pass's share, not stuck


def test_host_states_move_only_through_the_table() -> None:
    assert transition(HOST_TRANSITIONS, F, OK) is OK          # a failover brought it back
    assert transition(HOST_TRANSITIONS, REL, REL) is REL      # re-run steps converge
    with pytest.raises(InvalidTransition):
        transition(HOST_TRANSITIONS, HostState.RELEASED, OK)
    with pytest.raises(InvalidTransition):
        transition(HOST_TRANSITIONS, REL, OK)


# --- spread ---------------------------------------------------------------------------------

TWO_CHASSIS = [BladeOption("a1", "c1"), BladeOption("a2", "c1"), BladeOption("b1", "c2"), BladeOption("b2", "c2")]


def test_spread_goes_to_a_chassis_without_a_host_of_the_pool() -> None:
    first = choose(TWO_CHASSIS, {}, Spread.CHASSIS)
    assert first.blade == "a1" and "c1 holds no host" in first.reason
    second = choose(TWO_CHASSIS, taken_by(["c1"]), Spread.CHASSIS)
    assert second.blade == "b1" and "c2 holds no host" in second.reason


def test_spread_doubles_up_only_when_every_chassis_with_a_spare_holds_a_host() -> None:
    got = choose([BladeOption("a2", "c1"), BladeOption("b2", "c2")], taken_by(["c1", "c1", "c2"]), Spread.CHASSIS)
    assert got.blade == "b2" and "c2 holds the fewest (1)" in got.reason
    # Only one chassis has spares left: the host goes there (soft spread), said so.
    got = choose([BladeOption("a2", "c1")], taken_by(["c1", "c2"]), Spread.CHASSIS)
    assert got.blade == "a2" and "every chassis with a fitting spare holds a host" in got.reason


def test_strict_spread_refuses_a_second_host_in_a_chassis_with_the_reason() -> None:
    got = choose([BladeOption("a2", "c1")], taken_by(["c1", "c2"]), Spread.STRICT)
    assert got.blade is None
    assert got.reason == ("spread chassis-strict: every chassis with a fitting spare (c1) already holds a host of "
                          "the pool")
    assert choose(TWO_CHASSIS, taken_by(["c1"]), Spread.STRICT).blade == "b1"


def test_spread_none_takes_placements_best_fit_and_no_blade_is_said() -> None:
    assert choose(TWO_CHASSIS, taken_by(["c1"]), Spread.NONE).blade == "a1"
    assert choose([], {}, Spread.CHASSIS).reason == "no spare blade meets the requirements"


def test_blades_without_a_chassis_label_are_one_chassis() -> None:
    got = choose([BladeOption("x", None), BladeOption("y", "c9")], taken_by([None]), Spread.CHASSIS)
    assert got.blade == "y"


def test_capacity_counts_spares_less_pending_hosts_and_one_per_free_chassis_when_strict() -> None:
    assert capacity(TWO_CHASSIS, {}, Spread.CHASSIS, pending=1) == 3
    assert capacity(TWO_CHASSIS, taken_by(["c1"]), Spread.STRICT, pending=0) == 1
    assert capacity(TWO_CHASSIS, taken_by(["c1", "c2"]), Spread.STRICT, pending=0) == 0
    assert capacity([], {}, Spread.NONE, pending=3) == 0


# --- sizes, quotas, names ---------------------------------------------------------------------

def test_sizes_and_quotas_are_refused_with_what_to_change() -> None:
    assert size_refusal("east", size=6, min_size=0, max_size=5) == ("host pool east has max 5; 6 hosts asked "
                                                                    "(raise its max first)")
    assert size_refusal("east", size=1, min_size=2, max_size=5) == ("host pool east has min 2; 1 hosts asked "
                                                                    "(lower its min first)")
    assert size_refusal("east", size=3, min_size=2, max_size=5) is None
    assert quota_refusal("acme", 4, {"east": 3, "west": 2}) == ("tenant acme's quota is 4 hosts; its pools would "
                                                                "hold 5 (east 3, west 2)")
    assert quota_refusal("acme", None, {"east": 300}) is None
    assert quota_refusal("acme", 5, {"east": 3, "west": 2}) is None
    assert size_problems(min_size=3, max_size=2) == [("max", "2 is below min 3")]
    assert size_problems(min_size=0, max_size=5, size=-1) == [("size", "-1 is outside 0-10000")]


def test_pool_names_leave_room_for_the_host_numbers() -> None:
    assert pool_name_problem("east") is None
    assert "lowercase" in (pool_name_problem("East") or "")
    assert "longer than 55" in (pool_name_problem("a" * 56) or "")


def test_backoff_doubles_up_to_five_minutes() -> None:
    assert [backoff_seconds(n) for n in (0, 1, 2, 3, 10)] == [0.0, 5.0, 10.0, 20.0, 300.0]
