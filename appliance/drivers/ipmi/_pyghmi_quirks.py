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
"""

from __future__ import annotations

import socket
import threading
from typing import Any

_lock = threading.Lock()
_applied = False


def _recvfrom_nonblocking(mysocket: Any, size: int) -> Any:
    if hasattr(mysocket, "fd"):  # eventlet green socket, as pyghmi's own _io_sendto allows
        mysocket = mysocket.fd
    try:
        return mysocket.recvfrom(size, socket.MSG_DONTWAIT)
    except OSError:  # EAGAIN (nothing queued) and ICMP errors alike: pyghmi expects None
        return None


def fix_io_race() -> None:
    """Replace pyghmi's ``_io_recvfrom`` with a truly non-blocking read; idempotent."""
    global _applied
    with _lock:
        if _applied:
            return
        from pyghmi.ipmi.private import session

        session._io_recvfrom = _recvfrom_nonblocking
        _applied = True
