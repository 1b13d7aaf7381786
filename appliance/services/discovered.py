"""Machines that network-booted without being enrolled: what they posted to /boot/discover,
for an admin to enrol (it becomes a blade, its MAC a NIC) or dismiss.

Records come from an unauthenticated route, so they are bounded where they are written
(appliance.boot.http: one per MAC, updated in place; facts cut to :data:`MAX_FACTS`
keys and :data:`MAX_FACTS_BYTES`; at most :data:`MAX_RECORDS`; a rate limit per source
address), and shown to admins only: nothing in them is trusted beyond being what a
machine said about itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from appliance.domain.identities import parse_mac
from appliance.errors import Issue, NotFound, ValidationError
from appliance.services.blades import BladeInfo, BladeService, Enrollment, NicSpec
from appliance.store import Store
from appliance.store.tables import BladeNicRow, BootDiscoveryRow, utcnow

MAX_RECORDS = 1000          # machines waiting to be enrolled; a real site has a handful at once
MAX_FACTS = 32
MAX_KEY = 64
MAX_VALUE = 256
MAX_FACTS_BYTES = 4096


def bounded_facts(params: dict[str, str]) -> dict[str, str]:
    """At most :data:`MAX_FACTS` facts, each key and value cut, :data:`MAX_FACTS_BYTES` in all."""
    out: dict[str, str] = {}
    size = 2
    for key, value in list(params.items())[:MAX_FACTS * 2]:
        if key in ("mac", "uuid", "token") or len(out) >= MAX_FACTS:
            continue
        k, v = key[:MAX_KEY], value[:MAX_VALUE]
        cost = len(json.dumps({k: v})) + 1
        if size + cost > MAX_FACTS_BYTES:
            break
        out[k], size = v, size + cost
    return out


def record(session: Session, mac: str, uuid: str | None, peer: str, facts: dict[str, str], *,
           cap: int = MAX_RECORDS) -> str:
    """Store what ``mac`` posted. Returns ``recorded``, ``enrolled`` (a known NIC: nothing
    stored) or ``full`` (``cap`` other machines are waiting: nothing stored)."""
    if session.scalars(select(BladeNicRow.id).where(BladeNicRow.mac == mac)).first() is not None:
        return "enrolled"
    row = session.scalars(select(BootDiscoveryRow).where(BootDiscoveryRow.mac == mac)).first()
    if row is None:
        if (session.scalar(select(func.count()).select_from(BootDiscoveryRow)) or 0) >= cap:
            return "full"
        session.add(BootDiscoveryRow(mac=mac, uuid=uuid, peer=peer, facts=facts))
    else:
        row.uuid, row.peer, row.facts, row.updated_at = uuid, peer, facts, utcnow()
    return "recorded"


@dataclass(frozen=True, slots=True)
class Discovered:
    mac: str
    uuid: str | None
    peer: str | None
    facts: dict[str, Any]
    first_seen: datetime
    last_seen: datetime

    def public(self) -> dict[str, Any]:
        return {"mac": self.mac, "uuid": self.uuid, "peer": self.peer, "facts": self.facts,
                "firstSeen": self.first_seen.isoformat(), "lastSeen": self.last_seen.isoformat()}


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _info(row: BootDiscoveryRow) -> Discovered:
    return Discovered(row.mac, row.uuid, row.peer, dict(row.facts or {}), _aware(row.created_at),
                      _aware(row.updated_at))


def _mac(value: str) -> str:
    try:
        return parse_mac(value.strip().replace("-", ":"))
    except ValueError:
        raise ValidationError([Issue("mac", f"{value[:40]!r} is not a MAC address")]) from None


class DiscoveredService:
    def __init__(self, store: Store) -> None:
        self._store = store

    def list(self) -> list[Discovered]:
        """Newest first."""
        with self._store.read() as s:
            return [_info(r) for r in s.scalars(select(BootDiscoveryRow).order_by(BootDiscoveryRow.updated_at.desc(),
                                                                                   BootDiscoveryRow.id.desc()))]

    def get(self, mac: str) -> Discovered:
        mac = _mac(mac)
        with self._store.read() as s:
            row = s.scalars(select(BootDiscoveryRow).where(BootDiscoveryRow.mac == mac)).first()
            if row is None:
                raise NotFound("discovered machine", mac)
            return _info(row)

    def dismiss(self, mac: str) -> None:
        """Forget the record; the machine may post again when it next boots."""
        mac = _mac(mac)
        with self._store.write() as s:
            row = s.scalars(select(BootDiscoveryRow).where(BootDiscoveryRow.mac == mac)).first()
            if row is None:
                raise NotFound("discovered machine", mac)
            s.delete(row)

    def enroll(self, mac: str, blades: BladeService, req: Enrollment) -> BladeInfo:
        """Enrol the machine as blade ``req.name``: its discovered MAC becomes the first NIC
        (unless ``req`` names NICs), its facts the blade's facts; the record goes once the
        blade exists."""
        found = self.get(mac)
        nics = req.nics or (NicSpec("nic0", found.mac),)
        facts = {**{f"discovered.{k}": v for k, v in found.facts.items()}, **dict(req.facts)}
        if found.uuid:
            facts.setdefault("uuid", found.uuid)
        info = blades.enroll(Enrollment(
            name=req.name, bmc=req.bmc, username=req.username, password=req.password, driver=req.driver,
            verify_tls=req.verify_tls, cpus=req.cpus, memory_gib=req.memory_gib, chassis=req.chassis, slot=req.slot,
            nics=nics, facts=facts))
        with self._store.write() as s:
            s.execute(delete(BootDiscoveryRow).where(BootDiscoveryRow.mac == found.mac))
        return info
