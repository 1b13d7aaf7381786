"""The API benchmark's CI smoke mode lists every blade page by page and reports p50/p99 and req/s."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "api.py"


def test_api_bench_smoke_walks_every_page(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--json", str(out)], capture_output=True,
                          text=True, timeout=120, cwd=BENCH.parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "target p99 <= 100 ms per page" in proc.stdout
    result = json.loads(out.read_text())
    listing, profile = result["rows"]
    assert listing["requests"] == 10 and profile["requests"] == 200
    assert all(r["p50_ms"] > 0 and r["req_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in result["rows"])
