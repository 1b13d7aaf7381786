"""The failure detector: misses declare a failure, answers clear it, flapping is held."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.domain.health import Detector, DetectorPolicy, Health, Observation, Sample, observe

P = DetectorPolicy(fail_after=3, recover_after=2, flap_changes=4, flap_window=600, stable_for=300)


def feed(pattern: str, *, start: float = 0.0, step: float = 30.0, d: Detector | None = None,
         policy: DetectorPolicy = P) -> tuple[Detector, list[Observation]]:
    """Feed samples from a string: '+' answered, '-' missed; one every ``step`` seconds."""
    d = d or Detector()
    out = []
    for i, c in enumerate(pattern):
        obs = observe(d, Sample(start + i * step, c == "+"), policy)
        out.append(obs)
        d = obs.detector
    return d, out


def reported(obs: Iterable[Observation]) -> list[str]:
    return [o.detector.reported.value for o in obs]


def test_a_new_target_is_unknown_until_it_has_answered_enough() -> None:
    d, obs = feed("++")
    assert reported(obs) == ["unknown", "healthy"]
    assert not obs[1].recovered  # a first verdict, not a recovery
    assert d.since == 30.0


def test_consecutive_misses_declare_failure_once() -> None:
    d, obs = feed("++---")
    assert reported(obs) == ["unknown", "healthy", "healthy", "healthy", "failed"]
    assert [o.declared_failed for o in obs] == [False, False, False, False, True]
    d, obs = feed("--", d=d, start=150)
    assert not any(o.declared_failed for o in obs) and d.reported is Health.FAILED


def test_a_single_answer_between_misses_resets_the_count() -> None:
    _, obs = feed("++--+--+--")
    assert set(reported(obs)) == {"unknown", "healthy"}


def test_recovery_needs_its_own_threshold() -> None:
    d, _ = feed("++---")
    d, obs = feed("+-++", d=d, start=150)
    assert reported(obs) == ["failed", "failed", "failed", "healthy"]
    assert obs[-1].recovered


def test_a_never_healthy_target_can_be_declared_failed() -> None:
    _, obs = feed("---")
    assert obs[-1].declared_failed


def test_flapping_holds_and_triggers_no_failover_until_stable() -> None:
    # healthy, then four healthy<->failed changes within 10 minutes: the fourth starts flapping.
    d, obs = feed("++" + "---++" * 2)
    assert reported(obs)[-1] == "flapping"
    assert [i for i, o in enumerate(obs) if o.declared_failed] == [4, 9]
    # It now fails for good: still flapping (no failover) until 300 s without a change.
    start = d.last_at + 30  # type: ignore[operator]
    d, obs = feed("-" * 14, d=d, start=start)
    held = [o for o in obs if o.detector.reported is Health.FLAPPING]
    assert held and not any(o.declared_failed for o in held)
    released = [o for o in obs if o.declared_failed]
    assert len(released) == 1
    # The release comes only once the failed state has been steady for stable_for.
    first_rel = released[0]
    assert first_rel.detector.last_at - d.changed_at >= 300  # type: ignore[operator]
    assert first_rel.previous is Health.FLAPPING and first_rel.detector.changes == ()


def test_release_into_healthy_after_flapping() -> None:
    d, _ = feed("++" + "---++" * 2)
    assert d.reported is Health.FLAPPING
    d, obs = feed("+" * 12, d=d, start=d.last_at + 30)  # type: ignore[operator]
    assert obs[-1].detector.reported is Health.HEALTHY
    assert any(o.recovered for o in obs)


def test_flaps_outside_the_window_are_forgotten() -> None:
    # Changes 5 to 7.5 minutes apart: never four within the 10-minute window.
    _, obs = feed("++---++---++---++---", step=150)
    assert "flapping" not in reported(obs)


def test_stale_samples_are_ignored() -> None:
    d, _ = feed("++")
    obs = observe(d, Sample(10.0, False), P)
    assert obs.stale and obs.detector is d and not obs.changed


def test_policy_bounds_name_the_field() -> None:
    with pytest.raises(ValueError, match="fail_after: 0 is outside 1-1000"):
        DetectorPolicy(fail_after=0)
    with pytest.raises(ValueError, match="flap_changes"):
        DetectorPolicy(flap_changes=1)
    with pytest.raises(ValueError, match="stable_for"):
        DetectorPolicy(stable_for=0)
    assert DetectorPolicy().problems() == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=80), st.integers(1, 5), st.integers(1, 5))
def test_detector_invariants(samples: list[bool], fail_after: int, recover_after: int) -> None:
    policy = DetectorPolicy(fail_after=fail_after, recover_after=recover_after, flap_changes=3, flap_window=300,
                            stable_for=120)
    d = Detector()
    run_miss = run_ok = 0
    for i, ok in enumerate(samples):
        obs = observe(d, Sample(i * 30.0, ok), policy)
        run_miss, run_ok = (0, run_ok + 1) if ok else (run_miss + 1, 0)
        d = obs.detector
        # Never failed without fail_after consecutive misses behind the debounced state change.
        if obs.declared_failed:
            assert d.settled is Health.FAILED
        if d.settled is Health.FAILED and run_miss:
            assert run_miss >= fail_after or d.misses == run_miss
        # Flapping needs enough recent changes, or is being held.
        assert d.reported in (d.settled, Health.FLAPPING)
        assert all(d.last_at - t < policy.flap_window for t in d.changes)  # type: ignore[operator]
