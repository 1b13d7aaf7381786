"""Reading, verifying and exporting the audit trail (written by appliance.store.audit)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select

from appliance.store import Store
from appliance.store.audit import GENESIS, entry_hash, hashed_fields, record
from appliance.store.tables import AuditRow


@dataclass(frozen=True, slots=True)
class AuditFilter:
    tenant: str | None = None      # a tenant-scoped caller: only this tenant's entries
    resource: str | None = None
    name: str | None = None
    who: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad: int | None = None
    reason: str | None = None


def public(row: AuditRow) -> dict[str, Any]:
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
    return {"id": row.id, "at": at.isoformat(), "who": row.who, "origin": row.origin, "action": row.action,
            "resource": row.resource, "name": row.name, "tenant": row.tenant, "before": row.before,
            "after": row.after, "prevHash": row.prev_hash, "hash": row.hash}


def _filtered(stmt: Select[Any], f: AuditFilter) -> Select[Any]:
    if f.tenant is not None:
        stmt = stmt.where(AuditRow.tenant == f.tenant)
    for col, val in ((AuditRow.resource, f.resource), (AuditRow.name, f.name), (AuditRow.action, f.action)):
        if val:
            stmt = stmt.where(col == val)
    if f.who:
        stmt = stmt.where(AuditRow.who.contains(f.who))
    if f.since:
        stmt = stmt.where(AuditRow.at >= f.since)
    if f.until:
        stmt = stmt.where(AuditRow.at < f.until)
    return stmt


class AuditService:
    def __init__(self, store: Store) -> None:
        self._store = store

    def list(self, f: AuditFilter = AuditFilter(), *, limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]],
                                                                                                  int]:
        """Newest first; returns (entries, total matching)."""
        with self._store.read() as s:
            total = s.scalar(_filtered(select(func.count(AuditRow.id)), f)) or 0
            rows = s.scalars(_filtered(select(AuditRow), f).order_by(AuditRow.id.desc()).limit(limit).offset(offset))
            return [public(r) for r in rows], total

    def export(self, f: AuditFilter = AuditFilter(), *, batch: int = 1000) -> Iterator[str]:
        """Every matching entry, oldest first, one JSON line each."""
        last = 0
        while True:
            with self._store.read() as s:
                rows = list(s.scalars(_filtered(select(AuditRow), f).where(AuditRow.id > last)
                                      .order_by(AuditRow.id).limit(batch)))
            if not rows:
                return
            for r in rows:
                yield json.dumps(public(r), sort_keys=True)
            last = rows[-1].id

    def verify(self, *, batch: int = 1000) -> VerifyResult:
        """Recompute the chain from the first entry; name the first one that does not match."""
        prev, last, checked = GENESIS, 0, 0
        while True:
            with self._store.read() as s:
                rows = list(s.scalars(select(AuditRow).where(AuditRow.id > last).order_by(AuditRow.id).limit(batch)))
            if not rows:
                return VerifyResult(True, checked)
            for r in rows:
                if r.prev_hash != prev:
                    return VerifyResult(False, checked, r.id, "its previous-hash does not match the entry before it")
                if entry_hash(prev, hashed_fields(r)) != r.hash:
                    return VerifyResult(False, checked, r.id, "its content does not match its hash")
                prev, checked = r.hash, checked + 1
            last = rows[-1].id


def record_action(store: Store, *, action: str, resource: str, name: str, tenant: str | None = None,
                  after: dict[str, Any] | None = None) -> None:
    """Audit an act on hardware (power, boot) that changes no row, as the current actor."""
    with store.write() as s:
        record(s, action=action, resource=resource, name=name, tenant=tenant, after=after)
