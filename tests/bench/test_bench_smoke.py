"""The stamp benchmark's CI smoke modes run, stamp and release every blade, and say what they measured:
in-process, and the user's path (a real ``anvil serve`` with shipped defaults, REST over TLS)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "stamp.py"


def _header_and_rows(stdout: str, first: str) -> tuple[list[str], list[list[str]]]:
    lines = stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:1] == [first])
    rows = []
    for line in lines[at + 1:]:
        if not line.split() or line.split()[0].removesuffix("(cold)") not in ("stamp", "unstamp"):
            break
        rows.append(line.split())
    return lines[at].split(), rows


def test_stamp_bench_smoke_stamps_one_and_five_blades(tmp_path: Path) -> None:
    out_file = tmp_path / "stamp.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--json", str(out_file)], capture_output=True,
                          text=True, timeout=90, cwd=BENCH.parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "power delay: SHORT, 0-0.2 s" in proc.stdout
    assert "IN-PROCESS" in proc.stdout and "no REST, no TLS" in proc.stdout
    result = json.loads(out_file.read_text())
    stamps = [(r["n"], r["cold"]) for r in result["rounds"] if r["kind"] == "stamp"]
    assert stamps == [(1, True), (1, False), (5, False)]
    assert all(not r["not_succeeded"] for r in result["rounds"])
    assert all(r["per_blade_median_s"] > 0 for r in result["rounds"])
    # One label per column: kind N ->on ->done blade-med p95 max submit failed.
    header, rows = _header_and_rows(proc.stdout, "kind")
    assert header == ["kind", "N", "->on", "s", "->done", "s", "blade", "med", "p95", "max", "submit", "s", "failed"]
    assert all(len(r) == 9 for r in rows), rows
    first = next(r for r in result["rounds"] if r["kind"] == "stamp" and not r["cold"])
    row = rows[2]
    assert float(row[2]) == round(first["wall_s"], 2) and float(row[3]) == round(first["wall_done_s"], 2)


def _rest(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out_file = tmp_path / "stamp-rest.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", *extra, "--json", str(out_file)],
                          capture_output=True, text=True, timeout=150, cwd=BENCH.parents[1],
                          env={k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out_file.read_text())


def test_stamp_bench_rest_smoke_stamps_through_a_real_appliance_over_tls(tmp_path: Path) -> None:
    proc, result = _rest(tmp_path, "--rest")
    assert "USER PATH" in proc.stdout and "over HTTPS" in proc.stdout
    assert "timers: shipped defaults, no configuration file" in proc.stdout
    assert "power delay 0-0.2 s per change" in proc.stdout
    assert result["path"] == "rest" and result["driver"] == "redfish"
    assert result["timers"]["overrides"] == {} and result["timers"]["tls"] is True
    assert result["timers"]["monitor_interval_s"] == 30.0 and result["timers"]["boot_timeout_s"] == 600.0
    stamps = [(r["n"], r["cold"]) for r in result["rounds"] if r["kind"] == "stamp"]
    assert stamps == [(1, True), (1, False), (5, False)]
    for r in result["rounds"]:
        assert not r["not_succeeded"], r
        # request -> powered on <= request -> job over <= client saw it over
        assert 0 < r["on_s"] <= r["active_s"] <= r["seen_s"], r
    header, rows = _header_and_rows(proc.stdout, "kind")
    assert header == ["kind", "N", "submit", "s", "->on", "s", "->active", "s", "seen", "s", "blade", "med", "p95",
                      "max", "failed"]
    assert [r[0] for r in rows] == ["stamp(cold)", "unstamp(cold)", "stamp", "unstamp", "stamp", "unstamp"]
    assert "target per blade <= 2 s (request -> powered on), N=1 cold:" in proc.stdout


def test_stamp_bench_rest_smoke_with_the_fake_driver(tmp_path: Path) -> None:
    proc, result = _rest(tmp_path, "--driver", "fake")
    assert "the `fake` BMC driver inside anvil serve" in proc.stdout
    assert result["driver"] == "fake" and result["timers"]["overrides"] == {}
    assert all(not r["not_succeeded"] and r["active_s"] > 0 for r in result["rounds"])


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed (dev.sh)")
def test_stamp_bench_prometheus_smoke_reads_the_step_histograms_back_from_prometheus(tmp_path: Path) -> None:
    proc, result = _rest(tmp_path, "--driver", "fake", "--prometheus")
    prom = result["prometheus"]
    assert prom["scrapes"] >= 3, prom
    stamp = prom["steps"]["stamp"]
    # Every try of every round is in Prometheus: 1 cold + 1 + 5 blades.
    assert round(stamp["power-on"]["tries"]) == 7, stamp
    assert 0 < stamp["power-on"]["p50"] <= stamp["power-on"]["p95"] <= stamp["power-on"]["p99"], stamp
    assert {"choose-blade", "set-vlans", "power-on"} <= set(stamp), stamp
    assert round(prom["steps"]["unstamp"]["power-off"]["tries"]) == 7
    lines = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "step duration quantiles" in line)
    assert "histogram_quantile" in lines[at] and "anvil_job_step_duration_seconds_bucket" in lines[at]
    assert lines[at + 1].split() == ["kind", "step", "tries", "p50", "s", "p95", "s", "p99", "s"]
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in lines[at + 2:] if line.startswith("  ")}
    assert rows[("stamp", "power-on")][0] == "7"
    assert float(rows[("stamp", "power-on")][1]) == round(stamp["power-on"]["p50"], 3)


def _children(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.add(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_stamp_bench_rest_stops_every_process_it_started_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, str(BENCH), "--rest", "--sizes", "100", "--cold", "1"],
                            cwd=BENCH.parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")})
    started: set[int] = set()
    try:
        # The switch, 4 emulator processes and anvil serve: wait until all six run.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(started) < 6 and proc.poll() is None:
            started |= _children(proc.pid)
            time.sleep(0.2)
        assert len(started) >= 6, f"only {len(started)} child processes seen"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        left = [p for p in started if _alive(p)]
        assert not left, f"still running after Ctrl-C: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for p in started:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
