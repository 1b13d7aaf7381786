"""One engine leader at a time, fenced.

A lease row (``engine_leader``) names the leader, until when its lease runs, and its
*epoch*: the fencing token, one more at every term (each acquisition). The leader renews
the lease every ``RENEW_EVERY`` seconds; every step commit checks, in its own
transaction, that the row still names this leader *and* this epoch (:meth:`Leadership.holds`),
so a leader that lost its lease can commit nothing once a successor has its term.

A node that lost its lease stops acting before another starts: the leader steps down
(cancels every job it drives) when it has not renewed for ``STEP_DOWN_AFTER`` seconds,
a second before its lease can have run out; a standby takes over only once the lease has
run out (the database's clock on PostgreSQL, so hosts' clocks do not matter), or at once
when the holder is a process of this host that is gone (kill -9). PostgreSQL additionally
holds ``pg_try_advisory_lock`` on a dedicated connection, so only one standby at a time
contends. The lease row also tells CLI commands whether an appliance is running.

Takeover after a leader dies: at most ``LEASE_SECONDS`` + ``STANDBY_POLL`` (4.5 s) when
the standby is on another host, about ``STANDBY_POLL`` on the same host.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, select, text, update

from appliance.store import Store
from appliance.store.tables import LeaderRow

log = logging.getLogger(__name__)

LEASE_SECONDS = 4.0      # a silent leader's lease runs out after this
RENEW_EVERY = 1.0        # the leader renews this often
STEP_DOWN_AFTER = 3.0    # a leader that could not renew for this long stops acting (< LEASE_SECONDS)
STANDBY_POLL = 0.5       # a standby tries to take over this often
LOCK_WAIT = 2.0          # s a lease statement waits for a row lock (PostgreSQL) before it gives up
_ADVISORY_KEY = 0x616E76696C  # "anvil"
_L = LeaderRow.__table__.c


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


def _holder_alive(row: Any, now: datetime | None = None) -> bool:
    if _aware(row.expires_at) <= (now or _now()):
        return False
    if row.host == socket.gethostname():
        return pid_alive(row.pid)
    return True


def _db_now(store: Store, conn: Connection) -> datetime:
    """The time leases are written and compared in: the database server's on PostgreSQL
    (one clock for every node), this host's on SQLite (one host)."""
    if store.is_sqlite:
        return _now()
    got = conn.execute(select(func.now())).scalar_one()
    return _aware(got)


def leader_alive(store: Store) -> bool:
    """Whether some engine leader holds a live lease (for CLI commands that start jobs)."""
    with store.read() as s:
        row = s.scalar(select(LeaderRow).where(LeaderRow.id == 1))
        now = _db_now(store, s.connection())
    return row is not None and _holder_alive(row, now)


class Leadership:
    """This process's claim to lead the engine: ``epoch`` is its term's fencing token (None
    while it does not lead)."""

    def __init__(self, store: Store, *, owner: str | None = None, lease: float = LEASE_SECONDS,
                 step_down_after: float = STEP_DOWN_AFTER) -> None:
        if not 0 < step_down_after < lease:
            raise ValueError(f"step_down_after ({step_down_after:g} s) must be below the lease ({lease:g} s)")
        self.store = store
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = lease
        self.step_down_after = step_down_after
        self.epoch: int | None = None
        self.valid_until = 0.0       # time.monotonic() after which this leader must stop acting
        self._pg_conn: Connection | None = None
        # Set except while a renewal runs. Every commit share-locks the lease row (holds()); with
        # eight writer threads those locks overlap without a gap, and PostgreSQL lets a new share
        # lock in ahead of the renewal's waiting UPDATE, which then starves until the term ends.
        # New fencing checks wait for the renewal instead (all share lockers are this process).
        self._no_renewal = threading.Event()
        self._no_renewal.set()

    def try_acquire(self) -> bool:
        """Start a new term when the lease is free, run out, ours, or held by a dead process
        of this host; True when this process now leads."""
        began = time.monotonic()
        if not self.store.is_sqlite and self._pg_conn is None:
            conn = self.store.engine.connect()
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _ADVISORY_KEY}).scalar()
            conn.commit()
            if not got:
                conn.close()
                return False
            self._pg_conn = conn
        with self.store.write() as s:
            conn = s.connection()
            self._bound_lock_wait(conn)
            row = conn.execute(select(LeaderRow.__table__).where(_L.id == 1).with_for_update()).first()
            now = _db_now(self.store, conn)
            expires = now + timedelta(seconds=self.lease)
            me = {"owner": self.owner, "pid": os.getpid(), "host": socket.gethostname(), "expires_at": expires}
            if row is None:
                epoch = 1
                s.add(LeaderRow(id=1, epoch=epoch, **me))
            elif row.owner != self.owner and _holder_alive(row, now):
                # Even holding the advisory lock: the holder's connection is gone, but the holder may
                # still be acting (cut off from the database) until it steps down, before its lease ends.
                return False
            else:
                epoch = int(row.epoch) + 1
                conn.execute(update(LeaderRow).where(_L.id == 1).values(epoch=epoch, **me))
        self.epoch = epoch
        self.valid_until = began + self.step_down_after
        return True

    def renew(self) -> bool:
        """Extend the lease; False when another term has begun (this one is over)."""
        if self.epoch is None:
            return False
        began = time.monotonic()
        self._no_renewal.clear()
        try:
            with self.store.write() as s:
                conn = s.connection()
                self._bound_lock_wait(conn)
                expires = _db_now(self.store, conn) + timedelta(seconds=self.lease)
                done = conn.execute(update(LeaderRow)
                                    .where(_L.id == 1, _L.owner == self.owner, _L.epoch == self.epoch)
                                    .values(expires_at=expires)).rowcount
        finally:
            self._no_renewal.set()
        if done != 1:
            self.epoch = None
            return False
        self.valid_until = began + self.step_down_after
        return True

    def holds(self, conn: Connection) -> bool:
        """The fencing check, inside the caller's transaction: this term is still the current one
        and has not outlived its step-down deadline. On PostgreSQL the row is share-locked until
        the caller commits, so a successor's takeover waits for the commit rather than racing it."""
        if not self.store.is_sqlite:
            # Not on SQLite: there the caller's transaction holds the one write lock the renewal
            # needs (no starvation either: writers take turns).
            self._no_renewal.wait(max(self.valid_until - time.monotonic(), 0.0))
        if self.epoch is None or time.monotonic() > self.valid_until:
            return False
        row = conn.execute(select(_L.owner, _L.epoch).where(_L.id == 1).with_for_update(read=True)).first()
        return row is not None and row.owner == self.owner and row.epoch == self.epoch

    def _bound_lock_wait(self, conn: Connection) -> None:
        """A lease statement never waits on a row lock for long: the lease thread must stay free
        to step down and to stand by again (acquire and close queue behind it on that one thread)."""
        if not self.store.is_sqlite:
            conn.execute(text(f"SET LOCAL lock_timeout = '{int(LOCK_WAIT * 1000)}ms'"))

    def step_down(self) -> None:
        """Stop counting this term as ours (commits are refused from now on)."""
        self.epoch = None

    def release(self) -> None:
        epoch, self.epoch = self.epoch, None
        try:
            if epoch is not None:
                with self.store.write() as s:
                    s.execute(delete(LeaderRow).where(_L.id == 1, _L.owner == self.owner,
                                                                 _L.epoch == epoch))
        finally:
            self.close()

    def close(self) -> None:
        """Give up the advisory lock (PostgreSQL), if held."""
        if self._pg_conn is not None:
            # The connection goes back to a pool; a session-level lock would stay held on it.
            try:
                self._pg_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _ADVISORY_KEY})
                self._pg_conn.commit()
            except Exception:  # a broken connection: the server has released the lock with it
                log.warning("releasing the engine leader's advisory lock failed", exc_info=True)
            finally:
                self._pg_conn.close()
                self._pg_conn = None
