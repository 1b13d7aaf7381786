"""The CLI start-up bench times `anvil --help` and `anvil blade list` as a user runs them (fresh
processes, a store that already exists) and names the imports that cost most."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "cli_startup.py"


def test_cli_startup_bench_times_help_and_blade_list(tmp_path: Path) -> None:
    out = tmp_path / "cli.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--runs", "2", "--blades", "20", "--json", str(out)],
                          capture_output=True, text=True, timeout=180, cwd=BENCH.parents[1],
                          env={k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert set(result["rows"]) == {"--help", "blade list"} and result["target_s"] == 0.3
    assert all(0 < r["min_s"] <= r["median_s"] <= r["max_s"] for r in result["rows"].values()), result
    assert result["imports"] and all(name and seconds > 0 for name, seconds in result["imports"]), result
    assert "anvil blade list" in proc.stdout and "costliest imports" in proc.stdout
