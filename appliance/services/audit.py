"""Reading, verifying and exporting the audit trail (written by appliance.store.audit)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select

from appliance.domain.audit_text import actor_text, describe
from appliance.store import Store
from appliance.store.audit import hashed_fields, record
from appliance.store.audit_seal import GENESIS, Head, unkeyed_hash
from appliance.store.tables import ApiTokenRow, AuditRow, UserRow


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
    head: Head | None = None        # the signed head the trail was checked against
    keyed: int = 0                  # entries checked with the key (the others predate it)


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


def _roles(s: Any, whos: set[str]) -> dict[str, str]:
    """The current role of each user and token among ``whos`` (``user:NAME``, ``token:NAME#ID``)."""
    users = [w.partition(":")[2] for w in whos if w.startswith("user:")]
    tokens = [int(t) for w in whos if w.startswith("token:")
              for t in [w.rpartition("#")[2]] if t.isdigit() and len(t) < 16]
    out: dict[str, str] = {}
    if users:
        out.update({f"user:{n}": r for n, r in s.execute(select(UserRow.name, UserRow.role)
                                                          .where(UserRow.name.in_(users)))})
    if tokens:
        out.update({f"token:{i}": r for i, r in s.execute(select(ApiTokenRow.id, ApiTokenRow.role)
                                                           .where(ApiTokenRow.id.in_(tokens)))})
    return out


class AuditService:
    def __init__(self, store: Store) -> None:
        self._store = store

    def list(self, f: AuditFilter = AuditFilter(), *, limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]],
                                                                                                  int]:
        """Newest first; returns (entries, total matching). Each entry also has ``summary``: what
        happened as a sentence ("operator alice assigned acme/web-01 to blade rf-02, job …")."""
        with self._store.read() as s:
            total = s.scalar(_filtered(select(func.count(AuditRow.id)), f)) or 0
            rows = [public(r) for r in s.scalars(_filtered(select(AuditRow), f).order_by(AuditRow.id.desc())
                                                 .limit(limit).offset(offset))]
            roles = _roles(s, {e["who"] for e in rows})
        return [{**e, "summary": describe(e, actor_text(e["who"], roles))} for e in rows], total

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
        """Recompute the chain from the first entry and name the first one that does not match;
        with the store's seal, also check keyed entries with the key and the trail against the
        signed head (so cutting off the newest entries is caught)."""
        seal = self._store.seal
        try:
            head = seal.read_head() if seal is not None else None
        except ValueError as exc:
            return VerifyResult(False, 0, None, f"the signed head cannot be trusted: {exc}")
        prev, last, checked, keyed = GENESIS, 0, 0, 0
        head_seen = head is None or head.count == 0
        while True:
            with self._store.read() as s:
                rows = list(s.scalars(select(AuditRow).where(AuditRow.id > last).order_by(AuditRow.id).limit(batch)))
            if not rows:
                break
            for r in rows:
                bad = self._check(r, prev, keyed > 0)
                if bad is not None:
                    return VerifyResult(False, checked, r.id, bad, head, keyed)
                prev, checked = r.hash, checked + 1
                keyed += 1 if r.keyed else 0
                if head is not None and r.id == head.last_id:
                    if r.hash != head.last_hash or checked != head.count:
                        return VerifyResult(False, checked, r.id, "it does not match the signed head "
                                            f"(entry #{head.last_id}, {head.count} entries)", head, keyed)
                    head_seen = True
            last = rows[-1].id
        if not head_seen and head is not None:
            return VerifyResult(False, checked, None, f"the trail ends at entry #{last} ({checked} entries) but the "
                                f"signed head names entry #{head.last_id} ({head.count} entries): entries were cut "
                                "off", head, keyed)
        if seal is not None and head is None and keyed:
            return VerifyResult(False, checked, None, f"{keyed} entries are keyed but there is no signed head "
                                f"({seal.head_path}): it was removed, so truncation cannot be ruled out", None, keyed)
        return VerifyResult(True, checked, head=head, keyed=keyed)

    def _check(self, r: AuditRow, prev: str, after_keyed: bool) -> str | None:
        if r.prev_hash != prev:
            return "its previous-hash does not match the entry before it"
        fields = hashed_fields(r)
        if r.keyed:
            if self._store.seal is None:
                return "it is keyed and this check has no key (run it where the secrets key is)"
            if self._store.seal.entry_hash(prev, fields) != r.hash:
                return "its content does not match its keyed hash"
            return None
        if after_keyed:
            return "it is not keyed but follows keyed entries: it was written without the appliance's key"
        if unkeyed_hash(prev, fields) != r.hash:
            return "its content does not match its hash"
        return None

    def adopt(self) -> Head | None:
        """Seal a trail that has no head yet (written before the chain was keyed, or a new
        appliance): check it, then sign its current tail. Never over a keyed trail: a head
        missing there was removed, which verify must go on reporting."""
        seal = self._store.seal
        if seal is None or seal.read_head() is not None:
            return None
        res = self.verify()
        if not res.ok or res.keyed:
            return None
        with self._store.read() as s:
            tail = s.execute(select(AuditRow.id, AuditRow.hash).order_by(AuditRow.id.desc()).limit(1)).first()
        head = Head(res.checked, int(tail[0]), str(tail[1])) if tail is not None else Head(0, 0, GENESIS)
        seal.advance(head)
        return head


def record_action(store: Store, *, action: str, resource: str, name: str, tenant: str | None = None,
                  after: dict[str, Any] | None = None) -> None:
    """Audit an act on hardware (power, boot) that changes no row, as the current actor."""
    with store.write() as s:
        record(s, action=action, resource=resource, name=name, tenant=tenant, after=after)
