"""The failover benchmark's CI smoke mode fails a blade twice and reports the times it measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "failover.py"


def test_failover_bench_smoke_moves_the_profile_twice(tmp_path: Path) -> None:
    out_file = tmp_path / "failover.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--json", str(out_file)], capture_output=True,
                          text=True, timeout=180, cwd=BENCH.parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out_file.read_text())
    assert len(result["rounds"]) == 2
    assert all(r["to"] != r["from"] and r["total_s"] > r["detect_s"] > 0 for r in result["rounds"])
    assert "target <= 5 s" in proc.stdout


def test_failover_bench_smoke_with_redfish_events_detects_without_waiting_for_the_poll(tmp_path: Path) -> None:
    out_file = tmp_path / "failover-events.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--events", "--poll", "60", "--json",
                           str(out_file)], capture_output=True, text=True, timeout=180, cwd=BENCH.parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out_file.read_text())
    assert result["events"] and len(result["rounds"]) == 2
    assert all(r["detect_s"] < 30 for r in result["rounds"]), result   # half the poll interval: an event did it
    assert "Redfish events on" in proc.stdout


def test_failover_bench_shipped_smoke_fails_a_blade_off_and_hangs_an_os(tmp_path: Path) -> None:
    out_file = tmp_path / "failover-shipped.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--shipped", "--json", str(out_file)],
                          capture_output=True, text=True, timeout=240, cwd=BENCH.parents[1],
                          env={k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out_file.read_text())
    assert [r["kind"] for r in result["rounds"]] == ["forceoff", "hung"]
    assert all(r["to"] != r["from"] and r["total_s"] > r["detect_s"] > 0 for r in result["rounds"]), result
    # The smoke fails each blade within 2 s of the monitor's pass over it, when its next regular poll is
    # furthest away: a path between polls noticed each failure (a BMC event or the heartbeat sweep).
    assert result["after_pass_max_s"] == 2 and all(r["after_pass_s"] <= 2 for r in result["rounds"]), result
    assert result["rounds"][0]["noticed_by"] in ("event", "heartbeat"), result["rounds"][0]
    hung = result["rounds"][1]
    assert hung["noticed_by"] == "heartbeat", hung
    # A hang, not a crash: the BMC still read On, and only the heartbeat timeout could tell.
    assert hung["bmc_power_after_failure"] == "On"
    assert hung["detect_from_last_beat_s"] > result["timers"]["heartbeat_timeout_s"]
    # Every timer is the shipped default, smoke or not.
    assert result["timers"]["overrides"] == {}
    assert result["timers"]["fail_after"] == 3 and result["timers"]["events"] is True
    assert "SMOKE OVERRIDES" not in proc.stdout
    assert set(result["kinds"]) == {"forceoff", "hung"}
    assert "target hung OS (BMC reads On) detected <= 10 s" in proc.stdout
