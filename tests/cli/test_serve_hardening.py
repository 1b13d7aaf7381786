"""A real `anvil serve` (HTTPS, shipped defaults) seen from outside: what its TLS accepts, the
headers on every kind of response, half-sent requests, and the modes of its state files."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.api.hardening import HEADER_TIMEOUT
from tests.cli.test_serve import _free_port, _start, _stop


@pytest.fixture
def https(anvil_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, int, Path, str]]:
    port = _free_port()
    boot = anvil_env["ANVIL_BOOT_LISTEN"]
    state = Path(anvil_env["ANVIL_STATE_DIR"])
    # A state directory made loosely beforehand, as an older Anvil or an admin's mkdir left it.
    state.mkdir(parents=True, mode=0o755)
    os.chmod(state, 0o755)
    old = os.umask(0o022)
    try:
        proc, url = _start({**anvil_env, "ANVIL_API_LISTEN": f"127.0.0.1:{port}"}, tmp_path)
    finally:
        os.umask(old)
    try:
        yield url, port, state, boot
    finally:
        _stop(proc)


def _client(**kw: object) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def _handshake(port: int, ctx: ssl.SSLContext) -> str | None:
    """The negotiated cipher, or None when the server refused the handshake."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                got = tls.cipher()
                return got[0] if got else None
        except (ssl.SSLError, ConnectionResetError):
            return None


def test_tls_is_1_2_or_later_and_aead_only(https: tuple[str, int, Path, str]) -> None:
    _, port, _, _ = https
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)     # asking for TLS 1.1 is the point
        old = _client(minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    with pytest.raises(ssl.SSLError):
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        if _handshake(port, old) is None:
            raise ssl.SSLError("refused")
    cbc = _client(maximum_version=ssl.TLSVersion.TLSv1_2)
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:"
                    "ECDHE-ECDSA-AES256-SHA384")
    assert _handshake(port, cbc) is None, "a CBC suite was accepted over TLS 1.2"
    gcm = _client(maximum_version=ssl.TLSVersion.TLSv1_2)
    assert "GCM" in (_handshake(port, gcm) or "") or "CHACHA20" in (_handshake(port, gcm) or "")
    assert _handshake(port, _client()) is not None     # TLS 1.3


def _headers(url: str) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(req, timeout=10, context=_client()) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_every_response_carries_the_security_headers_and_no_version_banner(
        https: tuple[str, int, Path, str]) -> None:
    url, _, _, boot = https
    seen = set()
    for path in ("/healthz", "/api/v1", "/api/v1/nope", "/no-such-page", "/login", "/static/console.css",
                 "/boot/ipxe"):
        status, h = _headers(url + path)
        seen.add(status)
        assert h.get("X-Content-Type-Options") == "nosniff", path
        assert h.get("X-Frame-Options") == "DENY", path
        assert h.get("Strict-Transport-Security", "").startswith("max-age="), path
        assert h.get("Server") == "anvil", (path, h.get("Server"))
    assert {200, 401, 404} <= seen
    with urllib.request.urlopen(f"http://{boot}/boot/ipxe", timeout=10) as resp:
        assert resp.headers["Server"] == "anvil" and "aiohttp" not in str(resp.headers)


def test_half_sent_requests_are_closed_after_the_header_deadline(https: tuple[str, int, Path, str]) -> None:
    _, port, _, boot = https
    host, _, boot_port = boot.rpartition(":")
    socks = []
    for target in [("127.0.0.1", port)] * 20 + [(host, int(boot_port))] * 20:
        s = socket.create_connection(target, timeout=5)
        if target[1] == port:
            s = _client().wrap_socket(s, server_hostname="127.0.0.1")
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")   # never finished
        socks.append(s)
    start = time.monotonic()
    open_ = list(socks)
    while open_ and time.monotonic() - start < HEADER_TIMEOUT + 20:
        for s in list(open_):
            s.settimeout(0.2)
            try:
                if s.recv(1) == b"":
                    open_.remove(s)
            except (TimeoutError, ssl.SSLWantReadError, BlockingIOError):
                pass
            except (ConnectionResetError, ssl.SSLError, OSError):
                open_.remove(s)
    took = time.monotonic() - start
    for s in socks:
        s.close()
    assert not open_, f"{len(open_)} of 40 half-sent requests still open after {took:.0f} s"
    assert took >= HEADER_TIMEOUT - 2


def test_the_state_directory_and_database_are_private(https: tuple[str, int, Path, str]) -> None:
    _, _, state, _ = https
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("anvil.db", "anvil.db-wal", "anvil.db-shm", "secrets.key", "admin.token", "admin.password"):
        path = state / name
        assert path.exists(), name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (name, oct(path.stat().st_mode))
