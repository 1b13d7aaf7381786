"""Engine and sessions. SQLite gets WAL, foreign keys and a busy timeout; write
transactions on SQLite start with BEGIN IMMEDIATE so two writers never deadlock
on a lock upgrade."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from appliance.statedir import private_sqlite
from appliance.store import audit, changes
from appliance.store.audit_seal import AuditSeal
from appliance.store.migrate import upgrade
from appliance.store.tables import utcnow

_IMMEDIATE = "anvil_sqlite_immediate"


def _sqlite_engine(url: str) -> Engine:
    path = make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_sqlite(Path(path))
    # Connections are pooled: opening one (and its PRAGMAs) costs more than most transactions.
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=8,
                           max_overflow=16, pool_pre_ping=False)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so BEGIN can be IMMEDIATE for writers.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_IMMEDIATE) else "BEGIN")

    return engine


# A node cut off from PostgreSQL by a silent partition (packets dropped, no reset) leaves its
# sessions open on the server, and with them the engine leader's advisory lock and any share
# lock a step commit holds on the lease row: no standby could take over until TCP gave up, after
# hours. The server probes each idle session every second after 2 s of silence and drops it
# after two unanswered probes (tcp_user_timeout: 4 s for data it cannot deliver), so a cut-off
# leader's locks go within about 4 s, about when its lease runs out. The client probes likewise
# (a node whose server vanished gets an error instead of a read that never returns), and gives
# up connecting to one host after 5 s (the next host of a multi-host URL is tried then).
_PG_CLIENT = {"keepalives": 1, "keepalives_idle": 2, "keepalives_interval": 1, "keepalives_count": 2,
              "connect_timeout": 5}
_PG_SERVER = ("-c tcp_keepalives_idle=2 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=2 "
              "-c tcp_user_timeout=4000")


def _pg_connect_args(url: str) -> dict[str, Any]:
    """Keepalive settings, unless the URL sets them itself (its own ``options`` come after ours)."""
    query = make_url(url).query
    args: dict[str, Any] = {k: v for k, v in _PG_CLIENT.items() if k not in query}
    own = query.get("options")
    args["options"] = f"{_PG_SERVER} {own if isinstance(own, str) else ' '.join(own or ())}".strip()
    return args


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=_pg_connect_args(url))


class Store:
    """The database: ``read()`` and ``write()`` give short transactions. With a ``seal`` the
    audit trail written through it is keyed and its signed head kept (appliance.store.audit_seal).
    ``clock`` dates the change records (appliance.store.changes) and what is computed from them
    (usage); tests inject one."""

    def __init__(self, engine: Engine, *, seal: AuditSeal | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.seal = seal
        self.clock: Callable[[], datetime] = clock or utcnow
        self._read = sessionmaker(engine, expire_on_commit=False)
        writer = engine.execution_options(**{_IMMEDIATE: True}) if self.is_sqlite else engine
        info: dict[str, Any] = {changes.CLOCK: self.now, changes.SUBMITTERS: changes.Submitters()}
        if seal:
            info[audit.SEAL] = seal
        self._write = sessionmaker(writer, expire_on_commit=False, info=info)
        audit.install(self._write)
        changes.install(self._write)
        # SQLite takes one writer at a time, and a writer that finds the lock taken sleeps in
        # SQLite's busy handler (1, 2, 5 … 100 ms steps) however soon it is freed: under load
        # (a hundred assigns at once beside the engine) that, not the work, set the pace.
        # Writers of this process queue here instead and go the moment the lock is free;
        # other processes (the CLI, the boot role) still meet the busy handler, rarely.
        self._writers = threading.RLock() if self.is_sqlite else None

    def now(self) -> datetime:
        """The store's time (its clock's, which a test may replace)."""
        return self.clock()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction on a Core connection, for the hottest reads (a list page, a
        token): an ORM session's setup and teardown cost as much as a page's five statements."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction, committed on success and rolled back on any error."""
        if self._writers is None:
            with self._write() as session, session.begin():
                yield session
        else:
            with self._writers, self._write() as session, session.begin():
                yield session
        audit.publish_head(session)   # committed: the audit head's file, outside the writer lock

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, *, migrate: bool = True, seal: AuditSeal | None = None,
               clock: Callable[[], datetime] | None = None) -> Store:
    """Open the store at ``url``, applying migrations first (the default)."""
    engine = make_engine(url)
    if migrate:
        upgrade(engine)
    return Store(engine, seal=seal, clock=clock)
