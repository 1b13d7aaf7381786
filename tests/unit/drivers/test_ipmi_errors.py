"""pyghmi's two error styles map to the same DriverErrors."""

from __future__ import annotations

import pytest

from appliance.drivers.errors import BadSettings, BmcAuthFailed, BmcBusy, BmcFailure, BmcUnreachable, Unsupported
from appliance.drivers.ipmi.driver import _chassis_health, _fail
from appliance.drivers.protocols import HealthState


@pytest.mark.parametrize(
    ("message", "code", "kind"),
    [
        ("Incorrect password provided", 0, BmcAuthFailed),
        ("Unauthorized name", 0, BmcAuthFailed),
        ("Session no longer connected", 0, BmcUnreachable),
        ("timeout", 0, BmcUnreachable),
        ("Node busy", 0xC0, BmcBusy),
        ("Invalid command", 0xC1, Unsupported),
        ("Invalid data field in request", 0xCC, BadSettings),
        ("Unspecified error", 0xFF, BmcFailure),
    ],
)
def test_raised_exceptions_map_by_text_and_completion_code(message: str, code: int, kind: type) -> None:
    assert type(_fail("b", "op", message, code)) is kind


def test_returned_error_dicts_map_the_same_way() -> None:
    assert isinstance(_fail("b", "op", {"error": "Incorrect password provided"}), BmcAuthFailed)
    assert isinstance(_fail("b", "op", {"error": "Invalid command", "code": 0xC1}), Unsupported)


def test_a_login_that_fails_without_a_reason_is_unreachable() -> None:
    assert isinstance(_fail("b", "op", None, in_login=True), BmcUnreachable)


def test_chassis_status_faults_map_to_health() -> None:
    assert _chassis_health(bytes([1, 0, 0])).state is HealthState.OK
    assert _chassis_health(bytes([1 | 0x08, 0, 0])).state is HealthState.CRITICAL
    assert _chassis_health(bytes([1, 0, 0x01])).state is HealthState.WARNING
