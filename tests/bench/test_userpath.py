"""The benchmarks' user path runs ``anvil serve`` with the shipped defaults: no configuration file,
none of the caller's ANVIL_* variables, only the listen addresses chosen."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from appliance.config import EngineSection, MonitorSection

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _userpath() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_userpath", BENCH / "userpath.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_user_path_appliance_has_the_shipped_timers_whatever_the_caller_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANVIL_MONITOR_INTERVAL", "1")
    monkeypatch.setenv("ANVIL_MONITOR_HEARTBEAT_TIMEOUT", "2")
    monkeypatch.setenv("ANVIL_ENGINE_BOOT_TIMEOUT", "5")
    app = _userpath().Appliance(tmp_path)
    timers = app.timers()
    m, e = MonitorSection(), EngineSection()
    assert timers["overrides"] == {}
    assert (timers["monitor_interval_s"], timers["fail_after"], timers["heartbeat_timeout_s"], timers["events"],
            timers["event_confirm_interval_s"]) == (m.interval, m.fail_after, m.heartbeat_timeout, m.events,
                                                    m.event_confirm_interval)
    assert timers["boot_timeout_s"] == e.boot_timeout and timers["tls"] is True
    assert not (tmp_path / "anvil.toml").exists()
    assert {k for k in app.env if k.startswith("ANVIL_")} == {"ANVIL_STATE_DIR", "ANVIL_CONFIG", "ANVIL_API_LISTEN",
                                                               "ANVIL_BOOT_LISTEN", "ANVIL_METRICS_LISTEN"}
    assert "shipped defaults, no configuration file" in app.describe_timers()


def test_overrides_are_named_in_the_description(tmp_path: Path) -> None:
    app = _userpath().Appliance(tmp_path, overrides={"ANVIL_MONITOR_INTERVAL": "1"})
    assert app.timers()["monitor_interval_s"] == 1.0
    assert "SMOKE OVERRIDES ANVIL_MONITOR_INTERVAL=1" in app.describe_timers()
