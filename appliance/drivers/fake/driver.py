"""An in-process BmcDriver for unit tests of engine logic: no I/O, fully scriptable.

Address ``fake://NAME``. Each blade's state lives in a :class:`FakeBlade` created on
first use (or given up front through ``blades``). Tests can:

- delay power changes (``power_delay`` seconds, on an injectable ``clock``);
- make the next calls of an operation fail: ``fail(address, op, error)``;
- read ``calls`` (every operation, in order) to assert "power-on was sent once".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from appliance.drivers.errors import BadSettings, BmcAuthFailed, DriverError, Unsupported
from appliance.drivers.protocols import (
    BiosRegistry,
    BiosSettings,
    BiosValue,
    BladeFacts,
    Bmc,
    BootDevice,
    BootSetting,
    Health,
    HealthState,
    IdentityCaps,
    PowerAction,
    PowerState,
    VirtualIdentities,
)

DRIVER = "fake"


@dataclass(slots=True)
class FakeBlade:
    power: PowerState = PowerState.OFF
    pending: PowerState | None = None
    apply_at: float = 0.0
    boot: BootSetting = field(default_factory=lambda: BootSetting(BootDevice.DISK))
    health: Health = field(default_factory=lambda: Health(HealthState.OK))
    facts: BladeFacts = field(default_factory=BladeFacts)
    caps: IdentityCaps = field(default_factory=lambda: IdentityCaps(mac=True, wwpn=True, wwnn=True,
                                                                    iscsi_initiator=True))
    identities: VirtualIdentities = field(default_factory=VirtualIdentities)
    password: str | None = None   # when set, other passwords get BmcAuthFailed
    bios: dict[str, BiosValue] = field(default_factory=dict)
    bios_pending: dict[str, BiosValue] = field(default_factory=dict)


class FakeBmcDriver:
    """BmcDriver without hardware. ``clock`` returns seconds (monotonic) and can be a test clock."""

    name = DRIVER

    def __init__(
        self,
        *,
        power_delay: float = 0.0,
        blades: dict[str, FakeBlade] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.power_delay = power_delay
        self.blades: dict[str, FakeBlade] = dict(blades or {})
        self.calls: list[tuple[str, str]] = []   # (address, op)
        self._failures: dict[tuple[str, str], list[DriverError]] = {}
        self._clock = clock
        self.closed = False

    def blade(self, address: str) -> FakeBlade:
        return self.blades.setdefault(address, FakeBlade())

    def fail(self, address: str, op: str, error: DriverError, times: int = 1) -> None:
        """Make the next ``times`` calls of ``op`` on ``address`` raise ``error``."""
        self._failures.setdefault((address, op), []).extend([error] * times)

    def _enter(self, bmc: Bmc, op: str) -> FakeBlade:
        if not bmc.address.startswith("fake://"):
            raise BadSettings(bmc.blade, DRIVER, op, f"not a fake:// address: {bmc.address!r}")
        self.calls.append((bmc.address, op))
        queued = self._failures.get((bmc.address, op))
        if queued:
            raise queued.pop(0)
        blade = self.blade(bmc.address)
        if blade.password is not None and bmc.password.reveal() != blade.password:
            raise BmcAuthFailed(bmc.blade, DRIVER, op, "credentials refused")
        if blade.pending is not None and self._clock() >= blade.apply_at:
            self._power(blade, blade.pending)
        return blade

    @staticmethod
    def _power(blade: FakeBlade, want: PowerState) -> None:
        if want is PowerState.ON and blade.power is PowerState.OFF and blade.bios_pending:
            blade.bios.update(blade.bios_pending)   # the BIOS takes staged settings while booting
            blade.bios_pending = {}
        blade.power, blade.pending = want, None

    async def get_power(self, bmc: Bmc) -> PowerState:
        return self._enter(bmc, "get_power").power

    async def set_power(self, bmc: Bmc, action: PowerAction) -> None:
        blade = self._enter(bmc, "set_power")
        if action is PowerAction.RESET:
            if blade.power is PowerState.OFF:
                return
            blade.power = PowerState.OFF
            want = PowerState.ON
        else:
            want = PowerState.ON if action is PowerAction.ON else PowerState.OFF
        if self.power_delay <= 0:
            self._power(blade, want)
        elif blade.power is not want:
            blade.pending, blade.apply_at = want, self._clock() + self.power_delay

    async def health(self, bmc: Bmc) -> Health:
        return self._enter(bmc, "health").health

    async def set_next_boot(self, bmc: Bmc, setting: BootSetting) -> None:
        self._enter(bmc, "set_next_boot").boot = setting

    async def get_next_boot(self, bmc: Bmc) -> BootSetting:
        return self._enter(bmc, "get_next_boot").boot

    async def facts(self, bmc: Bmc) -> BladeFacts:
        return self._enter(bmc, "facts").facts

    async def capabilities(self, bmc: Bmc) -> IdentityCaps:
        return self._enter(bmc, "capabilities").caps

    async def apply(self, bmc: Bmc, ids: VirtualIdentities) -> None:
        blade = self._enter(bmc, "apply_identity")
        if not blade.caps.any:
            raise Unsupported(bmc.blade, DRIVER, "apply_identity", "no virtual identities")
        blade.identities = ids

    async def read(self, bmc: Bmc) -> VirtualIdentities:
        blade = self._enter(bmc, "read_identity")
        if not blade.caps.any:
            raise Unsupported(bmc.blade, DRIVER, "read_identity", "no virtual identities")
        return blade.identities

    async def clear(self, bmc: Bmc) -> None:
        blade = self._enter(bmc, "clear_identity")
        if not blade.caps.any:
            raise Unsupported(bmc.blade, DRIVER, "clear_identity", "no virtual identities")
        blade.identities = VirtualIdentities()

    # BIOS: any attribute name is taken; staged ones apply at the next power-on.

    async def bios(self, bmc: Bmc) -> BiosSettings:
        blade = self._enter(bmc, "bios")
        return BiosSettings(current=dict(blade.bios), pending=dict(blade.bios_pending), registry="fake")

    async def bios_registry(self, bmc: Bmc) -> BiosRegistry:
        self._enter(bmc, "bios_registry")
        return BiosRegistry({}, "fake", any_name=True)

    async def set_bios(self, bmc: Bmc, attributes: Mapping[str, BiosValue]) -> None:
        blade = self._enter(bmc, "set_bios")
        blade.bios_pending.update({k: v for k, v in attributes.items() if blade.bios.get(k) != v})

    async def close(self) -> None:
        self.closed = True
