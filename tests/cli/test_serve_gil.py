"""`anvil serve` hands the GIL over every millisecond: its database threads come back from each
statement to an interpreter busy with requests, and under SQLite they wait holding the one
writer lock (a hundred deploys at once: the bind step's transaction held it 14 ms with Python's
5 ms default, 6.5 ms with 1 ms; the deploy round took 4.2 s against 2.7 s)."""

from __future__ import annotations

import sys
from typing import Any

import pytest


def test_serve_sets_a_one_millisecond_switch_interval(anvil_env: dict[str, str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from appliance.cli import serve as serve_cmd
    from appliance.cli.main import cli

    seen: list[float] = []

    async def run(*_a: Any, **_kw: Any) -> None:   # the appliance itself is not started here
        seen.append(sys.getswitchinterval())

    monkeypatch.setattr(serve_cmd, "run_appliance", run)
    before = sys.getswitchinterval()
    try:
        res = CliRunner().invoke(cli, ["serve"])
    finally:
        sys.setswitchinterval(before)
    assert res.exit_code == 0, res.output
    assert seen == [pytest.approx(0.001)]
