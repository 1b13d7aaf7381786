"""The DR bench's CI smoke mode rehearses a plan of 5 profiles on the emulated rack and reports its RTO."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "dr.py"


def test_dr_bench_smoke_rehearses_and_reports_rto(tmp_path: Path) -> None:
    out = tmp_path / "dr.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--json", str(out)], capture_output=True,
                          text=True, timeout=300, cwd=BENCH.parents[1],
                          env={k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "IN-PROCESS recovery site" in proc.stdout and "power delay: SHORT" in proc.stdout
    (r,) = json.loads(out.read_text())["rounds"]
    assert r["n"] == 5 and r["run"] == "succeeded" and r["up"] == 5 and r["waves"] == 2
    assert r["rto_s"] >= r["profile_rto_median_s"] >= r["profile_rto_min_s"] > 0
    assert r["steps_s"]["teardown"] > 0
