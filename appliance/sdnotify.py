"""systemd's notify protocol (sd_notify(3)): READY, STOPPING, STATUS and watchdog pings.

Type=notify units get ``NOTIFY_SOCKET`` (a unix datagram socket, ``@`` meaning the abstract
namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). Outside systemd
none is set and every call here does nothing. The protocol is one datagram of ``KEY=VALUE``
lines, so it is written here rather than pulled in as a dependency.

The watchdog pings come from a task on the event loop (:meth:`SystemdNotifier.watchdog`): a loop
stuck in a blocking call stops pinging and systemd restarts the service, which a thread
pinging on its own would hide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Where to send notifications and how often to ping, read once from the environment."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = ("\0" + addr[1:] if addr.startswith("@") else addr) or None
        self.watchdog_usec = 0
        pid = env.get("WATCHDOG_PID")
        if env.get("WATCHDOG_USEC", "").isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_usec = int(env["WATCHDOG_USEC"])

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram. False (and a warning) when it cannot be sent:
        a lost notification must not stop the service, systemd's own timeouts catch it."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address.lstrip("\0"), exc)
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    async def watchdog(self, stop: asyncio.Event) -> None:
        """Ping at half the watchdog interval until ``stop`` is set (sd_watchdog_enabled(3)'s advice)."""
        if self.address is None or not self.watchdog_usec:
            return
        interval = self.watchdog_usec / 2e6
        while not stop.is_set():
            self.send("WATCHDOG=1")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
