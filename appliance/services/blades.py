"""Blade inventory: enrol, list, show, delete, and facts found by inspection.

The BMC password is encrypted with the appliance key before it reaches the
store and is never logged or returned; :meth:`BladeService.bmc` is the one
place that decrypts it, for a driver call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from appliance.domain.identities import parse_mac, parse_uuid, parse_wwn
from appliance.domain.names import NAME_RE
from appliance.drivers.protocols import BladeFacts, Bmc, Secret
from appliance.errors import Conflict, Issue, NotFound, ValidationError
from appliance.secrets import SecretBox
from appliance.services import scope as lookup
from appliance.services.scope import Scope
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeNicRow, BladeRow, SwitchRow

log = logging.getLogger(__name__)

_NAME = NAME_RE
SCHEME_DRIVERS = {"redfish+https": "redfish", "redfish+http": "redfish", "ipmi": "ipmi", "fake": "fake"}


@dataclass(frozen=True, slots=True)
class NicSpec:
    name: str
    mac: str
    switch: str | None = None
    port: str | None = None


@dataclass(frozen=True, slots=True)
class Enrollment:
    name: str
    bmc: str
    username: str
    password: Secret
    driver: str | None = None
    verify_tls: bool = True
    cpus: int | None = None
    memory_gib: int | None = None
    chassis: str | None = None
    slot: int | None = None
    nics: tuple[NicSpec, ...] = ()
    facts: dict[str, Any] = field(default_factory=dict)
    uuid: str | None = None                  # chosen by the client (else a random one)
    maintenance_reason: str | None = None    # enrolled in maintenance, held out of placement


@dataclass(frozen=True, slots=True)
class BladeInfo:
    name: str
    state: str
    bmc: str
    driver: str
    username: str
    chassis: str | None
    slot: int | None
    cpus: int | None
    memory_gib: int | None
    nics: tuple[NicSpec, ...]
    facts: dict[str, Any]
    created_at: datetime

    def public(self) -> dict[str, Any]:
        """Plain data for output; the password is never part of it."""
        return {
            "name": self.name, "state": self.state, "bmc": self.bmc, "driver": self.driver,
            "username": self.username, "password": "***", "chassis": self.chassis, "slot": self.slot,
            "cpus": self.cpus, "memoryGiB": self.memory_gib,
            "nics": [{"name": n.name, "mac": n.mac, "switch": n.switch, "port": n.port} for n in self.nics],
            "facts": self.facts, "createdAt": self.created_at.isoformat(),
        }


def check_bmc_url(url: str) -> str:
    """The driver name for a BMC URL; raises ValueError with the reason."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEME_DRIVERS:
        raise ValueError(f'"{url}" has an unknown scheme (redfish+https://, redfish+http://, ipmi://)')
    if parts.scheme != "fake":
        if not parts.hostname:
            raise ValueError(f'"{url}" has no host')
        try:
            _ = parts.port  # parsing it is the check
        except ValueError:
            raise ValueError(f'"{url}" has an invalid port') from None
    if parts.scheme.startswith("redfish") and not parts.path.startswith("/redfish/v1/Systems/"):
        raise ValueError(f'"{url}" must name a system: …/redfish/v1/Systems/ID')
    if parts.username or parts.password:
        raise ValueError("credentials do not belong in the BMC URL; use --username and --password-stdin")
    return SCHEME_DRIVERS[parts.scheme]


def _validate(req: Enrollment) -> tuple[str, list[NicSpec], list[Issue]]:
    issues: list[Issue] = []
    if not _NAME.match(req.name):
        issues.append(Issue("name", f"{req.name!r} is not a lowercase name (a-z, 0-9, '-')"))
    driver = req.driver or ""
    try:
        by_scheme = check_bmc_url(req.bmc)
        driver = req.driver or by_scheme
    except ValueError as exc:
        issues.append(Issue("bmc", str(exc)))
    if req.uuid is not None:
        try:
            if parse_uuid(req.uuid) != req.uuid.lower():
                raise ValueError(f"{req.uuid!r} is not a UUID in its canonical form (8-4-4-4-12 hex digits)")
        except ValueError as exc:
            issues.append(Issue("uuid", str(exc)))
    if not req.username:
        issues.append(Issue("username", "is required"))
    if not req.password.reveal():
        issues.append(Issue("password", "is required (--password-stdin or ANVIL_BMC_PASSWORD)"))
    for fld, val in (("cpus", req.cpus), ("memoryGiB", req.memory_gib), ("slot", req.slot)):
        if val is not None and val < 0:
            issues.append(Issue(fld, f"{val} is negative"))
    nics: list[NicSpec] = []
    seen: set[str] = set()
    for i, nic in enumerate(req.nics):
        try:
            mac = parse_mac(nic.mac)
        except ValueError as exc:
            issues.append(Issue(f"nics[{i}].mac", str(exc)))
            continue
        if nic.name in seen:
            issues.append(Issue(f"nics[{i}].name", f"duplicate NIC name {nic.name!r}"))
        seen.add(nic.name)
        if (nic.switch is None) != (nic.port is None):
            issues.append(Issue(f"nics[{i}]", "cabling needs both switch and port"))
        nics.append(NicSpec(nic.name, mac, nic.switch, nic.port))
    for i, hba in enumerate(req.facts.get("hbas", [])):
        for key in ("wwpn", "wwnn"):
            try:
                parse_wwn(str(hba.get(key, "")))
            except ValueError as exc:
                issues.append(Issue(f"facts.hbas[{i}].{key}", str(exc)))
    return driver, nics, issues


def _nics(session: Session, blade_id: int) -> tuple[NicSpec, ...]:
    rows = session.execute(
        select(BladeNicRow, SwitchRow.name)
        .outerjoin(SwitchRow, SwitchRow.id == BladeNicRow.switch_id)
        .where(BladeNicRow.blade_id == blade_id)
        .order_by(BladeNicRow.position)
    ).all()
    return tuple(NicSpec(r[0].name, r[0].mac, r[1], r[0].port) for r in rows)


def _info(session: Session, row: BladeRow) -> BladeInfo:
    return BladeInfo(name=row.name, state=row.state, bmc=row.bmc_address, driver=row.driver, username=row.username,
                     chassis=row.chassis, slot=row.slot, cpus=row.cpus, memory_gib=row.memory_gib,
                     nics=_nics(session, row.id), facts=dict(row.facts), created_at=row.created_at)

@dataclass(frozen=True, slots=True)
class _Inspected:
    name: str
    mac: str                 # burned-in: the identity
    current: str | None      # in use now, when known


def _inspected_nics(found: BladeFacts) -> tuple[list[_Inspected], list[Issue]]:
    """The inspected NICs, one per burned-in MAC (the first keeps it), and what is wrong with them."""
    out: list[_Inspected] = []
    issues: list[Issue] = []
    seen: set[str] = set()
    for i, fact in enumerate(found.nics):
        try:
            mac = parse_mac(fact.mac)
        except ValueError as exc:
            issues.append(Issue(f"nics[{i}].mac", f"NIC {fact.name!r}: {exc}"))
            continue
        if mac in seen:
            continue
        seen.add(mac)
        try:
            current = parse_mac(fact.current_mac) if fact.current_mac else None
        except ValueError:
            current = None   # a fact beside the identity; an unusable one is just not recorded
        out.append(_Inspected(fact.name, mac, current))
    return out, issues


def _check_not_elsewhere(s: Session, name: str, blade_id: int, nics: list[_Inspected]) -> None:
    """Conflict when an inspected MAC is enrolled on another blade (this blade's own NICs never count)."""
    held = s.execute(
        select(BladeNicRow.mac, BladeRow.name).join(BladeRow, BladeRow.id == BladeNicRow.blade_id)
        .where(BladeNicRow.mac.in_([n.mac for n in nics]), BladeNicRow.blade_id != blade_id)
        .order_by(BladeRow.name)
    ).first()
    if held is not None:
        nic = next(n for n in nics if n.mac == held[0])
        raise Conflict(f"blade {name!r}: inspected NIC {nic.name!r} has MAC {held[0]}, which is enrolled on "
                       f"blade {held[1]!r}; nothing was recorded")


def _replace_nics(s: Session, blade_id: int, nics: list[_Inspected]) -> None:
    """Make the blade's NIC rows ``nics``, in order (see ``BladeService.apply_facts``)."""
    old = list(s.scalars(select(BladeNicRow).where(BladeNicRow.blade_id == blade_id)))
    by_mac = {n.mac: n for n in old}
    matched: list[BladeNicRow | None] = []
    for nic in nics:
        was = by_mac.get(nic.mac) or (by_mac.get(nic.current) if nic.current else None)
        if was is not None and any(m is was for m in matched):
            was = None
        matched.append(was)
    unchanged = {id(was) for pos, (nic, was) in enumerate(zip(nics, matched, strict=True))
                 if was is not None and was.mac == nic.mac and was.position == pos}
    # Name and cabling of each matched NIC, read before its row goes.
    carried = [(was.name, was.switch_id, was.port) if was is not None else (nic.name[:63], None, None)
               for nic, was in zip(nics, matched, strict=True)]
    for nic_row in old:
        if id(nic_row) not in unchanged:
            s.delete(nic_row)
    s.flush()  # the old rows' unique (position, mac, port) must be gone before the new ones
    for pos, (nic, was) in enumerate(zip(nics, matched, strict=True)):
        if was is not None and id(was) in unchanged:
            continue
        nic_name, switch_id, port = carried[pos]
        s.add(BladeNicRow(blade_id=blade_id, position=pos, name=nic_name, mac=nic.mac, switch_id=switch_id,
                          port=port))


class BladeService:
    def __init__(self, store: Store, box: SecretBox) -> None:
        self._store = store
        self._box = box

    def enroll(self, req: Enrollment) -> BladeInfo:
        with self._store.write() as s:
            return _info(s, self.enroll_in(s, req))

    def enroll_in(self, s: Session, req: Enrollment) -> BladeRow:
        """:meth:`enroll` inside the caller's transaction (which may add to it); the new row.

        A blade is enrolled spare, or in maintenance with ``req.maintenance_reason`` (held out
        of placement from its first moment)."""
        driver, nics, issues = _validate(req)
        if issues:
            raise ValidationError(issues, source=f"blade {req.name}")
        if s.scalar(select(BladeRow.id).where(BladeRow.name == req.name)) is not None:
            raise Conflict(f"blade {req.name!r} is already enrolled")
        uuid = req.uuid.lower() if req.uuid else None
        if uuid is not None and s.scalar(select(BladeRow.id).where(BladeRow.uuid == uuid)) is not None:
            raise Conflict(f"a blade with UUID {uuid} is already enrolled")
        row = BladeRow(name=req.name, bmc_address=req.bmc, driver=driver, username=req.username,
                       password_enc=self._box.encrypt(req.password), verify_tls=req.verify_tls,
                       state="maintenance" if req.maintenance_reason else "spare",
                       state_reason=req.maintenance_reason, chassis=req.chassis, slot=req.slot, cpus=req.cpus,
                       memory_gib=req.memory_gib, facts=dict(req.facts), **({"uuid": uuid} if uuid else {}))
        s.add(row)
        s.flush()
        for pos, nic in enumerate(nics):
            switch_id = None
            if nic.switch is not None:
                switch_id = s.scalar(select(SwitchRow.id).where(SwitchRow.name == nic.switch))
                if switch_id is None:
                    raise ValidationError([Issue(f"nics[{pos}].switch", f"switch {nic.switch!r} is not enrolled")])
            s.add(BladeNicRow(blade_id=row.id, position=pos, name=nic.name, mac=nic.mac, switch_id=switch_id,
                              port=nic.port))
        try:
            s.flush()
        except IntegrityError:
            raise Conflict(
                f"blade {req.name!r}: a NIC MAC or switch port is already used by another blade"
            ) from None
        log.info("enrolled blade %s (%s)", req.name, driver)
        return row

    def get(self, name: str) -> BladeInfo:
        with self._store.read() as s:
            return _info(s, self._row(s, name))

    def list(self, *, state: str | None = None) -> list[BladeInfo]:
        with self._store.read() as s:
            stmt = select(BladeRow).order_by(BladeRow.name)
            if state:
                stmt = stmt.where(BladeRow.state == state)
            return [_info(s, r) for r in s.scalars(stmt)]

    def delete(self, name: str) -> None:
        with self._store.write() as s:
            row = self._row(s, name)
            if row.state not in ("spare", "maintenance", "failed"):
                raise Conflict(f"blade {name!r} is {row.state}; release its profile first")
            if s.scalar(select(BindingRow.id).where(BindingRow.blade_id == row.id, BindingRow.state == "live")):
                raise Conflict(f"blade {name!r} is bound to a profile; release it first")
            # Ended bindings are history (jobs keep their own record); they go with the blade.
            s.execute(delete(BindingRow).where(BindingRow.blade_id == row.id))
            s.delete(row)

    def set_maintenance(self, name: str, on: bool, *, reason: str = "") -> BladeInfo:
        """Hold a blade out of the spare pool (spare or failed → maintenance), or return it (→ spare)."""
        from appliance.domain.states import BLADE_TRANSITIONS, BladeState, InvalidTransition, transition

        with self._store.write() as s:
            row = self._row(s, name)
            wanted = BladeState.MAINTENANCE if on else BladeState.SPARE
            if not on and row.state != BladeState.MAINTENANCE:
                raise Conflict(f"blade {name!r} is {row.state}, not in maintenance")
            try:
                row.state = transition(BLADE_TRANSITIONS, BladeState(row.state), wanted, what=f"blade {name}").value
            except InvalidTransition as exc:
                raise Conflict(f"{exc} (only a spare or failed blade can go into maintenance)") from None
            row.state_reason = reason or None if on else None
            return _info(s, row)

    def bmc(self, name: str) -> Bmc:
        """Connection details with the decrypted password, for a driver call."""
        return self.driver_and_bmc(name)[1]

    def driver_and_bmc(self, name: str) -> tuple[str, Bmc]:
        """The blade's driver name and its connection details (password decrypted), in one read."""
        with self._store.read() as s:
            row = self._row(s, name)
            return row.driver, Bmc(blade=row.name, address=row.bmc_address, username=row.username,
                                   password=self._box.decrypt(row.password_enc), verify_tls=row.verify_tls)

    def drivers_and_bmcs(self, names: Sequence[str]) -> dict[str, tuple[str, Bmc]]:
        """:meth:`driver_and_bmc` of many blades in a few reads (missing names are left out)."""
        out: dict[str, tuple[str, Bmc]] = {}
        with self._store.read() as s:
            for i in range(0, len(names), 1000):
                for row in s.scalars(select(BladeRow).where(BladeRow.name.in_(names[i:i + 1000]))):
                    out[row.name] = (row.driver, Bmc(blade=row.name, address=row.bmc_address, username=row.username,
                                                     password=self._box.decrypt(row.password_enc),
                                                     verify_tls=row.verify_tls))
        return out

    def apply_facts(self, name: str, found: BladeFacts) -> BladeInfo:
        """Write what inspection found into the inventory.

        CPUs (logical CPUs: threads when the BMC reports them, else its processor count) and
        memory replace the enrolled values when the driver knows them; threads, sockets, HBAs,
        firmware, system UUID, model and serial go into ``facts``.

        NICs: the driver's list, in its order, becomes the blade's (a driver that sees no NIC,
        like IPMI, leaves them as they are). A NIC is known by its burned-in MAC, because
        cabling, DHCP and the boot service look blades up by it and the MAC in use can change
        under them (a profile's virtual MAC, an OS setting); one MAC twice in the list is one
        NIC. Each inspected NIC takes over the blade's own NIC with the same burned-in MAC,
        else the one enrolled under the MAC it uses now (an operator may have typed the MAC the
        OS shows): it keeps that NIC's name and cabling. A NIC whose MAC and place are unchanged
        is left untouched, so inspecting again writes no NIC; the others are written anew.
        Where a NIC's current MAC differs from its burned-in one, ``facts.currentMacs`` records
        it (burned-in → current).

        The blade's own NICs never clash with it. A MAC enrolled on another blade is a Conflict
        naming that blade; an unusable MAC a ValidationError naming the NIC; either writes nothing.
        """
        with self._store.write() as s:
            return _info(s, self.apply_facts_in(s, self._row(s, name), found))

    def apply_facts_in(self, s: Session, row: BladeRow, found: BladeFacts) -> BladeRow:
        """:meth:`apply_facts` inside the caller's transaction."""
        name = row.name
        nics, issues = _inspected_nics(found)
        if issues:
            raise ValidationError(issues, source=f"inspection of blade {name}")
        if nics:
            _check_not_elsewhere(s, name, row.id, nics)
        # A blade's CPUs, as placement's minCpus counts them, are its logical CPUs (hardware
        # threads: what a hypervisor or OS schedules); the BMC's processor count is sockets on
        # real servers (2 on a 112-thread server), kept as facts.sockets.
        if found.threads is not None or found.cpus is not None:
            row.cpus = found.threads if found.threads is not None else found.cpus
        if found.memory_gib is not None:
            row.memory_gib = found.memory_gib
        facts = dict(row.facts)
        if found.hbas:
            facts["hbas"] = [{"name": h.name, "wwpn": h.wwpn, "wwnn": h.wwnn} for h in found.hbas]
        if found.firmware:
            facts["firmware"] = dict(found.firmware)
        for key, value in (("systemUuid", found.system_uuid), ("model", found.model), ("serial", found.serial),
                           ("threads", found.threads), ("sockets", found.cpus)):
            if value:
                facts[key] = value
        if nics:
            current = {n.mac: n.current for n in nics if n.current and n.current != n.mac}
            if current:
                facts["currentMacs"] = current
            else:
                facts.pop("currentMacs", None)
        if facts != row.facts:
            row.facts = facts
        if nics:
            _replace_nics(s, row.id, nics)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"blade {name!r}: an inspected NIC MAC was enrolled on another blade meanwhile; "
                               "inspect again") from None
        log.info("inspected blade %s", name, extra={"blade": name})
        return row

    @staticmethod
    def _row(session: Session, name: str) -> BladeRow:
        row = session.scalar(select(BladeRow).where(BladeRow.name == name))
        if row is None:   # the appliance's own paths (CLI, admin API): every blade is in sight
            raise NotFound("blade", name, hint=lookup.blade_hint(session, Scope.appliance(), name))
        return row
