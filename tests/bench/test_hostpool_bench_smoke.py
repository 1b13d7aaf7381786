"""The host pool benchmark's CI smoke mode grows two pools and reports their times and the webhooks' latency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "hostpool.py"


def test_hostpool_bench_smoke_grows_pools_of_one_and_two(tmp_path: Path) -> None:
    out_file = tmp_path / "hostpool.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--json", str(out_file)], capture_output=True,
                          text=True, timeout=240, cwd=BENCH.parents[1],
                          env={k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out_file.read_text())
    assert [r["n"] for r in result["rounds"]] == [1, 2]
    assert all(r["ready_s"] >= r["first_ready_s"] > 0 for r in result["rounds"]), result
    hooks = result["webhooks"]
    # requested + ready for each host, every one signed and received once
    assert hooks["delivered"] == 6 and hooks["rejected"] == 0, hooks
    assert 0 < hooks["p50_ms"] <= hooks["p99_ms"] <= hooks["max_ms"]
    assert result["timers"]["overrides"] == {}
    assert "latency (event recorded -> received) p50" in proc.stdout
