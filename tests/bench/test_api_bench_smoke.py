"""The API benchmark's CI smoke modes list every blade page by page and report p50/p99 and req/s: plain HTTP
against the API role alone, and the user's path (HTTPS, every role, stamps running)."""

from __future__ import annotations

import json
import os
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
    assert "PLAIN HTTP" in proc.stdout and "no TLS, no engine, no monitor" in proc.stdout
    result = json.loads(out.read_text())
    listing, profile = result["rows"]
    assert listing["requests"] == 10 and profile["requests"] == 200
    assert all(r["p50_ms"] > 0 and r["req_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in result["rows"])


def test_api_bench_tls_smoke_pages_over_https_while_stamps_run(tmp_path: Path) -> None:
    out = tmp_path / "api-tls.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--tls", "--smoke", "--json", str(out)], capture_output=True,
                          text=True, timeout=180, cwd=BENCH.parents[1],
                          env={k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "USER PATH: anvil serve (all roles) over HTTPS" in proc.stdout
    assert "shipped defaults, no configuration file" in proc.stdout
    result = json.loads(out.read_text())
    idle, loaded = result["rows"]
    assert idle["case"] == "TLS, 4 clients, engine idle, monitor on"
    assert loaded["case"] == "TLS, 4 clients, while 5 stamps run"
    assert result["stamps"] == 5 and result["stamps_seen_s"] > 0 and result["stamps_wall_s"] > 0
    assert "machine check" in proc.stdout and result["machine"]["machine_stalls"] >= 0
    assert all(r["requests"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in result["rows"])
