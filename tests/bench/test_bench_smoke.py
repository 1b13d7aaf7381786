"""The stamp benchmark's CI smoke mode runs, stamps and releases every blade, and says what it measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "stamp.py"


def test_stamp_bench_smoke_stamps_one_and_five_blades(tmp_path: Path) -> None:
    out_file = tmp_path / "stamp.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--json", str(out_file)], capture_output=True,
                          text=True, timeout=90, cwd=BENCH.parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "power delay: SHORT, 0-0.2 s" in proc.stdout
    result = json.loads(out_file.read_text())
    stamps = [(r["n"], r["cold"]) for r in result["rounds"] if r["kind"] == "stamp"]
    assert stamps == [(1, True), (1, False), (5, False)]
    assert all(not r["not_succeeded"] for r in result["rounds"])
    assert all(r["per_blade_median_s"] > 0 for r in result["rounds"])
