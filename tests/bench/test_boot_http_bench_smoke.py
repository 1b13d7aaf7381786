"""The boot-serving benchmark's CI smoke mode runs Anvil's boot role and nginx side by side and
reports image MiB/s, the ratio, and iPXE scripts per second with one boot token per script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "boot_http.py"


@pytest.mark.skipif(shutil.which("wrk") is None or not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()),
                    reason="wrk and nginx-light are needed")
def test_boot_http_bench_smoke_compares_with_nginx_and_scripts_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "boot.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--json", str(out)], capture_output=True,
                          text=True, timeout=120, cwd=BENCH.parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Anvil / nginx image throughput:" in proc.stdout
    result = json.loads(out.read_text())
    anvil, nginx, known, unknown = result["rows"]
    assert anvil["mib_per_s"] > 0 and nginx["mib_per_s"] > 0 and result["ratio_vs_nginx"] > 0
    assert known["requests"] > 0 and unknown["requests"] > 0
    assert result["clean"], "every answer 2xx, no socket errors"
    assert result["scripts_write_nothing"], (result["tokens_written"], known["requests"])
