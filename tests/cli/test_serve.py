"""`anvil serve`: healthz, bearer-token auth from the first route, HTTPS by default."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.lab import procs


def _free_port() -> int:
    return procs.free_tcp_port()


def _start(env: dict[str, str], tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--ready-file", str(ready), *args],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if ready.exists() and ready.read_text().strip():
            return proc, ready.read_text().strip()
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("serve did not become ready in 30 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture
def served(anvil_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    env = {**anvil_env, "ANVIL_API_LISTEN": f"127.0.0.1:{_free_port()}"}
    proc, url = _start(env, tmp_path, "--insecure-http")
    try:
        yield url, Path(anvil_env["ANVIL_STATE_DIR"])
    finally:
        _stop(proc)


def _get(url: str, token: str | None = None, ctx: ssl.SSLContext | None = None) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_healthz_is_open_and_api_needs_a_token(served: tuple[str, Path]) -> None:
    url, state = served
    status, body = _get(url + "/healthz")
    assert status == 200 and body["store"] == "ok"
    status, body = _get(url + "/api/v1")
    assert status == 401 and body["status"] == 401
    status, _ = _get(url + "/api/v1", token="anvil_wrong")
    assert status == 401
    token_file = state / "admin.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    status, body = _get(url + "/api/v1", token=token_file.read_text().strip())
    assert status == 200 and body["role"] == "admin"


def test_https_by_default_with_a_self_signed_certificate(anvil_env: dict[str, str], tmp_path: Path) -> None:
    env = {**anvil_env, "ANVIL_API_LISTEN": f"127.0.0.1:{_free_port()}"}
    proc, url = _start(env, tmp_path)
    try:
        assert url.startswith("https://")
        cert = Path(anvil_env["ANVIL_STATE_DIR"]) / "tls" / "cert.pem"
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        status, _ = _get(url + "/healthz", ctx=ctx)
        assert status == 200
        assert (cert.parent / "key.pem").stat().st_mode & 0o777 == 0o600
    finally:
        _stop(proc)


def test_plain_http_is_refused_off_loopback(anvil_env: dict[str, str]) -> None:
    env = {**os.environ, **anvil_env, "ANVIL_API_LISTEN": "0.0.0.0:18443"}
    res = subprocess.run([sys.executable, "-m", "appliance", "serve", "--insecure-http"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "loopback only" in res.stderr
