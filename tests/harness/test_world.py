"""The world checker (tests/support/world.py) catches what it is for, so its silence means something."""

from __future__ import annotations

from tests.support.world import INF, Span, Stamp, minus, spans_when, violations


def test_spans_from_changes() -> None:
    assert spans_when([(5, True), (1, True), (3, False), (7, False), (9, True)]) == [Span(1, 3), Span(5, 7), Span(9)]
    assert spans_when([(2, False), (4, True), (4.5, True)], initially=True) == [Span(-INF, 2), Span(4)]
    assert spans_when([]) == []
    assert minus([Span(0, 10)], [Span(2, 3), Span(8, 20)]) == [Span(0, 2), Span(3, 8)]


def test_a_clean_move_is_no_violation() -> None:
    """Released from b1 (off at 5, binding ended at 6), stamped on b2 (bound at 7, on at 8)."""
    power = {"b1": [(1.5, True), (5, False)], "b2": [(8, True)]}
    stamps = [Stamp("b1", "web", Span(1, 6)), Stamp("b2", "web", Span(7))]
    assert violations(power, stamps) == []


def test_one_profile_on_two_powered_on_blades_is_caught() -> None:
    """The spare came on at 8 while the old blade was still on until 9."""
    power = {"b1": [(1.5, True), (9, False)], "b2": [(8, True)]}
    stamps = [Stamp("b1", "web", Span(1, 6)), Stamp("b2", "web", Span(7))]
    assert violations(power, stamps) == ["profile web ran on b1 (1.500..9.000) and b2 (8.000..now) at once"]


def test_a_blade_restamped_without_a_power_off_is_caught() -> None:
    """Bound to web, on at 2; web's binding ends and db's begins, and the blade never went off."""
    power = {"b1": [(2, True)]}
    stamps = [Stamp("b1", "web", Span(1, 5)), Stamp("b1", "db", Span(6))]
    assert violations(power, stamps) == ["blade b1 ran db then web without a power-off between (on 2.000..now)"]


def test_a_power_off_between_two_profiles_is_no_violation() -> None:
    power = {"b1": [(2, True), (4.9, False), (7, True)]}
    stamps = [Stamp("b1", "web", Span(1, 5)), Stamp("b1", "db", Span(6))]
    assert violations(power, stamps) == []


def test_an_isolated_blade_still_on_does_not_count_but_one_reachable_again_does() -> None:
    """Fenced by shutting its ports at 6 (its BMC is dead: on for ever); the spare on at 8."""
    power = {"b1": [(1.5, True)], "b2": [(8, True)]}
    stamps = [Stamp("b1", "web", Span(1, 7)), Stamp("b2", "web", Span(7.5))]
    assert violations(power, stamps, {"b1": [(6, True)]}) == []
    assert violations(power, stamps, {"b1": [(6, True), (9, False)]}) == [
        "profile web ran on b1 (9.000..now) and b2 (8.000..now) at once"]
    assert violations(power, stamps, {"b1": [(8.5, True)]}) == [
        "profile web ran on b1 (1.500..8.500) and b2 (8.000..now) at once"]
