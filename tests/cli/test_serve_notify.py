"""`anvil serve` speaks systemd's notify protocol (the units are Type=notify with WatchdogSec=):
READY=1 once listening, WATCHDOG=1 pings from the event loop, STOPPING=1 on SIGTERM, and it
exits within 10 s. The test binds the NOTIFY_SOCKET itself, as systemd would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.lab.procs import free_tcp_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()


def _messages_until(sock: socket.socket, want: str, timeout: float) -> list[str]:
    """Datagrams (each one message of KEY=VALUE lines) until one holds ``want``; bounded."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if want in got[-1].splitlines():
            return got
    raise AssertionError(f"no {want} within {timeout:g} s; got {got}")


def _serve(tmp_path: Path, notify: str, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")}
    env.update({"ANVIL_STATE_DIR": str(tmp_path / "state"), "ANVIL_CONFIG": str(tmp_path / "anvil.toml"),
                "ANVIL_API_LISTEN": f"127.0.0.1:{free_tcp_port()}",
                "ANVIL_BOOT_LISTEN": f"127.0.0.1:{free_tcp_port()}",
                "NOTIFY_SOCKET": notify, "WATCHDOG_USEC": "1000000"})
    return subprocess.Popen([sys.executable, "-m", "appliance", "serve", *args], env=env, cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


@pytest.mark.parametrize("role", ["control", "boot"])
def test_serve_notifies_ready_watchdog_stopping_and_stops_on_sigterm(
        tmp_path: Path, notify_socket: tuple[socket.socket, str], role: str) -> None:
    sock, path = notify_socket
    args = ["--role", role] + (["--insecure-http"] if role == "control" else [])
    proc = _serve(tmp_path, path, *args)
    try:
        ready = _messages_until(sock, "READY=1", 60)
        assert f"MAINPID={proc.pid}" in ready[-1].splitlines()
        # Half of WATCHDOG_USEC: two pings within about a second.
        pings = [m for m in _messages_until(sock, "WATCHDOG=1", 3) if m == "WATCHDOG=1"]
        pings += [m for m in _messages_until(sock, "WATCHDOG=1", 3) if m == "WATCHDOG=1"]
        assert len(pings) >= 2
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _messages_until(sock, "STOPPING=1", 10)
        assert proc.wait(timeout=10) == 0
        print(f"{role}: stopped {time.monotonic() - t0:.2f} s after SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def test_watchdog_pings_stop_when_the_event_loop_hangs() -> None:
    """The pings come from the event loop, so a blocked loop sends none (systemd then restarts it)."""
    import asyncio

    from appliance.sdnotify import SystemdNotifier

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        name = f"anvil-test-notify-{os.getpid()}"
        sock.bind("\0" + name)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "100000"})

        async def main() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(notifier.watchdog(stop))
            await asyncio.sleep(0.12)     # pings at 0, 0.05, 0.1 s
            time.sleep(0.5)               # a blocking call on the loop: no pings meanwhile
            stop.set()
            await task

        t0 = time.monotonic()
        asyncio.run(main())
        sock.setblocking(False)
        count = 0
        while True:
            try:
                sock.recv(64)
            except BlockingIOError:
                break
            count += 1
        assert time.monotonic() - t0 >= 0.6 and count <= 4, count


def test_no_notify_socket_means_no_notifications() -> None:
    from appliance.sdnotify import SystemdNotifier

    assert not SystemdNotifier({}).send("READY=1")
