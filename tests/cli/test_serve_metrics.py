"""``anvil serve`` serves /metrics on ``[metrics] listen`` without authentication (DESIGN §8); a
taken *default* address costs only that listen, a configured one stops serve with an error
naming the setting."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from appliance.lab.procs import free_tcp_port
from tests.support.boot_role import wait_for


def _serve_all(anvil_env: dict[str, str], env: dict[str, str], drop: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """``anvil serve`` (role all) until ready or exited; 120 s: start-up is slow on a busy machine."""
    ready = Path(anvil_env["ANVIL_STATE_DIR"]).parent / "all.ready"
    ready.unlink(missing_ok=True)
    full = {**os.environ, **anvil_env, "ANVIL_API_LISTEN": f"127.0.0.1:{free_tcp_port()}", **env}
    for key in drop:
        full.pop(key, None)
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--insecure-http", "--ready-file",
                             str(ready)], env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (ready.exists() and ready.read_text().strip()) or proc.poll() is not None, 120,
                 "anvil serve ready")
    except AssertionError:
        proc.kill()
        proc.wait(5)
        raise
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out.decode()


def test_serve_answers_metrics_on_its_own_listen_without_a_token(anvil_env: dict[str, str]) -> None:
    metrics = f"127.0.0.1:{free_tcp_port()}"
    proc = _serve_all(anvil_env, {"ANVIL_METRICS_LISTEN": metrics})
    try:
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as resp:
            body = resp.read().decode()
        assert resp.status == 200 and "anvil_engine_leader" in body and "anvil_build_info{" in body
    finally:
        out = _stop(proc)
    assert f"anvil: metrics on http://{metrics}/metrics (no authentication)" in out


def test_a_taken_metrics_listen_is_skipped_only_when_it_is_the_default(anvil_env: dict[str, str]) -> None:
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):     # someone else holds it: just as good
            holder.bind(("127.0.0.1", 9464))
            holder.listen()
        proc = _serve_all(anvil_env, {}, drop=["ANVIL_METRICS_LISTEN"])
        assert proc.poll() is None, _stop(proc)
        out = _stop(proc)
        assert "serving no separate /metrics" in out and "API and console on http://" in out
        assert "anvil: metrics on" not in out
        proc = _serve_all(anvil_env, {"ANVIL_METRICS_LISTEN": "127.0.0.1:9464"})
        out = _stop(proc)
        assert proc.returncode == 1, out
        assert "cannot listen on 127.0.0.1:9464 for metrics" in out and "ANVIL_METRICS_LISTEN=HOST:PORT" in out
