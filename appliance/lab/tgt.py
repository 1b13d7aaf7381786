"""Start and stop a tgtd (iSCSI target daemon) for the lab and the tests.

``start`` runs ``tgtd -f --iscsi portal=HOST:PORT -C N`` (inside ``netns`` when given)
through :mod:`appliance.lab.procs` and waits, bounded, until tgtd answers on its
control port *and* lists our portal: a tgtd that finds its control port taken exits
at once, but until it does, tgtadm would be talking to the other daemon.

Pitfalls this module absorbs (measured on tgt 1.0.85, Debian 12):

- tgtd's management socket is the file ``/var/run/tgtd/socket.N`` with a POSIX lock on
  ``socket.N.lock``: control ports are host-wide, across network namespaces, so every
  tgtd (and every parallel test worker) needs its own ``N``; :func:`free_control_port`
  finds one whose lock nobody holds.
- ``tgtd -f`` ignores SIGTERM while it has targets, and ``--op delete --mode system``
  is refused while any target exists: ``stop`` asks politely, then SIGKILLs by PID.
  The kernel drops the lock, and the next tgtd on that port starts cleanly; ``stop``
  removes the socket and lock files a killed tgtd leaves in /var/run/tgtd.
- After a restart tgtd has no targets: the storage driver's ``ensure_lun`` re-creates
  them from the backing files, which tgtd never deletes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.lab import procs

LOCK_DIR = Path("/var/run/tgtd")
MAX_CONTROL_PORT = 32767   # tgtd -C takes 0..32767 ("out of range" above)


@dataclass(frozen=True, slots=True)
class TgtdHandle:
    """A running tgtd: its process, portal and control port (and namespace, if any)."""

    proc: procs.ProcHandle
    portal_host: str
    portal_port: int
    control_port: int
    netns: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def portal(self) -> str:
        host = f"[{self.portal_host}]" if ":" in self.portal_host else self.portal_host
        return f"{host}:{self.portal_port}"

    def settings(self) -> dict[str, object]:
        """Settings for ``appliance.drivers.tgt.create`` that reach this tgtd."""
        return {"control_port": self.control_port, "netns": self.netns}


def missing_tools() -> str | None:
    """None when tgtd and tgtadm are installed, else the reason the lab cannot run them."""
    for tool in ("tgtd", "tgtadm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install tgt)"
    return None


def control_port_taken(port: int) -> bool:
    """True when a live tgtd holds control port ``port`` (its lock file is locked)."""
    lock = LOCK_DIR / f"socket.{port}.lock"
    try:
        fd = os.open(lock, os.O_WRONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _forget_control_port(port: int, wait: float = 2.0) -> None:
    """Remove a dead tgtd's socket and lock files, which SIGKILL leaves behind.

    Done while holding the lock ourselves: a tgtd starting meanwhile either fails to take
    the old lock (and exits, as it would anyway) or creates fresh files after we are done.
    The lock is tried for up to ``wait`` s: a killed tgtd with LUNs reads as a zombie (its
    main thread is gone) while its backing-store threads still exit, holding the lock.
    """
    lock = LOCK_DIR / f"socket.{port}.lock"
    try:
        fd = os.open(lock, os.O_WRONLY)
    except FileNotFoundError:
        return
    deadline = time.monotonic() + wait
    for _ in range(int(wait / 0.02) + 1):
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return   # a live tgtd holds it
            time.sleep(0.02)
    else:
        os.close(fd)
        return
    try:
        (LOCK_DIR / f"socket.{port}").unlink(missing_ok=True)
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)   # closing drops the lock


def free_control_port(low: int = 1000, high: int = MAX_CONTROL_PORT, attempts: int = 200) -> int:
    """A control port no tgtd holds right now (random, so parallel workers rarely meet)."""
    rng = random.SystemRandom()
    for _ in range(attempts):
        port = rng.randint(low, high)
        if not control_port_taken(port):
            return port
    raise procs.ProcError(f"no free tgtd control port in {low}..{high} after {attempts} tries")


def _tgtadm(control_port: int, netns: str | None, *args: str, timeout: float = 5.0) -> subprocess.CompletedProcess[str]:
    argv = ["tgtadm", "-C", str(control_port), "--lld", "iscsi", *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def start(run_dir: Path, portal_host: str, portal_port: int, control_port: int,
          netns: str | None = None, *, timeout: float = 10.0) -> TgtdHandle:
    """Start tgtd and wait until it serves ``portal_host:portal_port``; ProcError otherwise.

    Its output goes to ``run_dir/tgtd-<control_port>.log``.
    """
    reason = missing_tools()
    if reason:
        raise procs.ProcError(reason)
    if control_port_taken(control_port):
        raise procs.ProcError(f"tgtd control port {control_port} is held by another tgtd")
    host = f"[{portal_host}]" if ":" in portal_host else portal_host
    cmd = ["tgtd", "-f", "--iscsi", f"portal={host}:{portal_port}", "-C", str(control_port)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = procs.start(cmd, run_dir / f"tgtd-{control_port}.log")
    handle = TgtdHandle(proc, portal_host, portal_port, control_port, netns)
    want = f"Portal: {host}:{portal_port},"

    def ready() -> bool:
        try:
            res = _tgtadm(control_port, netns, "--op", "show", "--mode", "portal", timeout=2.0)
        except subprocess.TimeoutExpired:
            return False
        return res.returncode == 0 and want in res.stdout

    try:
        procs.wait_until(ready, proc, timeout, f"tgtd (control port {control_port}, portal {host}:{portal_port})")
    except BaseException:
        stop(handle)
        raise
    return handle


def stop(handle: TgtdHandle, timeout: float = 3.0) -> None:
    """Stop tgtd: ``--op delete --mode system`` (works only without targets), then SIGKILL by PID.

    Bounded: returns within about ``timeout + 7`` seconds. Backing files are untouched.
    """
    if handle.proc.alive():
        accepted = False
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            res = _tgtadm(handle.control_port, handle.netns, "--op", "delete", "--mode", "system", timeout=2.0)
            accepted = res.returncode == 0
        deadline = time.monotonic() + timeout
        while accepted and handle.proc.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    # SIGTERM is ignored while targets exist, so don't wait long for it.
    procs.stop(handle.proc, timeout=0.2)
    if not handle.proc.alive():
        with contextlib.suppress(OSError):
            _forget_control_port(handle.control_port)
