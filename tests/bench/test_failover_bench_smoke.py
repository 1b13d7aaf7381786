"""The failover benchmark's CI smoke mode fails a blade twice and reports the times it measured."""

from __future__ import annotations

import json
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
