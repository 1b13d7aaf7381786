"""The SLA policy: grow and shrink from the hosts' reported utilisation, with a compressed clock."""

from __future__ import annotations

from appliance.domain.hostpool_policy import (
    PolicyState,
    Sample,
    ScalePolicy,
    duration,
    evaluate,
    policy_problems,
)

POLICY = ScalePolicy(grow_above=75, shrink_below=30, for_seconds=300, cooldown_seconds=600)


def load(at: float, *values: float) -> list[Sample]:
    return [Sample(f"h{i}", at, cpu=v) for i, v in enumerate(values)]


def run(state: PolicyState, at: float, size: int, *values: float, max_size: int = 10, limit: int | None = None
        ) -> tuple[object, PolicyState]:
    return evaluate(POLICY, state, load(at, *values), now=at, size=size, min_size=1, max_size=max_size,
                    ready=len(values), limit=limit)


def test_grows_once_the_average_stayed_above_for_the_whole_window() -> None:
    state = PolicyState()
    for t in range(0, 300, 60):   # five minutes, one evaluation a minute
        decision, state = run(state, 1000.0 + t, 2, 90, 70)
        assert decision is None
    decision, state = run(state, 1300.0, 2, 90, 70)
    assert decision is not None and (decision.action, decision.size_from, decision.size_to) == ("grow", 2, 3)
    assert decision.reason == "average cpu 80.0% > 75% for 5m 0s (2 of 2 ready hosts reporting)"
    assert decision.inputs["average"] == 80.0 and decision.inputs["samples"] == {"h0": 90.0, "h1": 70.0}
    assert decision.inputs["threshold"] == 75 and decision.inputs["heldSeconds"] == 300.0
    assert state == PolicyState(last_scaled_at=1300.0)


def test_a_dip_restarts_the_window() -> None:
    state = PolicyState()
    _, state = run(state, 0.0, 2, 90, 90)
    _, state = run(state, 200.0, 2, 50, 50)          # back to normal
    decision, state = run(state, 320.0, 2, 90, 90)   # high again: a new window from here
    assert decision is None and state.above_since == 320.0
    decision, _ = run(state, 620.0, 2, 90, 90)
    assert decision is not None and decision.action == "grow"


def test_cool_down_holds_the_next_change_then_the_window_counts_again() -> None:
    state = PolicyState(last_scaled_at=0.0)
    decision, state = run(state, 10.0, 3, 95, 95)
    assert decision is None and state.above_since == 10.0
    decision, state = run(state, 400.0, 3, 95, 95)   # held 390 s but cooling down until 600 s
    assert decision is None
    decision, state = run(state, 600.0, 3, 95, 95)
    assert decision is not None and decision.size_to == 4


def test_shrinks_below_the_low_mark_but_never_under_min() -> None:
    state = PolicyState()
    _, state = run(state, 0.0, 3, 10, 20)
    decision, state = run(state, 300.0, 3, 10, 20)
    assert decision is not None and (decision.action, decision.size_to) == ("shrink", 2)
    assert decision.reason.startswith("average cpu 15.0% < 30% for 5m 0s")
    _, state = run(PolicyState(), 0.0, 1, 5)
    decision, state = run(state, 300.0, 1, 5)
    assert decision is not None and decision.action == "hold"
    assert decision.reason.endswith("would shrink but the pool is at its min (1)")
    again, _ = run(state, 360.0, 1, 5)
    assert again is None            # said once, not every pass


def test_max_and_quota_bound_the_growth_and_say_which() -> None:
    state = PolicyState(above_since=0.0)
    decision, _ = run(state, 300.0, 4, 99, max_size=4)
    assert decision is not None and decision.action == "hold" and "at its max (4)" in decision.reason
    decision, _ = run(state, 300.0, 4, 99, limit=4)
    assert decision is not None and decision.action == "hold" and "at the tenant's quota (4)" in decision.reason


def test_stale_or_missing_samples_decide_nothing() -> None:
    state = PolicyState(above_since=0.0)
    old = [Sample("h0", 0.0, cpu=99.0)]
    decision, state = evaluate(POLICY, state, old, now=1000.0, size=2, min_size=1, max_size=5, ready=2)
    assert decision is None and state.above_since is None
    decision, _ = evaluate(POLICY, state, [Sample("h0", 1000.0, memory=99.0)], now=1000.0, size=2, min_size=1,
                           max_size=5, ready=2)
    assert decision is None     # the policy is on cpu; no cpu reported


def test_policy_problems_name_the_field() -> None:
    bad = ScalePolicy(metric="disk", grow_above=50, shrink_below=60, step=0, for_seconds=-1)
    assert dict(policy_problems(bad)) == {
        "metric": "'disk' is not one of cpu, memory",
        "shrinkBelow": "60 % is not below growAbove 50 % (the pool would grow and shrink on the same load)",
        "forSeconds": "-1 is outside 0-604800 s", "step": "0 is outside 1-100"}
    assert policy_problems(POLICY) == []
    assert ScalePolicy.from_public(POLICY.public()) == POLICY
    assert PolicyState.from_public(PolicyState(1.0, None, 3.0, "x").public()) == PolicyState(1.0, None, 3.0, "x")


def test_durations_read_as_people_say_them() -> None:
    assert [duration(s) for s in (40, 302, 3780)] == ["40s", "5m 2s", "1h 3m"]
