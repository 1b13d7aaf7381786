"""Switch inventory: enrol, list, show, delete, and the cabling of blade NICs to switch ports.

A switch's password (SNMP v2c community or v3 auth key) and privacy key are
encrypted with the appliance key like BMC passwords; they are never logged or
returned, and :meth:`SwitchService.switch_ref` is the one place that decrypts them,
for a driver call. Cabling lives on ``blade_nics`` (switch, port), unique per port in
the database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from appliance.domain.names import NAME_RE
from appliance.domain.suggest import close_names, did_you_mean
from appliance.drivers.errors import BadSettings
from appliance.drivers.protocols import Secret, SwitchRef
from appliance.drivers.registry import switch_driver_for_address
from appliance.errors import Conflict, Issue, NotFound, ValidationError
from appliance.secrets import SecretBox
from appliance.services import scope as lookup
from appliance.services.scope import Scope
from appliance.store import Store
from appliance.store.tables import BladeNicRow, BladeRow, SwitchRow

log = logging.getLogger(__name__)

_NAME = NAME_RE


@dataclass(frozen=True, slots=True)
class Cable:
    """One blade NIC cabled to a port of this switch."""

    port: str
    blade: str
    nic: str
    mac: str


@dataclass(frozen=True, slots=True)
class SwitchInfo:
    name: str
    driver: str
    address: str
    username: str
    has_password: bool
    has_privacy: bool
    cables: tuple[Cable, ...]
    created_at: datetime

    def public(self) -> dict[str, Any]:
        """Plain data for output; secrets show as ``***`` when set, never themselves."""
        return {
            "name": self.name, "driver": self.driver, "address": self.address, "username": self.username,
            "password": "***" if self.has_password else None, "privacy": "***" if self.has_privacy else None,
            "cabled": len(self.cables),
            "cables": [{"port": c.port, "blade": c.blade, "nic": c.nic, "mac": c.mac} for c in self.cables],
            "createdAt": self.created_at.isoformat(),
        }


def _port_key(port: str) -> tuple[int, str]:
    return (int(port), "") if port.isdigit() else (1 << 30, port)


def _info(session: Session, row: SwitchRow) -> SwitchInfo:
    rows = session.execute(
        select(BladeNicRow.port, BladeRow.name, BladeNicRow.name, BladeNicRow.mac)
        .join(BladeRow, BladeRow.id == BladeNicRow.blade_id)
        .where(BladeNicRow.switch_id == row.id)
    ).all()
    cables = sorted((Cable(r[0] or "", r[1], r[2], r[3]) for r in rows), key=lambda c: _port_key(c.port))
    return SwitchInfo(name=row.name, driver=row.driver, address=row.address, username=row.username,
                      has_password=bool(row.password_enc), has_privacy=bool(row.privacy_enc),
                      cables=tuple(cables), created_at=row.created_at)


def _check_address(address: str, driver: str | None) -> tuple[str, list[Issue]]:
    try:
        by_scheme = switch_driver_for_address(address)
    except BadSettings as exc:
        return driver or "", [Issue("address", exc.reason)]
    parts = urlsplit(address)
    issues: list[Issue] = []
    if parts.scheme == "snmp":
        if not parts.hostname:
            issues.append(Issue("address", f'"{address}" has no host'))
        try:
            _ = parts.port
        except ValueError:
            issues.append(Issue("address", f'"{address}" has an invalid port'))
        if parts.username or parts.password:
            issues.append(Issue("address", "credentials do not belong in the address; use --username and "
                                           "--password-stdin"))
    elif parts.scheme == "ovs" and "bridge=" not in parts.query:
        issues.append(Issue("address", f'"{address}" needs ?bridge=NAME'))
    return driver or by_scheme, issues


class SwitchService:
    def __init__(self, store: Store, box: SecretBox) -> None:
        self._store = store
        self._box = box

    def enroll(self, name: str, address: str, *, username: str = "", password: Secret | None = None,
               privacy: Secret | None = None, driver: str | None = None) -> SwitchInfo:
        """Enrol a switch; the driver defaults to the one for the address scheme."""
        issues: list[Issue] = []
        if not _NAME.match(name):
            issues.append(Issue("name", f"{name!r} is not a lowercase name (a-z, 0-9, '-')"))
        drv, more = _check_address(address, driver)
        issues += more
        if issues:
            raise ValidationError(issues, source=f"switch {name}")
        pw = password.reveal() if password is not None else ""
        priv = privacy.reveal() if privacy is not None else ""
        with self._store.write() as s:
            if s.scalar(select(SwitchRow.id).where(SwitchRow.name == name)) is not None:
                raise Conflict(f"switch {name!r} is already enrolled")
            row = SwitchRow(name=name, driver=drv, address=address, username=username,
                            password_enc=self._box.encrypt(Secret(pw)) if pw else None,
                            privacy_enc=self._box.encrypt(Secret(priv)) if priv else None)
            s.add(row)
            s.flush()
            log.info("enrolled switch %s (%s)", name, drv)
            return _info(s, row)

    def get(self, name: str) -> SwitchInfo:
        with self._store.read() as s:
            return _info(s, self._row(s, name))

    def list(self) -> list[SwitchInfo]:
        with self._store.read() as s:
            return [_info(s, r) for r in s.scalars(select(SwitchRow).order_by(SwitchRow.name))]

    def delete(self, name: str) -> None:
        """Remove a switch; refused while any blade NIC is cabled to it."""
        with self._store.write() as s:
            row = self._row(s, name)
            info = _info(s, row)
            if info.cables:
                first = ", ".join(f"{c.blade}/{c.nic}" for c in info.cables[:3])
                more = f" and {len(info.cables) - 3} more" if len(info.cables) > 3 else ""
                raise Conflict(f"switch {name!r} is cabled to {first}{more}; re-cable or delete those blades first")
            s.delete(row)

    def cable(self, blade: str, nic: str, switch: str, port: str) -> SwitchInfo:
        """Record that ``blade``'s NIC ``nic`` (name or MAC) is cabled to ``switch`` ``port``.

        Re-cabling a NIC moves it; a port already holding another NIC is a Conflict.
        """
        if not port or len(port) > 63:
            raise ValidationError([Issue("port", "must be 1..63 characters")], source=f"switch {switch}")
        with self._store.write() as s:
            sw = self._row(s, switch)
            blade_id = s.scalar(select(BladeRow.id).where(BladeRow.name == blade))
            if blade_id is None:
                raise NotFound("blade", blade, hint=lookup.blade_hint(s, Scope.appliance(), blade))
            nics = list(s.scalars(select(BladeNicRow).where(BladeNicRow.blade_id == blade_id)))
            row = next((n for n in nics if n.name == nic), None) or next(
                (n for n in nics if n.mac == nic.lower()), None)
            if row is None:
                raise NotFound("NIC", f"{blade}/{nic}")
            held = s.execute(
                select(BladeRow.name, BladeNicRow.name, BladeNicRow.id)
                .join(BladeRow, BladeRow.id == BladeNicRow.blade_id)
                .where(BladeNicRow.switch_id == sw.id, BladeNicRow.port == port)
            ).first()
            if held is not None and held[2] != row.id:
                raise Conflict(f"port {port} of switch {switch!r} is already cabled to {held[0]}/{held[1]}")
            row.switch_id, row.port = sw.id, port
            try:
                s.flush()
            except IntegrityError:  # a concurrent cable to the same port won the race
                raise Conflict(f"port {port} of switch {switch!r} is already cabled") from None
            log.info("cabled %s/%s to %s port %s", blade, nic, switch, port, extra={"blade": blade})
            return _info(s, sw)

    def driver_and_ref(self, name: str) -> tuple[str, SwitchRef]:
        """The switch's driver name and how to reach it, secrets decrypted, in one read."""
        with self._store.read() as s:
            row = self._row(s, name)
            return row.driver, SwitchRef(
                name=row.name, address=row.address, username=row.username,
                password=self._box.decrypt(row.password_enc) if row.password_enc else Secret(""),
                privacy=self._box.decrypt(row.privacy_enc) if row.privacy_enc else Secret(""),
            )

    def switch_ref(self, name: str) -> SwitchRef:
        """How to reach switch ``name``, with its password and privacy key decrypted."""
        return self.driver_and_ref(name)[1]

    @staticmethod
    def _row(session: Session, name: str) -> SwitchRow:
        row = session.scalar(select(SwitchRow).where(SwitchRow.name == name))
        if row is None:
            raise NotFound("switch", name, hint=did_you_mean(close_names(
                name, session.scalars(select(SwitchRow.name)))))
        return row
