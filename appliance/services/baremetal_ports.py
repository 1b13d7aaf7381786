"""Blade NICs as the Bare Metal API's ports.

A NIC is known by its burned-in MAC (appliance.services.blades), so a port's UUID is made from
its node's UUID and that MAC: the MAC sits in the last 48 bits, where a version-1 UUID keeps
its node address, and the first 80 bits come from a hash of the node's UUID. A port keeps its
UUID for as long as that NIC belongs to that blade (inspection rewrites NIC rows, never MACs),
and a UUID is resolved by its MAC in one indexed read, then checked whole.
"""

from __future__ import annotations

import hashlib
import logging
import uuid as _uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from appliance.domain.identities import parse_mac
from appliance.errors import Conflict, Issue, NotFound, ValidationError
from appliance.services import scope as lookup
from appliance.services.baremetal import aware
from appliance.services.scope import Scope
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeNicRow, BladeRow, SwitchRow

log = logging.getLogger(__name__)


def port_uuid(node_uuid: str, mac: str) -> str:
    """The port UUID of the NIC ``mac`` of node ``node_uuid`` (see the module docstring)."""
    head = hashlib.sha256(node_uuid.encode()).digest()[:10]
    raw = head + int(mac.replace(":", ""), 16).to_bytes(8, "big")[2:]
    # Version 1 and the RFC 4122 variant, so that it reads as a UUID whose node field is the MAC.
    b = bytearray(raw)
    b[6] = (b[6] & 0x0F) | 0x10
    b[8] = (b[8] & 0x3F) | 0x80
    return str(_uuid.UUID(bytes=bytes(b)))


def mac_of(port: str) -> str | None:
    """The MAC a port UUID carries, or None for text that is not such a UUID."""
    try:
        u = _uuid.UUID(port)
    except ValueError:
        return None
    if u.version != 1:
        return None
    return ":".join(f"{(u.node >> s) & 0xFF:02x}" for s in range(40, -8, -8))


@dataclass(frozen=True, slots=True)
class PortRecord:
    uuid: str
    mac: str
    node_uuid: str
    node: str
    nic: str
    position: int
    switch: str | None
    port: str | None
    created_at: datetime


def _record(nic: BladeNicRow, blade: BladeRow, switch: str | None) -> PortRecord:
    return PortRecord(port_uuid(blade.uuid, nic.mac), nic.mac, blade.uuid, blade.name, nic.name, nic.position,
                      switch, nic.port, aware(blade.created_at) or datetime.now())


def _row(s: Session, scope: Scope, port: str) -> tuple[BladeNicRow, BladeRow]:
    mac = mac_of(port)
    if mac is None:
        raise NotFound("port", port)
    try:
        nic, blade = lookup.nic_row(s, scope, mac)
    except NotFound:
        raise NotFound("port", port) from None
    if port_uuid(blade.uuid, nic.mac) != port.lower():
        raise NotFound("port", port)
    return nic, blade


class PortService:
    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, scope: Scope, port: str) -> PortRecord:
        with self._store.read() as s:
            nic, blade = _row(s, scope, port)
            switch = s.scalar(select(SwitchRow.name).where(SwitchRow.id == nic.switch_id)) if nic.switch_id else None
            return _record(nic, blade, switch)

    def list(self, scope: Scope, *, node: str | None = None, address: str | None = None, limit: int = 1000,
             marker: str | None = None) -> tuple[list[PortRecord], bool]:
        """Ports in sight, by node (enrolment order) then NIC position; after the port ``marker``."""
        with self._store.read() as s:
            stmt = (select(BladeNicRow, BladeRow, SwitchRow.name).join(BladeRow, BladeRow.id == BladeNicRow.blade_id)
                    .outerjoin(SwitchRow, SwitchRow.id == BladeNicRow.switch_id))
            stmt = lookup.blades_in_sight(stmt, scope)
            if node is not None:
                stmt = stmt.where(BladeRow.id == lookup.blade_row_by_ident(s, scope, node).id)
            if address is not None:
                stmt = stmt.where(BladeNicRow.mac == address.lower())
            if marker is not None:
                m_nic, m_blade = _row(s, scope, marker)
                stmt = stmt.where((BladeRow.id > m_blade.id) | ((BladeRow.id == m_blade.id)
                                                                & (BladeNicRow.position > m_nic.position)))
            rows = s.execute(stmt.order_by(BladeRow.id, BladeNicRow.position).limit(limit + 1)).all()
            return [_record(n, b, sw) for n, b, sw in rows[:limit]], len(rows) > limit

    def add(self, scope: Scope, node: str, mac: str, *, switch: str | None = None, port: str | None = None
            ) -> PortRecord:
        """Add a NIC with burned-in MAC ``mac`` to the blade ``node`` (named ``ethN``, N its
        position), cabled to ``switch`` ``port`` when given. Conflict for a MAC or port in use."""
        issues: list[Issue] = []
        try:
            mac = parse_mac(mac)
        except ValueError as exc:
            issues.append(Issue("address", str(exc)))
        if (switch is None) != (port is None):
            issues.append(Issue("local_link_connection", "cabling needs both switch_info (an enrolled switch) "
                                                         "and port_id"))
        if port is not None and not 0 < len(port) <= 63:
            issues.append(Issue("local_link_connection.port_id", "must be 1..63 characters"))
        if issues:
            raise ValidationError(issues)
        with self._store.write() as s:
            blade = lookup.blade_row_by_ident(s, scope, node)
            switch_id = None
            if switch is not None:
                switch_id = s.scalar(select(SwitchRow.id).where(SwitchRow.name == switch))
                if switch_id is None:
                    raise ValidationError([Issue("local_link_connection.switch_info",
                                                 f"switch {switch!r} is not enrolled")])
            taken = s.execute(select(BladeRow.name).join(BladeNicRow, BladeNicRow.blade_id == BladeRow.id)
                              .where(BladeNicRow.mac == mac)).scalar()
            if taken is not None:
                raise Conflict(f"MAC {mac} is already a NIC of blade {taken!r}" if scope.sees(None)
                               else f"MAC {mac} is already in use")
            last = s.scalar(select(func.max(BladeNicRow.position)).where(BladeNicRow.blade_id == blade.id))
            position = 0 if last is None else last + 1
            names = set(s.scalars(select(BladeNicRow.name).where(BladeNicRow.blade_id == blade.id)))
            name = next(f"eth{k}" for k in range(position, position + len(names) + 1) if f"eth{k}" not in names)
            nic = BladeNicRow(blade_id=blade.id, position=position, name=name, mac=mac, switch_id=switch_id, port=port)
            s.add(nic)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"MAC {mac}, or port {port} of switch {switch}, is already in use" if switch
                               else f"MAC {mac} is already in use") from None
            log.info("bare metal API: NIC %s (%s) added to blade %s", name, mac, blade.name,
                     extra={"blade": blade.name})
            return _record(nic, blade, switch)

    def delete(self, scope: Scope, port: str) -> None:
        """Remove the NIC; Conflict while its blade runs a profile (NIC i carries profile NIC i)."""
        with self._store.write() as s:
            nic, blade = _row(s, scope, port)
            if s.scalar(select(BindingRow.id).where(BindingRow.blade_id == blade.id, BindingRow.state == "live")):
                raise Conflict(f"blade {blade.name!r} runs a profile; release it before removing a NIC")
            s.delete(nic)
