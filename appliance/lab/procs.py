"""Start and stop helper processes (emulators) by PID, with bounded waits.

Used by the lab emulators and the integration tests. Every process started here
runs in its own session (process group), writes stdout and stderr to one log file,
and is stopped with SIGTERM, then SIGKILL after a deadline. Nothing here waits
without a bound.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class ProcError(RuntimeError):
    """A helper process failed to start or to become ready; the message quotes its log tail."""


@dataclass(slots=True)
class ProcHandle:
    """A running helper process. ``pid`` is also the process-group id."""

    pid: int
    cmd: tuple[str, ...]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def log_tail(self, limit: int = 2000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace")


def start(
    cmd: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcHandle:
    """Start ``cmd`` in a new session; its output goes to ``log_path`` (truncated).

    ``env`` is added to the current environment (not a replacement).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )
    return ProcHandle(pid=popen.pid, cmd=tuple(cmd), log_path=log_path, popen=popen)


def _reap(handle: ProcHandle, deadline: float) -> bool:
    """Wait until the process is gone or ``deadline`` (monotonic) passes; True if gone."""
    while time.monotonic() < deadline:
        if handle.popen is not None:
            try:
                handle.popen.wait(timeout=max(0.0, min(0.05, deadline - time.monotonic())))
                return True
            except subprocess.TimeoutExpired:
                continue
        if not handle.alive():
            return True
        time.sleep(0.02)
    return not handle.alive()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop(handle: ProcHandle, timeout: float = 5.0) -> int | None:
    """SIGTERM the process (and its group), SIGKILL after ``timeout`` s; returns the exit code if known.

    Bounded: returns after at most about ``timeout + 2`` seconds even if the process
    refuses to die (then the exit code is None).
    """
    if not handle.alive():
        return handle.popen.returncode if handle.popen is not None else None
    _signal_group(handle.pid, signal.SIGTERM)
    if not _reap(handle, time.monotonic() + timeout):
        _signal_group(handle.pid, signal.SIGKILL)
        _reap(handle, time.monotonic() + 2.0)
    return handle.popen.returncode if handle.popen is not None else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its reaped children), from /proc; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def wait_until(
    ready: Callable[[], bool],
    handle: ProcHandle,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> None:
    """Poll ``ready()`` until true; raise ProcError (with the log tail) on exit or after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not handle.alive():
            raise ProcError(f"{what} exited during start-up (pid {handle.pid}):\n{handle.log_tail()}")
        with contextlib.suppress(OSError):
            if ready():
                return
        time.sleep(interval)
    raise ProcError(f"{what} not ready within {timeout:g}s (pid {handle.pid}):\n{handle.log_tail()}")


def tcp_ready(host: str, port: int) -> Callable[[], bool]:
    """A readiness check: something accepts TCP connections on host:port."""

    def check() -> bool:
        with socket.create_connection((host, port), timeout=0.5):
            return True

    return check


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class _PortPicker:
    """Hands out ports below the kernel's ephemeral range, never the same one twice.

    A port from bind-to-0 lies in the ephemeral range, where any client socket (of
    this test or of the other xdist worker) may take it between the pick and the
    emulator's own bind; CI lost a run to exactly that. Below the range only other
    explicit picks compete, and those are random and checked by a bind.
    """

    def __init__(self) -> None:
        import random

        self._rng = random.Random(os.getpid() ^ time.time_ns())
        self._given: set[tuple[int, int]] = set()

    def pick(self, kind: int, host: str) -> int:
        high = min(_ephemeral_low(), 65536) - 1
        low = 20000 if high > 24000 else 1025
        for _ in range(200):
            port = self._rng.randint(low, high)
            if (kind, port) in self._given:
                continue
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            self._given.add((kind, port))
            return port
        with socket.socket(socket.AF_INET, kind) as s:  # a crowded range: let the kernel choose
            s.bind((host, 0))
            return int(s.getsockname()[1])


_PICKER = _PortPicker()


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now, outside the ephemeral range, not handed out before."""
    return _PICKER.pick(socket.SOCK_STREAM, host)


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port free right now, outside the ephemeral range, not handed out before."""
    return _PICKER.pick(socket.SOCK_DGRAM, host)
