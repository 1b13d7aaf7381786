"""Delivery of host pools' events to their webhooks, by the engine leader (a leader loop).

Each webhook gets its pool's events one at a time and in order (a VM manager must hear
``host.failed`` before the ``host.ready`` that follows it): every ``interval`` the loop
looks for webhooks with events after their cursor and no back-off running, and for each
sends the next events until one is not delivered. One try per event per turn, through
appliance.monitor.webhook's sender (its signature, headers, redirect and retry rules, with
one attempt: the back-off between tries lives in the store, so it survives a restart).
The ``X-Anvil-Delivery`` id is derived from the webhook and the event, so every retry of
one delivery, before or after a restart, carries the same id and a receiver can drop
duplicates. Webhooks are served concurrently, at most :data:`CONCURRENCY` at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from appliance.monitor.webhook import Outcome, RetryPolicy, WebhookSender
from appliance.secrets import SecretBox
from appliance.services import host_webhooks
from appliance.services.host_events import events_after, feed_item
from appliance.services.host_webhooks import Due
from appliance.store import Store
from appliance.store.tables import HostEventRow, HostWebhookRow

if TYPE_CHECKING:
    from appliance.engine.runner import Engine

log = logging.getLogger(__name__)

CONCURRENCY = 16
BATCH = 100                     # events read at once for one webhook
RECORD_EVERY = 20               # delivered tries logged in one write
_NAMESPACE = uuid.UUID("6f0c1c1e-5d3b-4b8e-9b1e-6e1d2a7f0a11")   # delivery ids of host events


def delivery_id(webhook: int, event: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"host-webhook:{webhook}:event:{event}"))


class HostWebhookLoop:
    """``sender``, ``backoff`` (seconds after the nth failed try) and ``max_attempts``: tests shorten them."""

    def __init__(self, store: Store, box: SecretBox, *, interval: float = 0.1, sender: WebhookSender | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 max_attempts: int = host_webhooks.MAX_ATTEMPTS,
                 backoff: Callable[[int], float] = host_webhooks.backoff) -> None:
        self.store = store
        self.box = box
        self.interval = interval
        self.sender = sender
        self.clock = clock
        self.max_attempts = max_attempts
        self.backoff = backoff

    async def run(self, engine: Engine, stop: asyncio.Event) -> None:
        own = self.sender is None
        sender = self.sender or WebhookSender(retry=RetryPolicy(attempts=1, attempt_timeout=5.0, deadline=6.0))
        gate = asyncio.Semaphore(CONCURRENCY)
        try:
            while not stop.is_set():
                try:
                    due = await engine.read(self._due)
                    if due:
                        async with asyncio.TaskGroup() as tg:
                            for d in due:
                                tg.create_task(self._serve(engine, sender, gate, d))
                except asyncio.CancelledError:
                    raise
                except Exception:   # a bad turn must not stop the engine: logged, the next turn retries
                    log.exception("host webhooks: delivery turn failed")
                try:
                    async with asyncio.timeout(self.interval):
                        await stop.wait()
                except TimeoutError:
                    pass
        finally:
            if own:
                await sender.aclose()

    def _due(self) -> list[Due]:
        with self.store.read() as s:
            return host_webhooks.due(s, self.box, self.clock())

    def _events(self, d: Due) -> list[HostEventRow]:
        with self.store.read() as s:
            pool = s.scalar(select(HostWebhookRow.pool_id).where(HostWebhookRow.id == d.webhook))
            return events_after(s, pool, d.cursor, BATCH) if pool is not None else []

    async def _serve(self, engine: Engine, sender: WebhookSender, gate: asyncio.Semaphore, d: Due) -> None:
        # The tries of a run are recorded together (one write per RECORD_EVERY events or the
        # first failure): a write per event queued each send behind the engine's other writers,
        # and a burst of 100 events took seconds. A crash before the write sends the run again
        # with the same delivery ids, which receivers drop (as for any retry).
        async with gate:
            run: list[tuple[HostEventRow, Outcome]] = []
            for ev in await engine.read(lambda: self._events(d)):
                got = await sender.send(d.url, d.secret, ev.event, feed_item(ev),
                                        delivery=delivery_id(d.webhook, ev.id))
                run.append((ev, got))
                if not got.delivered or len(run) >= RECORD_EVERY:
                    if not await engine.call(self._record, d.webhook, run):
                        return    # not delivered (backing off), or the webhook is gone
                    run = []
            if run:
                await engine.call(self._record, d.webhook, run)

    def _record(self, webhook: int, run: list[tuple[HostEventRow, Outcome]]) -> bool:
        """Log a run of tries in order; False as soon as one was not delivered (or the webhook is gone)."""
        with self.store.write() as s:
            for ev, got in run:
                if not host_webhooks.record(s, webhook, event_id=ev.id, event=ev.event, delivery=got.delivery,
                                            ok=got.delivered, status=got.status, error=got.error,
                                            elapsed=got.elapsed, now=self.clock(), max_attempts=self.max_attempts,
                                            wait=self.backoff):
                    return False
            return True
