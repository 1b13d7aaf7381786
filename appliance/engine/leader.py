"""One engine leader at a time.

SQLite: a lease row (``engine_leader``) renewed every second; a new process may
take over at once when the holder's PID on this host is gone (kill -9), else
when the lease expires. PostgreSQL additionally holds ``pg_try_advisory_lock``
on a dedicated connection, released by the server when the holder dies.
The lease row also tells CLI commands whether an appliance is running.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, select, text

from appliance.store import Store
from appliance.store.tables import LeaderRow

log = logging.getLogger(__name__)

LEASE_SECONDS = 5.0
_ADVISORY_KEY = 0x616E76696C  # "anvil"


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped) is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _holder_alive(row: LeaderRow) -> bool:
    if _aware(row.expires_at) <= _now():
        return False
    if row.host == socket.gethostname():
        return pid_alive(row.pid)
    return True


def leader_alive(store: Store) -> bool:
    """Whether some engine leader holds a live lease (for CLI commands that start jobs)."""
    with store.read() as s:
        row = s.scalar(select(LeaderRow).where(LeaderRow.id == 1))
    return row is not None and _holder_alive(row)


class Leadership:
    def __init__(self, store: Store, *, owner: str | None = None) -> None:
        self.store = store
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._pg_conn: Connection | None = None

    def try_acquire(self) -> bool:
        if not self.store.is_sqlite and self._pg_conn is None:
            conn = self.store.engine.connect()
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _ADVISORY_KEY}).scalar()
            conn.commit()
            if not got:
                conn.close()
                return False
            self._pg_conn = conn
        with self.store.write() as s:
            row = s.scalar(select(LeaderRow).where(LeaderRow.id == 1))
            expires = _now() + timedelta(seconds=LEASE_SECONDS)
            if row is None:
                s.add(LeaderRow(id=1, owner=self.owner, pid=os.getpid(), host=socket.gethostname(),
                                expires_at=expires))
                return True
            if row.owner != self.owner and _holder_alive(row) and self.store.is_sqlite:
                return False
            row.owner, row.pid, row.host, row.expires_at = self.owner, os.getpid(), socket.gethostname(), expires
            return True

    def renew(self) -> bool:
        """Extend the lease; False when another process has taken it."""
        with self.store.write() as s:
            row = s.scalar(select(LeaderRow).where(LeaderRow.id == 1))
            if row is None or row.owner != self.owner:
                return False
            row.expires_at = _now() + timedelta(seconds=LEASE_SECONDS)
            return True

    def release(self) -> None:
        try:
            with self.store.write() as s:
                row = s.scalar(select(LeaderRow).where(LeaderRow.id == 1))
                if row is not None and row.owner == self.owner:
                    s.delete(row)
        finally:
            if self._pg_conn is not None:
                # The connection goes back to a pool; a session-level lock would stay held on it.
                try:
                    self._pg_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _ADVISORY_KEY})
                    self._pg_conn.commit()
                finally:
                    self._pg_conn.close()
                    self._pg_conn = None
