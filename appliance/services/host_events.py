"""What a host pool's VM manager is told: host views, and the pool's event feed.

Every change of a host that the VM manager must hear of is appended here, inside the
transaction that makes the change (a crash never loses an event nor tells of a change that
did not happen). The event's id is the feed's resumable cursor; the webhooks' delivery
worker (appliance.engine.host_delivery) and ``GET /host-pools/{name}/events`` read from it.

An event carries the host as it was then: its stable id, its identity (UUID, MACs, IQN,
management address) from the moment it was requested, its blade and state; and the
cursor of the pool's event before it (``previous``), so a webhook receiver sees at once
whether it missed one (and reads the feed from its own cursor).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from appliance.store.tables import HostEventRow, HostPoolRow, HostRow

FEED_LIMIT = 500


def iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).isoformat()


@dataclass(frozen=True, slots=True)
class HostInfo:
    id: str
    name: str
    pool: str
    tenant: str
    state: str
    identity: dict[str, Any]
    management_address: str | None
    blade: str | None
    reason: str | None
    failover: int | None
    replaces: str | None
    replaced_by: str | None
    job: str | None
    requested_at: datetime
    ready_at: datetime | None
    released_at: datetime | None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "pool": self.pool, "tenant": self.tenant, "state": self.state,
                "uuid": self.identity.get("uuid"), "macs": list(self.identity.get("macs") or []),
                "iqn": self.identity.get("iqn"), "managementAddress": self.management_address, "blade": self.blade,
                "reason": self.reason, "failover": self.failover, "replaces": self.replaces,
                "replacedBy": self.replaced_by, "job": self.job, "requestedAt": iso(self.requested_at),
                "readyAt": iso(self.ready_at), "releasedAt": iso(self.released_at)}


def host_info(row: HostRow, pool: str) -> HostInfo:
    return HostInfo(row.id, row.name, pool, row.tenant, row.state, dict(row.identity or {}), row.management_address,
                    row.blade, row.reason, row.failover_id, row.replaces, row.replaced_by, row.job_id, row.created_at,
                    row.ready_at, row.released_at)


def append(s: Session, pool: HostPoolRow, host: HostRow, event: str, **extra: Any) -> HostEventRow:
    """Record ``event`` of ``host`` (as it is now, in this transaction) in ``pool``'s feed."""
    s.flush()    # the host's defaults (timestamps) are in place before it is copied
    # ``previous``: the pool's event before this one, so a receiver can tell it missed none.
    row = HostEventRow(pool_id=pool.id, tenant=pool.tenant, host_id=host.id, event=event,
                       data={"pool": pool.name, "previous": last_cursor(s, pool.id),
                             "host": host_info(host, pool.name).public(), **extra})
    s.add(row)
    s.flush()
    return row


def feed_item(row: HostEventRow) -> dict[str, Any]:
    """One event as the feed and the webhooks carry it; ``cursor`` resumes the feed after it."""
    return {"cursor": row.id, "event": row.event, "at": iso(row.at), "tenant": row.tenant, **(row.data or {})}


def events_after(s: Session, pool_id: int, after: int, limit: int = FEED_LIMIT) -> list[HostEventRow]:
    return list(s.scalars(select(HostEventRow).where(HostEventRow.pool_id == pool_id, HostEventRow.id > after)
                          .order_by(HostEventRow.id).limit(limit)))


def last_cursor(s: Session, pool_id: int) -> int:
    return int(s.scalar(select(func.max(HostEventRow.id)).where(HostEventRow.pool_id == pool_id)) or 0)
