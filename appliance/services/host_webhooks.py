"""A host pool's webhooks: where its events are POSTed, signed, and the delivery log of each.

A webhook receives the pool's events in order, from the cursor it was created at (the
pool's newest event, unless ``after`` names an older one to replay from): the delivery
worker (appliance.engine.host_delivery) sends the event after ``cursor``, moves the cursor
when it is delivered, and after a failure tries the same event again with a growing
back-off (:data:`BACKOFF`) up to :data:`MAX_ATTEMPTS` times before giving it up and going
on (the feed, ``GET /host-pools/{name}/events``, still has it). Every try is logged.

The secret is encrypted with the appliance key before it reaches the store and is never
returned; the bodies are signed as the failover domains' webhooks are
(appliance.monitor.webhook: HMAC-SHA256 of timestamp and body in ``X-Anvil-Signature``).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from appliance.domain.failover import MAX_WEBHOOK_SECRET, MIN_WEBHOOK_SECRET, webhook_url_problem
from appliance.drivers.protocols import Secret
from appliance.errors import Issue, NotFound, ValidationError
from appliance.secrets import SecretBox
from appliance.services import scope as lookup
from appliance.services.host_events import iso, last_cursor
from appliance.services.scope import Scope
from appliance.store import Store
from appliance.store.tables import HostDeliveryRow, HostEventRow, HostPoolRow, HostWebhookRow

APPLIANCE = Scope.appliance()
MAX_ATTEMPTS = 12              # tries of one event before it is given up (the feed still has it)
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 120.0, 300.0)   # seconds after the nth failure
LOG_KEPT = 500                 # delivery log entries kept per webhook
MAX_WEBHOOKS = 10              # per pool


def backoff(failures: int) -> float:
    return BACKOFF[min(failures, len(BACKOFF)) - 1] if failures > 0 else 0.0


@dataclass(frozen=True, slots=True)
class WebhookInfo:
    id: int
    pool: str
    url: str
    cursor: int
    failures: int
    next_attempt_at: datetime | None
    delivered: int
    given_up: int
    created_at: datetime

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "pool": self.pool, "url": self.url, "secret": "***", "cursor": self.cursor,
                "failures": self.failures, "nextAttemptAt": iso(self.next_attempt_at), "delivered": self.delivered,
                "givenUp": self.given_up, "createdAt": iso(self.created_at)}


def _info(row: HostWebhookRow, pool: str) -> WebhookInfo:
    return WebhookInfo(row.id, pool, row.url, row.cursor, row.failures, row.next_attempt_at, row.delivered,
                       row.given_up, row.created_at)


def delivery_view(row: HostDeliveryRow) -> dict[str, Any]:
    return {"id": row.id, "event": row.event, "cursor": row.event_id, "delivery": row.delivery,
            "attempt": row.attempt, "ok": row.ok, "status": row.status, "error": row.error,
            "elapsedMs": row.elapsed_ms, "at": iso(row.at)}


def _webhook(s: Session, pool: HostPoolRow, webhook_id: int) -> HostWebhookRow:
    row = s.get(HostWebhookRow, webhook_id)
    if row is None or row.pool_id != pool.id:
        raise NotFound("webhook", f"#{webhook_id}", hint=f"host pool {pool.name} has no such webhook")
    return row


class HostWebhookService:
    def __init__(self, store: Store, box: SecretBox | None = None) -> None:
        self._store = store
        self._box = box

    def add(self, pool: str, url: str, secret: Secret, *, after: int | None = None, tenant: str | None = None,
            scope: Scope = APPLIANCE) -> WebhookInfo:
        """Send ``pool``'s events to ``url`` from now on (or after cursor ``after``, to replay)."""
        issues = []
        problem = webhook_url_problem(url)
        if problem:
            issues.append(Issue("url", problem))
        raw = secret.reveal()
        if not MIN_WEBHOOK_SECRET <= len(raw) <= MAX_WEBHOOK_SECRET:
            issues.append(Issue("secret", f"must be {MIN_WEBHOOK_SECRET}-{MAX_WEBHOOK_SECRET} characters"))
        elif any(c.isspace() or ord(c) < 0x20 for c in raw):
            issues.append(Issue("secret", "must not contain whitespace or control characters"))
        if after is not None and after < 0:
            issues.append(Issue("after", f"{after} is not a cursor"))
        if issues:
            raise ValidationError(issues)
        assert self._box is not None, "adding a webhook needs the secrets key"
        encrypted = self._box.encrypt(secret)
        with self._store.write() as s:
            prow = lookup.host_pool_row(s, scope, pool, tenant=tenant, lock=True)
            count = s.scalar(select(func.count()).select_from(HostWebhookRow).where(HostWebhookRow.pool_id == prow.id))
            if (count or 0) >= MAX_WEBHOOKS:
                raise ValidationError([Issue("url", f"host pool {prow.name} already has {MAX_WEBHOOKS} webhooks")])
            newest = last_cursor(s, prow.id)
            row = HostWebhookRow(pool_id=prow.id, tenant=prow.tenant, url=url, secret_enc=encrypted,
                                 cursor=newest if after is None else min(after, newest), failures=0, delivered=0,
                                 given_up=0)
            s.add(row)
            s.flush()
            return _info(row, prow.name)

    def list(self, pool: str, *, tenant: str | None = None, scope: Scope = APPLIANCE) -> list[WebhookInfo]:
        with self._store.read() as s:
            prow = lookup.host_pool_row(s, scope, pool, tenant=tenant)
            rows = s.scalars(select(HostWebhookRow).where(HostWebhookRow.pool_id == prow.id)
                             .order_by(HostWebhookRow.id))
            return [_info(r, prow.name) for r in rows]

    def remove(self, pool: str, webhook_id: int, *, tenant: str | None = None, scope: Scope = APPLIANCE) -> None:
        with self._store.write() as s:
            prow = lookup.host_pool_row(s, scope, pool, tenant=tenant)
            s.delete(_webhook(s, prow, webhook_id))

    def deliveries(self, pool: str, webhook_id: int, *, limit: int = 100, tenant: str | None = None,
                   scope: Scope = APPLIANCE) -> builtins.list[dict[str, Any]]:
        """The webhook's delivery log, newest first."""
        with self._store.read() as s:
            prow = lookup.host_pool_row(s, scope, pool, tenant=tenant)
            hook = _webhook(s, prow, webhook_id)
            rows = s.scalars(select(HostDeliveryRow).where(HostDeliveryRow.webhook_id == hook.id)
                             .order_by(HostDeliveryRow.id.desc()).limit(limit))
            return [delivery_view(r) for r in rows]


# -- for the delivery worker (engine process) -------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Due:
    webhook: int
    url: str
    secret: Secret
    cursor: int
    failures: int


def due(s: Session, box: SecretBox, now: datetime) -> list[Due]:
    """Webhooks with an event after their cursor and no back-off running."""
    newest_event = (select(func.max(HostEventRow.id)).where(HostEventRow.pool_id == HostWebhookRow.pool_id)
                    .correlate(HostWebhookRow).scalar_subquery())
    rows = s.scalars(select(HostWebhookRow).where(
        HostWebhookRow.cursor < func.coalesce(newest_event, 0),
        (HostWebhookRow.next_attempt_at.is_(None)) | (HostWebhookRow.next_attempt_at <= now)))
    return [Due(r.id, r.url, box.decrypt(r.secret_enc), r.cursor, r.failures) for r in rows]


def record(s: Session, webhook_id: int, *, event_id: int, event: str, delivery: str, ok: bool, status: int | None,
           error: str | None, elapsed: float, now: datetime, max_attempts: int = MAX_ATTEMPTS,
           wait: Callable[[int], float] = backoff) -> bool:
    """Log one try and move the webhook on: the cursor past a delivered (or given-up) event,
    else a back-off. False when the webhook is gone or its cursor moved meanwhile (stop)."""
    row = s.get(HostWebhookRow, webhook_id, with_for_update=True)
    if row is None or row.cursor >= event_id:
        return False
    s.add(HostDeliveryRow(webhook_id=row.id, event_id=event_id, event=event, delivery=delivery,
                          attempt=row.failures + 1, ok=ok, status=status, error=(error or None) and error[:300],
                          elapsed_ms=int(elapsed * 1000), at=now))
    if ok:
        row.cursor, row.failures, row.next_attempt_at = event_id, 0, None
        row.delivered += 1
    else:
        row.failures += 1
        if row.failures >= max_attempts:
            row.cursor, row.failures, row.next_attempt_at = event_id, 0, None
            row.given_up += 1
        else:
            row.next_attempt_at = now + timedelta(seconds=wait(row.failures))
    s.flush()
    oldest_kept = s.scalar(select(HostDeliveryRow.id).where(HostDeliveryRow.webhook_id == row.id)
                           .order_by(HostDeliveryRow.id.desc()).offset(LOG_KEPT).limit(1))
    if oldest_kept is not None:
        s.execute(delete(HostDeliveryRow).where(HostDeliveryRow.webhook_id == row.id,
                                                HostDeliveryRow.id <= oldest_kept))
    return ok
