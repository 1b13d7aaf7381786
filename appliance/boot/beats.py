"""Heartbeats from booted images' agents, checked and recorded in bulk.

An agent beats every couple of seconds; 10,000 of them would be thousands of store writes a
second if each beat were one. Here a beat is checked against the store once, then trusted
for :attr:`Beats.cache_for` seconds (a secret voided meanwhile — a newer boot, an ended
binding — is noticed within that time, and a beat for an ended binding counts for nothing
anyway), and the newest time of every secret that beat is written in one statement every
:attr:`Beats.flush_every` seconds. The monitor reads ``last_seen_at`` as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import bindparam, select, update

from appliance.boot.tokens import HEARTBEAT
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeRow, BootTokenRow, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")

_LIVE_SECRET = (select(BootTokenRow.id)
                .join(BindingRow, BindingRow.id == BootTokenRow.binding_id)
                .where(BootTokenRow.token_hash == bindparam("hash"), BootTokenRow.kind == HEARTBEAT,
                       BootTokenRow.voided_at.is_(None), BindingRow.state == "live",
                       BindingRow.generation == BootTokenRow.generation))
_SEEN = (update(BootTokenRow).where(BootTokenRow.id == bindparam("row"))
         .values(last_seen_at=bindparam("seen")))


class Beats:
    def __init__(self, store: Store, run: Callable[[Callable[[], Any]], Awaitable[Any]], *,
                 cache_for: float = 5.0, flush_every: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._run = run                 # the boot service's store thread
        self.cache_for = cache_for
        self.flush_every = flush_every
        self.clock = clock
        self._known: dict[str, tuple[int, float]] = {}     # secret hash → (row id, checked at)
        self._pending: dict[int, datetime] = {}             # row id → newest beat not yet written
        self._flusher: asyncio.Task[None] | None = None
        self.query: Any = _LIVE_SECRET

    @classmethod
    def for_rack(cls, store: Store, run: Callable[[Callable[[], Any]], Awaitable[Any]], rack: int) -> Beats:
        """Beats that count only for the blades of rack controller ``rack`` (its agents beat through it)."""
        beats = cls(store, run)
        beats.query = (_LIVE_SECRET.join(BladeRow, BladeRow.id == BindingRow.blade_id)
                       .where(BladeRow.rack_id == rack))
        return beats

    async def beat(self, secret: str) -> bool:
        """True when ``secret`` is a live heartbeat secret (the beat is then recorded soon)."""
        if not secret or len(secret) > 256:
            return False
        digest = hashlib.sha256(secret.encode()).hexdigest()
        now = self.clock()
        hit = self._known.get(digest)
        if hit is None or now - hit[1] > self.cache_for:
            row = await self._run(lambda: self._lookup(digest))
            if row is None:
                self._known.pop(digest, None)
                return False
            if len(self._known) > 100_000:
                self._known.clear()
            hit = self._known[digest] = (row, now)
        self._pending[hit[0]] = utcnow()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later(), name="heartbeats")
        return True

    def forget(self) -> None:
        """Check every secret against the store again: a callback just issued a new one and
        voided its binding's earlier secret (callbacks are rare: once per boot)."""
        self._known.clear()

    def _lookup(self, digest: str) -> int | None:
        with self.store.read() as s:
            found = s.execute(self.query, {"hash": digest}).scalar()
            return int(found) if found is not None else None

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_every)
        await self.flush()

    async def flush(self) -> None:
        """Write the pending beats now (one statement for all of them)."""
        pending, self._pending = self._pending, {}
        if pending:
            try:
                await self._run(lambda: self._write(pending))
            except Exception:  # a busy or restarting store: the next beats are written next time
                log.exception("recording %d heartbeats failed", len(pending))

    def _write(self, pending: dict[int, datetime]) -> None:
        with self.store.write() as s:
            s.connection().execute(_SEEN, [{"row": row, "seen": seen} for row, seen in pending.items()])

    async def aclose(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()

    def close_sync(self) -> None:
        """What is still pending once the loop is gone."""
        pending, self._pending = self._pending, {}
        if pending:
            self._write(pending)
