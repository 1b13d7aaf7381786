"""VM hosts: libvirt hosts enrolled as a blade source (DESIGN §8).

A VM host has a fixed number of *slots*. Enrolment defines one libvirt domain per slot on
the host — ``anvil-NAME-01`` …, all of one shape (CPUs, memory, NICs on one bridge), each
with a burned-in UUID and MACs of its own — and enrols each as a blade ``NAME-01`` … with
driver ``libvirt``. So a slot is a blade like any other for placement, stamps and
failover: the stamp writes the profile's UUID, MACs and VLANs into the domain (the
driver's virtual identities) and powers it on; the release gives the slot its own back.

Why slots defined at enrolment rather than domains created per stamp: a blade must exist
before placement can choose it, with facts (CPUs, memory, NICs) that do not change under
it, and the engine's steps are the same for every blade only if power, boot and identity
act on something that is already there. The slot count is the VM host's capacity, chosen
by the admin, as a chassis has a number of bays.

The slots' chassis is the VM host's name: a VM host fails as a whole, as a chassis does.
Deleting a VM host undefines its (powered-off, unbound) domains and removes the blades.
"""

from __future__ import annotations

import builtins
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from appliance.drivers.errors import DriverError
from appliance.drivers.protocols import Secret
from appliance.errors import Conflict, Issue, NotFound, ValidationError
from appliance.secrets import SecretBox
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeNicRow, BladeRow, FailoverDomainRow, VmHostRow

log = logging.getLogger(__name__)

DRIVER = "libvirt"
MAX_SLOTS = 64
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_BRIDGE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_URI_SCHEMES = ("qemu", "qemu+ssh", "qemu+tcp", "qemu+tls", "qemu+unix", "qemu+libssh", "qemu+libssh2", "test")


@dataclass(frozen=True, slots=True)
class VmHostSpec:
    name: str
    uri: str
    bridge: str = "br0"
    bridge_type: str = "linux"
    slots: int = 1
    cpus: int = 1
    memory_mib: int = 256
    nics: int = 1
    accel: str = "qemu"


@dataclass(frozen=True, slots=True)
class VmHostInfo:
    spec: VmHostSpec
    blades: tuple[tuple[str, str, str | None], ...]   # (blade, state, bound profile TENANT/NAME)

    def public(self) -> dict[str, Any]:
        s = self.spec
        return {"name": s.name, "uri": s.uri, "bridge": s.bridge, "bridgeType": s.bridge_type, "slots": s.slots,
                "cpus": s.cpus, "memoryMiB": s.memory_mib, "nics": s.nics, "accel": s.accel,
                "blades": [{"name": b, "state": st, "profile": p} for b, st, p in self.blades]}


def slot_blade(host: str, index: int) -> str:
    return f"{host}-{index:02d}"


def check(spec: VmHostSpec) -> None:
    """ValidationError naming every bad field; nothing is touched."""
    from urllib.parse import urlsplit

    issues: list[Issue] = []
    if not _NAME.match(spec.name):
        issues.append(Issue("name", f"{spec.name!r} is not a lowercase name (a-z, 0-9, '-', at most 40)"))
    scheme = urlsplit(spec.uri).scheme
    if scheme not in _URI_SCHEMES:
        issues.append(Issue("uri", f"{spec.uri!r} is not a libvirt QEMU URI (qemu:///system, "
                                   "qemu+ssh://USER@HOST/system, …)"))
    if "#" in spec.uri:
        issues.append(Issue("uri", "a libvirt URI has no '#' part"))
    if not _BRIDGE.match(spec.bridge):
        issues.append(Issue("bridge", f"{spec.bridge!r} is not an interface name"))
    if spec.bridge_type not in ("linux", "ovs"):
        issues.append(Issue("bridgeType", f"{spec.bridge_type!r}: linux or ovs"))
    if not 1 <= spec.slots <= MAX_SLOTS:
        issues.append(Issue("slots", f"{spec.slots}: 1..{MAX_SLOTS}"))
    if not 1 <= spec.cpus <= 256:
        issues.append(Issue("cpus", f"{spec.cpus}: 1..256"))
    if not 64 <= spec.memory_mib <= 4 * 1024 * 1024:
        issues.append(Issue("memoryMiB", f"{spec.memory_mib}: at least 64"))
    if not 1 <= spec.nics <= 8:
        issues.append(Issue("nics", f"{spec.nics}: 1..8"))
    if spec.accel not in ("qemu", "kvm"):
        issues.append(Issue("accel", f"{spec.accel!r}: qemu (TCG) or kvm"))
    if issues:
        raise ValidationError(issues, source=f"VM host {spec.name}")


def _spec(row: VmHostRow) -> VmHostSpec:
    return VmHostSpec(name=row.name, uri=row.uri, bridge=row.bridge, bridge_type=row.bridge_type, slots=row.slots,
                      cpus=row.cpus, memory_mib=row.memory_mib, nics=row.nics, accel=row.accel)


class VmHostService:
    """``define``/``undefine`` are the libvirt calls (blocking); tests may pass others."""

    def __init__(self, store: Store, box: SecretBox | None = None, *,
                 define: Callable[[str, Any], str] | None = None,
                 undefine: Callable[[str, str], str] | None = None) -> None:
        self._store = store
        self._box = box
        self._define = define
        self._undefine = undefine

    def _libvirt(self) -> tuple[Callable[[str, Any], str], Callable[[str, str], str]]:
        if self._define is None or self._undefine is None:
            from appliance.drivers.libvirt.driver import define_slot, undefine_slot

            return self._define or define_slot, self._undefine or undefine_slot
        return self._define, self._undefine

    def enroll(self, spec: VmHostSpec) -> VmHostInfo:
        """Define the slots' domains on the host (existing Anvil slots are kept), then enrol the
        VM host and its slots as blades. Conflict when the name or a blade name is taken."""
        from appliance.drivers.libvirt.domain import SlotError, new_slot

        check(spec)
        if self._box is None:
            raise RuntimeError("VmHostService.enroll needs the secrets box")
        names = [slot_blade(spec.name, i) for i in range(1, spec.slots + 1)]
        with self._store.read() as s:
            if s.scalar(select(VmHostRow.id).where(VmHostRow.name == spec.name)) is not None:
                raise Conflict(f"VM host {spec.name!r} is already enrolled")
            taken = list(s.scalars(select(BladeRow.name).where(BladeRow.name.in_(names))))
            if taken:
                raise Conflict(f"VM host {spec.name}: blade names {', '.join(taken)} are taken")
        try:
            slots = [new_slot(spec.name, i, cpus=spec.cpus, memory_mib=spec.memory_mib, bridge=spec.bridge,
                              bridge_type=spec.bridge_type, nics=spec.nics, accel=spec.accel)
                     for i in range(1, spec.slots + 1)]
        except SlotError as exc:
            raise ValidationError([Issue("slots", str(exc))], source=f"VM host {spec.name}") from None
        define, _ = self._libvirt()
        from appliance.drivers.libvirt.driver import blade_address

        for slot in slots:
            try:
                how = define(spec.uri, slot)
            except DriverError as exc:
                raise ValidationError([Issue("uri", f"{spec.uri}: {exc.reason}")],
                                      source=f"VM host {spec.name}") from None
            log.info("VM host %s: slot %s %s", spec.name, slot.name, how)
        empty = self._box.encrypt(Secret(""))
        with self._store.write() as s:
            s.add(VmHostRow(name=spec.name, uri=spec.uri, bridge=spec.bridge, bridge_type=spec.bridge_type,
                            slots=spec.slots, cpus=spec.cpus, memory_mib=spec.memory_mib, nics=spec.nics,
                            accel=spec.accel))
            for slot, blade in zip(slots, names, strict=True):
                row = BladeRow(name=blade, bmc_address=blade_address(spec.uri, slot.name), driver=DRIVER,
                               username="libvirt", password_enc=empty, verify_tls=False, state="spare",
                               chassis=spec.name, slot=slot.index, cpus=spec.cpus,
                               memory_gib=spec.memory_mib // 1024,
                               facts={"model": f"libvirt domain ({spec.accel})", "virtual": True,
                                      "vmHost": spec.name, "domain": slot.name, "uuid": slot.own_uuid,
                                      "memoryMiB": spec.memory_mib, "serial": slot.name})
                s.add(row)
                s.flush()
                for pos, mac in enumerate(slot.own_macs):
                    s.add(BladeNicRow(blade_id=row.id, position=pos, name=f"eth{pos}", mac=mac))
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"VM host {spec.name}: a slot's MAC is already another blade's") from None
        log.info("enrolled VM host %s (%s, %d slots)", spec.name, spec.uri, spec.slots)
        return self.get(spec.name)

    def get(self, name: str) -> VmHostInfo:
        with self._store.read() as s:
            row = s.scalar(select(VmHostRow).where(VmHostRow.name == name))
            if row is None:
                raise NotFound("VM host", name)
            return self._info(s, row)

    def list(self) -> list[VmHostInfo]:
        with self._store.read() as s:
            return [self._info(s, r) for r in s.scalars(select(VmHostRow).order_by(VmHostRow.name))]

    @staticmethod
    def _info(s: Any, row: VmHostRow) -> VmHostInfo:
        from appliance.store.tables import ProfileRow

        names = [slot_blade(row.name, i) for i in range(1, row.slots + 1)]
        bound = {b: f"{t}/{p}" for b, t, p in s.execute(
            select(BladeRow.name, ProfileRow.tenant, ProfileRow.name)
            .join(BindingRow, BindingRow.blade_id == BladeRow.id)
            .join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
            .where(BladeRow.name.in_(names), BindingRow.state == "live"))}
        states = dict(s.execute(select(BladeRow.name, BladeRow.state).where(BladeRow.name.in_(names))).all())
        return VmHostInfo(_spec(row), tuple((n, states.get(n, "gone"), bound.get(n)) for n in names))

    def delete(self, name: str, *, detach: bool = False) -> builtins.list[str]:
        """Undefine the slots' domains and remove the VM host and its blades. Conflict while a
        slot is bound or not spare, or a failover domain lists the host — unless ``detach``
        (the host is going away, as the lab's does): then the domains stop listing it.
        Returns the blades removed."""
        info = self.get(name)
        busy = [f"{b} ({st}{', ' + p if p else ''})" for b, st, p in info.blades
                if p is not None or st not in ("spare", "maintenance", "failed", "gone")]
        if busy:
            raise Conflict(f"VM host {name}: slots in use: {', '.join(busy)}; release their profiles first")
        with self._store.read() as s:
            users = [d.name for d in s.scalars(select(FailoverDomainRow)) if name in (d.vm_hosts or [])]
        if users and not detach:
            raise Conflict(f"VM host {name} is a spare source of failover domain(s) {', '.join(users)}; "
                           "remove it there first (anvil failover domain update NAME --no-vm-hosts)")
        from appliance.drivers.libvirt.domain import domain_name

        _, undefine = self._libvirt()
        for i in range(1, info.spec.slots + 1):
            try:
                undefine(info.spec.uri, domain_name(name, i))
            except DriverError as exc:
                raise Conflict(f"VM host {name}: slot {i}: {exc.reason}") from None
        names = [b for b, _, _ in info.blades]
        with self._store.write() as s:
            ids = list(s.scalars(select(BladeRow.id).where(BladeRow.name.in_(names))))
            s.execute(delete(BindingRow).where(BindingRow.blade_id.in_(ids)))
            for row in s.scalars(select(BladeRow).where(BladeRow.id.in_(ids))):
                s.delete(row)
            host = s.scalar(select(VmHostRow).where(VmHostRow.name == name))
            if host is not None:
                s.delete(host)
            for d in s.scalars(select(FailoverDomainRow)):
                if name in (d.vm_hosts or []):
                    d.vm_hosts = [h for h in d.vm_hosts if h != name]
        return names
