"""Driver Protocols and the frozen values they take and return.

Drivers are async, few-methoded and converge: every setter is idempotent, and
power changes are *accepted* by ``set_power`` and confirmed by the caller with
``get_power``. Drivers never touch the store and raise only DriverError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable


class Secret:
    """A credential that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Bmc:
    """Everything needed to reach one BMC; the caller decrypts the password.

    ``address`` is the enrolment URL: ``redfish+https://host:port/redfish/v1/Systems/ID``,
    ``redfish+http://…`` or ``ipmi://host:port``.
    """

    blade: str
    address: str
    username: str
    password: Secret
    verify_tls: bool = True
    timeout: float = 10.0


class PowerState(StrEnum):
    ON = "on"
    OFF = "off"


class PowerAction(StrEnum):
    ON = "on"
    OFF = "off"            # hard off
    SOFT_OFF = "soft-off"  # ACPI shutdown
    RESET = "reset"


class BootDevice(StrEnum):
    NETWORK = "network"
    DISK = "disk"


class BootMode(StrEnum):
    UEFI = "uefi"
    LEGACY = "legacy"
    UNKNOWN = "unknown"   # the BMC does not say or take it


class HealthState(StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Health:
    state: HealthState
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BootSetting:
    device: BootDevice
    mode: BootMode = BootMode.UNKNOWN
    persistent: bool = False


@dataclass(frozen=True, slots=True)
class NicFact:
    """One NIC as inspected. ``mac`` is its identity, the burned-in MAC (canonical lowercase);
    ``current_mac`` the one it uses now when the BMC says (it differs while a virtual MAC is set)."""

    name: str
    mac: str
    speed_mbps: int | None = None
    current_mac: str | None = None


@dataclass(frozen=True, slots=True)
class HbaFact:
    name: str
    wwpn: str
    wwnn: str


@dataclass(frozen=True, slots=True)
class BladeFacts:
    """What inspection finds. Unknown values are None or empty. ``cpus`` counts processors
    (packages) as the BMC does, ``threads`` their hardware threads."""

    cpus: int | None = None
    memory_gib: int | None = None
    nics: tuple[NicFact, ...] = ()
    hbas: tuple[HbaFact, ...] = ()
    firmware: Mapping[str, str] = field(default_factory=dict)
    system_uuid: str | None = None
    model: str | None = None
    serial: str | None = None
    threads: int | None = None


@dataclass(frozen=True, slots=True)
class IdentityCaps:
    """Which virtual identities the BMC can hold (Redfish NetworkDeviceFunctions; a libvirt
    domain also holds the system UUID and each NIC's VLANs, as OVS port tags)."""

    mac: bool = False
    wwpn: bool = False
    wwnn: bool = False
    iscsi_initiator: bool = False
    uuid: bool = False
    vlans: bool = False

    @property
    def any(self) -> bool:
        return self.mac or self.wwpn or self.wwnn or self.iscsi_initiator or self.uuid or self.vlans


@dataclass(frozen=True, slots=True)
class IscsiBoot:
    initiator: str
    target: str
    portal: str           # host:port
    lun: int = 0


@dataclass(frozen=True, slots=True)
class FcBoot:
    wwpn: str
    wwnn: str


@dataclass(frozen=True, slots=True)
class NicVlans:
    """One NIC's VLANs where the blade itself holds them (a VM's port on its host's bridge)."""

    native: int | None = None
    tagged: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class VirtualIdentities:
    """A profile's identities as written to a BMC; ``macs`` (and ``vlans``) in the blade's NIC
    order. ``uuid`` is the system (SMBIOS) UUID, where the blade can take one."""

    macs: tuple[str, ...] = ()
    iscsi: IscsiBoot | None = None
    fc: tuple[FcBoot, ...] = ()
    uuid: str | None = None
    vlans: tuple[NicVlans, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.macs and self.iscsi is None and not self.fc and self.uuid is None and not self.vlans


class PowerDriver(Protocol):
    async def get_power(self, bmc: Bmc) -> PowerState: ...
    async def set_power(self, bmc: Bmc, action: PowerAction) -> None: ...
    async def health(self, bmc: Bmc) -> Health: ...


class BootDriver(Protocol):
    async def set_next_boot(self, bmc: Bmc, setting: BootSetting) -> None: ...
    async def get_next_boot(self, bmc: Bmc) -> BootSetting: ...


class InspectDriver(Protocol):
    async def facts(self, bmc: Bmc) -> BladeFacts: ...


class IdentityDriver(Protocol):
    async def capabilities(self, bmc: Bmc) -> IdentityCaps: ...
    async def apply(self, bmc: Bmc, ids: VirtualIdentities) -> None: ...
    async def read(self, bmc: Bmc) -> VirtualIdentities: ...
    async def clear(self, bmc: Bmc) -> None: ...


@runtime_checkable
class BmcDriver(PowerDriver, BootDriver, InspectDriver, IdentityDriver, Protocol):
    """What a BMC driver package provides: power, boot, inspect and identity in one object.

    A driver without virtual identities returns an empty IdentityCaps and raises
    Unsupported from apply/read/clear.
    """

    name: str

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class EventSource:
    """Where a blade's BMC events come from: one event service may speak for many blades.

    ``endpoint`` names the event service (a chassis manager serves every blade in it);
    ``resource`` is the blade's own resource there, the ``OriginOfCondition`` prefix of
    events about this blade (e.g. ``/redfish/v1/Systems/1``).
    """

    endpoint: str
    resource: str


@runtime_checkable
class EventDriver(Protocol):
    """Optional: a BMC that pushes events (Redfish EventService). The monitor subscribes
    once per ``EventSource.endpoint`` and still confirms every event by reading the BMC."""

    def event_source(self, bmc: Bmc) -> EventSource: ...

    async def subscribe_events(self, bmc: Bmc, destination: str, context: str,
                               headers: Mapping[str, str]) -> str | None:
        """Have the BMC POST its events to ``destination`` with ``headers``; the new
        subscription's URI, or None when this BMC has no (enabled) event service."""
        ...

    async def unsubscribe_events(self, bmc: Bmc, uri: str) -> None:
        """Delete the subscription; one already gone (404) is not an error."""
        ...


# ---- switches ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SwitchRef:
    """How to reach one switch. ``address`` is ``snmp://host:port`` (v2c community or v3
    user in ``username``/``password``/``privacy``) or ``ovs:unix:/path/db.sock?bridge=br0``."""

    name: str
    address: str
    username: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    privacy: Secret = field(default_factory=lambda: Secret(""))
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class PortConfig:
    """A port's wanted or read-back state. ``native`` None means no untagged VLAN."""

    native: int | None = None
    tagged: frozenset[int] = frozenset()
    up: bool = True


class SwitchDriver(Protocol):
    name: str

    async def get_port(self, sw: SwitchRef, port: str) -> PortConfig: ...
    async def set_port(self, sw: SwitchRef, port: str, want: PortConfig) -> None: ...
    async def list_ports(self, sw: SwitchRef) -> tuple[str, ...]: ...
    async def close(self) -> None: ...


# ---- storage ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LunRef:
    """One disk LUN of one iSCSI target on the appliance's target server.

    ``target`` is the target's iSCSI name (canonical lowercase ``iqn.``/``eui.``/``naa.``
    form). ``lun`` counts from 1: on tgt, LUN 0 of every target is its controller, so a
    profile's ``iscsi:<portal>::<port>:<lun>:<target>`` root path names LUN 1 or above.
    Access (ACLs) and sessions belong to the whole target, not to one LUN.
    """

    target: str
    lun: int = 1


@dataclass(frozen=True, slots=True)
class DiskSpec:
    """The backing file of a LUN. ``size`` is in bytes, a multiple of 512.

    The file is created only when it does not exist yet: from a copy of ``seed``
    (grown to ``size``) or empty and sparse. An existing file is never rewritten,
    resized or deleted by a storage driver, so a profile's disk survives release,
    re-stamp and target-server restarts.
    """

    path: Path
    size: int
    seed: Path | None = None


@runtime_checkable
class StorageDriver(Protocol):
    """An iSCSI target server (tgt first). Every method converges and is safe to repeat.

    The engine calls ``ensure_lun`` before ``bind`` on every (re)play: a restarted target
    server has forgotten its targets and ACLs, and ``ensure_lun`` re-creates the target
    from the same backing file. ``sessions`` is the boot signal of a profile that boots
    from the LUN's own loader (``sanboot``, DESIGN §7).
    """

    name: str

    async def ensure_lun(self, lun: LunRef, disk: DiskSpec) -> None:
        """Create the backing file if missing, then the target and LUN if missing."""
        ...

    async def bind(self, lun: LunRef, initiator: str) -> None:
        """Let ``initiator`` log in to the target (ACL); the target must exist."""
        ...

    async def unbind(self, lun: LunRef, initiator: str) -> None:
        """Revoke: drop ``initiator``'s ACL and close its open sessions on the target."""
        ...

    async def bindings(self, lun: LunRef) -> frozenset[str]:
        """Initiator names the target's ACL admits (empty when the target is missing)."""
        ...

    async def sessions(self, lun: LunRef) -> frozenset[str]:
        """Initiator names logged in to the target now (empty when the target is missing)."""
        ...

    async def remove_lun(self, lun: LunRef) -> None:
        """Delete the LUN, and the target with its ACLs and sessions once no disk LUN is
        left on it. The backing file stays."""
        ...

    async def close(self) -> None: ...


# ---- optional BMC capabilities: BIOS settings and firmware ------------------------------------

BiosValue = str | int | bool


@dataclass(frozen=True, slots=True)
class BiosAttribute:
    """One attribute a blade's BIOS knows, from its AttributeRegistry. ``kind`` is the
    registry's Type (Enumeration, String, Integer, Boolean, Password); ``values`` the
    allowed names of an Enumeration (empty: any)."""

    name: str
    kind: str = "String"
    values: tuple[str, ...] = ()
    read_only: bool = False
    lower: int | None = None
    upper: int | None = None


@dataclass(frozen=True, slots=True)
class BiosRegistry:
    """The attributes a blade's BIOS knows. ``source`` says where they came from: the
    AttributeRegistry's id, or ``current attributes`` when the service publishes no
    registry (then the names are known, their allowed values are not)."""

    attributes: Mapping[str, BiosAttribute]
    source: str
    any_name: bool = False   # every name is taken as text (the fake driver's BIOS)


@dataclass(frozen=True, slots=True)
class BiosSettings:
    """The BIOS's attributes in effect (``current``) and those waiting for the next boot
    (``pending``: only the ones that differ from current)."""

    current: Mapping[str, BiosValue]
    pending: Mapping[str, BiosValue] = field(default_factory=dict)
    registry: str = ""


@runtime_checkable
class BiosDriver(Protocol):
    """Optional: a BMC that sets BIOS attributes (Redfish ``Bios`` with ``@Redfish.Settings``).
    Settings written are pending; the BIOS takes them at the blade's next boot."""

    async def bios(self, bmc: Bmc) -> BiosSettings: ...

    async def bios_registry(self, bmc: Bmc) -> BiosRegistry: ...

    async def set_bios(self, bmc: Bmc, attributes: Mapping[str, BiosValue]) -> None:
        """Stage ``attributes`` for the next boot (idempotent; BadSettings when refused)."""
        ...


@dataclass(frozen=True, slots=True)
class FirmwareItem:
    """One firmware component of a blade (Redfish SoftwareInventory). ``uri`` names it as an
    update target; ``component`` is how baselines name it (e.g. ``BIOS``, ``BMC``)."""

    component: str
    version: str
    uri: str = ""
    name: str = ""
    updateable: bool = False


class UpdateState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class UpdateProgress:
    state: UpdateState
    message: str = ""


@runtime_checkable
class FirmwareDriver(Protocol):
    """Optional: a BMC that reports and updates firmware (Redfish UpdateService)."""

    async def firmware(self, bmc: Bmc) -> tuple[FirmwareItem, ...]: ...

    async def start_update(self, bmc: Bmc, item: FirmwareItem, image_uri: str) -> str:
        """Ask the BMC to fetch ``image_uri`` and flash ``item``; returns a handle for
        :meth:`update_progress` (the BMC's task URI, or ``""`` when it finished at once)."""
        ...

    async def running_update(self, bmc: Bmc, item: FirmwareItem) -> str | None:
        """The handle of an update of ``item`` the BMC is still running, if it says so: how a
        caller stopped between asking for an update and keeping its handle finds it again
        instead of flashing twice."""
        ...

    async def update_progress(self, bmc: Bmc, handle: str) -> UpdateProgress: ...
