"""The monitor polling benchmark's CI smoke mode polls a small IPMI and Redfish rack and reports a rate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "monitor_poll.py"


def test_monitor_poll_bench_smoke_polls_every_blade_healthy(tmp_path: Path) -> None:
    out_file = tmp_path / "monitor.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--json", str(out_file)], capture_output=True,
                          text=True, timeout=180, cwd=BENCH.parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["kind"]: r for r in json.loads(out_file.read_text())["rows"]}
    assert rows["ipmi"]["blades"] == 20 and rows["redfish"]["blades"] == 10
    assert all(r["not_ok"] == 0 and r["blades_per_s"] > 0 for r in rows.values()), rows
    assert "10,000 blades would take" in proc.stdout
