"""Failover events out: the domain's signed webhook, sent beside the work, never in its way.

A failover must not wait for a slow receiver, so each event is sent by a background task
(bounded by the sender's own deadline). :meth:`Notifier.close` waits for the ones still
in flight, so a clean shutdown loses none; a crash may lose an event in flight, which the
failover's timeline in the store still records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from appliance.monitor.webhook import WebhookSender
from appliance.secrets import SecretBox
from appliance.services.failover import FailoverService
from appliance.store import Store

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, store: Store, box: SecretBox, sender: WebhookSender | None = None) -> None:
        self._service = FailoverService(store, box)
        self._sender = sender
        self._own_sender = sender is None
        self._tasks: set[asyncio.Task[None]] = set()

    def notify(self, domain: str, event: str, data: Mapping[str, Any]) -> None:
        """Send ``event`` to ``domain``'s webhook, if it has one, in the background."""
        task = asyncio.get_running_loop().create_task(self._send(domain, event, dict(data)),
                                                      name=f"webhook-{event}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, domain: str, event: str, data: dict[str, Any]) -> None:
        try:
            target = await asyncio.to_thread(self._service.webhook_target, domain)
        except Exception as exc:  # a deleted domain, a store hiccup: the timeline still has it
            log.warning("webhook %s for domain %s not sent: %s", event, domain, exc)
            return
        if target is None:
            return
        if self._sender is None:
            self._sender = WebhookSender()
        outcome = await self._sender.send(target.url, target.secret, event, {"domain": domain, **data})
        if not outcome.delivered:
            log.warning("webhook %s for domain %s not delivered after %d attempts: %s", event, domain,
                        outcome.attempts, outcome.error)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._sender is not None and self._own_sender:
            await self._sender.aclose()
            self._sender = None
