"""pyghmi 1.6.19 workarounds that must be applied once per process.

Shared receive loop race (seen with pyghmi 1.6.19 as client and as the lab's
``pyghmi.ipmi.bmc.Bmc`` server, 100 BMCs polled at once): pyghmi's I/O thread reads
its shared UDP sockets with ``setblocking(0)`` then ``recvfrom()``, while any other
thread sending on the same socket calls ``setblocking(1)`` first (``_io_sendto``).
When a send lands between the two, the I/O thread blocks in ``recvfrom()`` on that
one socket; every other session then waits for a wake-up that never comes (no
retransmits either) until a datagram happens to reach that socket. Observed: the
whole process stalls for seconds and every poll ends in "no answer within 10s".

The fix receives with ``MSG_DONTWAIT``, which is non-blocking whatever mode another
thread left the socket in.

Lost wake-up (same version, found by bench/monitor_poll.py): a thread waiting for its
response (``Session.awaitresponse`` → ``_io_wait(timeout, its BMC's address)``) is only
woken by a packet from that address that the I/O thread reads *after* the wait is
registered. When the response was read just before (it sits in the session's
``pktqueue``, processed only after the wait), nothing wakes the owner and it sleeps out
its retry timeout: 20 concurrent power reads took 0.6-1.0 s instead of 5 ms. The fix
does not sleep when a packet from that address is already queued for its session, and
bounds every sleep to ``POLL_WAIT`` for the narrow race left (every caller loops on its
own condition, so a shorter sleep only means one more check).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

_lock = threading.Lock()
_applied = False
POLL_WAIT = 0.05


def _recvfrom_nonblocking(mysocket: Any, size: int) -> Any:
    if hasattr(mysocket, "fd"):  # eventlet green socket, as pyghmi's own _io_sendto allows
        mysocket = mysocket.fd
    try:
        return mysocket.recvfrom(size, socket.MSG_DONTWAIT)
    except OSError:  # EAGAIN (nothing queued) and ICMP errors alike: pyghmi expects None
        return None


def _make_io_wait(original: Any, session_cls: Any) -> Any:
    def io_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
        # Only a response wait (no ``evq``): a thread queued behind another's command must not
        # spin on that command's unprocessed response.
        if myaddr is not None and evq is None:
            handlers = session_cls.bmc_handlers.get(myaddr) or {}
            if any(getattr(s, "pktqueue", None) for s in list(handlers.values())):
                return
        original(min(timeout, POLL_WAIT), myaddr, evq)

    return io_wait


def fix_io_race() -> None:
    """Replace pyghmi's ``_io_recvfrom`` with a truly non-blocking read and bound its poller's
    sleep (see the module docstring); idempotent."""
    global _applied
    with _lock:
        if _applied:
            return
        from pyghmi.ipmi.private import session

        session._io_recvfrom = _recvfrom_nonblocking
        session._io_wait = _make_io_wait(session._io_wait, session.Session)
        _applied = True
