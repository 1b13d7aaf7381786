"""blade_rows.health_rows reads SQLite's text of a sample's time by hand (a list page's hundred
samples, under load): it must say exactly what parsing the time would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from appliance.services.blade_rows import health_rows

NOW = datetime(2026, 12, 7, 3, 29, 25, 500000, tzinfo=UTC)


@pytest.mark.parametrize("at", [
    NOW - timedelta(seconds=20, microseconds=123456),
    NOW - timedelta(seconds=20, microseconds=500000),        # whole seconds apart
    (NOW - timedelta(days=3)).replace(microsecond=0),        # isoformat() drops a zero fraction
    NOW - timedelta(microseconds=1),
    NOW + timedelta(seconds=2),                              # a clock ahead of ours: age 0
    NOW - timedelta(days=400, hours=5),
])
def test_sqlite_text_reads_as_the_parsed_time(at: datetime) -> None:
    text = at.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")   # how SQLAlchemy stores it on SQLite
    by_text = health_rows([(1, text, 1, "on", "ok", "")], NOW)[1]
    by_value = health_rows([(1, at, 1, "on", "ok", "")], NOW)[1]
    assert by_text == by_value
    age = (NOW - at).total_seconds()
    assert by_value["healthAge"] == (int(age) if age > 0 else 0)
    assert by_value["healthAt"] == at.isoformat()


def test_other_shapes_of_text_are_parsed() -> None:
    got = health_rows([(7, "2026-12-07T03:29:05+00:00", 0, None, None, "BMC unreachable")], NOW)[7]
    assert got == {"power": None, "health": "unreachable", "healthOk": False, "healthDetail": "BMC unreachable",
                   "healthAt": "2026-12-07T03:29:05+00:00", "healthAge": 20}
