"""An emulated rack and the appliance's engine, monitor and boot service in one process.

For benchmarks and integration tests that need to look inside: real emulator processes
(sushy-tools chassis, an snmpsim switch) and the production drivers, engine, monitor and
boot HTTP service, on a SQLite store in ``work``; no API and no subprocess appliance.
The switch is snmpsim, or with ``switch="ovs"`` (root) a private Open vSwitch with one
host namespace per blade NIC; ``storage`` is the iSCSI target driver for boot LUNs, if any.

    async with InprocRig(work, chassis=[20, 1], enroll=20) as rig:
        ...
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from appliance.boot.http import setup as setup_boot
from appliance.boot.peers import PeerCheck
from appliance.boot.tokens import KEY_FILE, BootKey
from appliance.drivers.protocols import Secret, StorageDriver
from appliance.engine.host_delivery import HostWebhookLoop
from appliance.engine.hostpools import HostPoolLoop
from appliance.engine.model import EngineSettings
from appliance.engine.runner import Engine
from appliance.engine.steps import KINDS
from appliance.lab import netns, procs, redfish_emulator
from appliance.lab.ovs_switch import Host, OvsSwitch
from appliance.lab.snmp_switch import DEFAULT_VLANS, SnmpSwitch
from appliance.monitor.events import setup_event_route
from appliance.monitor.notify import Notifier
from appliance.monitor.runner import Monitor, MonitorSettings
from appliance.secrets import SecretBox, ensure_key
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.firmware import baseline_dirs
from appliance.services.hardware import Hardware
from appliance.services.switches import SwitchService
from appliance.store import Store, open_store

T = TypeVar("T")
SWITCH = "rig-sw"
NICS = 2   # per blade, each cabled to its own switch port


@dataclass(frozen=True, slots=True)
class RigBlade:
    name: str
    chassis: int
    system: dict[str, Any]
    emulator: redfish_emulator.RedfishEmulator


class InprocRig:
    """``chassis``: blades per sushy-tools process (a blade alone in its process can lose its
    BMC without the others); ``enroll``: how many of them are in the inventory at start."""

    def __init__(self, work: Path, *, chassis: list[int], enroll: int | None = None,
                 power_delay: tuple[float, float] = (0.0, 0.2), delays: dict[int, tuple[float, float]] | None = None,
                 engine: EngineSettings | None = None, monitor: MonitorSettings | None = None,
                 events: bool = False, switch: str = "snmp", storage: StorageDriver | None = None,
                 update_seconds: float | None = None) -> None:
        if switch not in ("snmp", "ovs"):
            raise ValueError(f"unknown rig switch {switch!r} (snmp or ovs)")
        self.work = work
        self.chassis = chassis
        self.to_enroll = sum(chassis) if enroll is None else enroll
        self.power_delay = power_delay
        self.delays = delays or {}
        self.engine_settings = engine or EngineSettings()
        self.monitor_settings = monitor
        self.events = events   # the monitor subscribes to the emulators' Redfish events
        self.password = secrets.token_urlsafe(12)
        self.blades: list[RigBlade] = []
        self.enrolled: list[str] = []
        self.switch_kind = switch
        self.switch: SnmpSwitch | None = None
        self.ovs: OvsSwitch | None = None
        self.storage = storage
        self.update_seconds = update_seconds   # how long an emulated firmware update runs
        self.store: Store = open_store(f"sqlite:///{work / 'anvil.db'}")
        key = work / "secrets.key"
        ensure_key(key)
        self.box = SecretBox(key)
        self.hw: Hardware | None = None
        self.engine: Engine | None = None
        self.monitor: Monitor | None = None
        self._stop = asyncio.Event()
        self._engine_stop = asyncio.Event()   # the engine alone, for restart_engine()
        self._engine_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._boot_runner: web.AppRunner | None = None

    # ---- life -------------------------------------------------------------------------------

    async def __aenter__(self) -> InprocRig:
        try:
            await asyncio.to_thread(self._start_rack)
            boot_port = procs.free_tcp_port()
            self.boot_url = f"http://127.0.0.1:{boot_port}"
            self.hw = Hardware(self.store, self.box, notifier=Notifier(self.store, self.box), storage=self.storage)
            # Engine and boot service in this process: one boot key, kept in the rig's folder.
            boot_key = BootKey.load(self.work / KEY_FILE)
            self._boot_key = boot_key
            self.engine = self._new_engine()
            if self.monitor_settings is not None:
                wanted = replace(self.monitor_settings, event_base_url=self.boot_url if self.events else "")
                self.monitor = Monitor(self.store, self.hw, settings=wanted)
            app = web.Application()
            setup_boot(app, store=self.store, images_dir=self.work / "images", base_url=self.boot_url,
                       key=boot_key, peers=PeerCheck(loopback_only=True))
            if self.monitor is not None and self.monitor.events is not None:
                # The appliance takes events beside its API; here the boot service's port will do.
                setup_event_route(app, self.monitor.events, self.monitor.on_event)
            self._boot_runner = web.AppRunner(app, access_log=None)
            await self._boot_runner.setup()
            await web.TCPSite(self._boot_runner, "127.0.0.1", boot_port).start()
            await asyncio.to_thread(self._start_emulators)
            await asyncio.to_thread(self.enroll, self.to_enroll)
            self._engine_task = asyncio.create_task(self.engine.run(self._engine_stop), name="engine")
            if self.monitor is not None:
                self._tasks.append(asyncio.create_task(self.monitor.run(self._stop), name="monitor"))
        except BaseException:
            await self.__aexit__()
            raise
        return self

    def _new_engine(self) -> Engine:
        assert self.hw is not None
        return Engine(self.store, self.hw, KINDS,
                      settings=replace(self.engine_settings, boot_key=self._boot_key, boot_url=self.boot_url,
                                       images_dir=self.engine_settings.images_dir or self.work / "images",
                                       baselines=self.engine_settings.baselines or baseline_dirs(self.work)),
                      loops=(HostPoolLoop(self.store).run, HostWebhookLoop(self.store, self.box).run))

    async def stop_engine(self) -> None:
        """Stop the engine where it is: its running steps are cancelled mid-way (the emulators,
        boot service and monitor go on), as when the appliance's engine dies."""
        self._engine_stop.set()
        if self._engine_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._engine_task, 30)
        self._engine_task = None

    def start_engine(self) -> None:
        """A new engine (a new leader) on the same store; it takes over unfinished jobs."""
        assert self._engine_task is None, "the engine is running"
        self._engine_stop = asyncio.Event()
        self.engine = self._new_engine()
        self._engine_task = asyncio.create_task(self.engine.run(self._engine_stop), name="engine")

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await self.stop_engine()
        for task in self._tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):  # shutting down, whatever happened
                await asyncio.wait_for(task, 30)
        if self.hw is not None:
            await self.hw.close()
        if self._boot_runner is not None:
            await self._boot_runner.cleanup()
        await asyncio.to_thread(self._stop_rack)
        self.store.close()

    def _start_rack(self) -> None:
        if self.switch_kind == "ovs":
            # Every port untagged in VLAN 1 at first, as on the SNMP switch; one namespace per NIC.
            hosts = tuple(Host(self._ovs_host(i, k), vlan=1) for i in range(1, sum(self.chassis) + 1)
                          for k in range(NICS))
            self.ovs = OvsSwitch(self.work / "ovs", hosts=hosts, prefix=netns.unique_prefix("ir"))
            self.ovs.up()
            SwitchService(self.store, self.box).enroll(SWITCH, self.ovs.address)
            return
        self.switch = SnmpSwitch(self.work / "snmp", ports=max(24, NICS * sum(self.chassis)), vlans=DEFAULT_VLANS,
                                 community="rig" + secrets.token_hex(6))
        self.switch.start()
        SwitchService(self.store, self.box).enroll(SWITCH, self.switch.address,
                                                   password=Secret(self.switch.community))

    @staticmethod
    def _ovs_host(blade: int, nic: int) -> str:
        return f"{blade}e{nic}"

    def port_of(self, blade: str, nic: int) -> str:
        """The switch port NIC ``nic`` (0-based) of ``blade`` is cabled to."""
        i = self.blades.index(self.blade(blade)) + 1
        return self.ovs.port(self._ovs_host(i, nic)) if self.ovs is not None else str(NICS * (i - 1) + 1 + nic)

    def _start_emulators(self) -> None:
        n = 0
        for c, count in enumerate(self.chassis, 1):
            systems = redfish_emulator.make_systems(count, seed=c, nics=NICS)
            emu = redfish_emulator.start_redfish(
                self.work / f"redfish-{c}", procs.free_tcp_port(), systems,
                power_delay=self.delays.get(c, self.power_delay), username="admin", password=self.password,
                boot_url=self.boot_url, update_seconds=self.update_seconds)
            for system in systems:
                n += 1
                self.blades.append(RigBlade(f"b{n:03d}", c, system, emu))

    @property
    def emulators(self) -> list[redfish_emulator.RedfishEmulator]:
        """One per chassis, in chassis order."""
        return list({id(b.emulator): b.emulator for b in self.blades}.values())

    def _stop_rack(self) -> None:
        for emu in self.emulators:
            redfish_emulator.stop(emu)
        if self.switch is not None:
            self.switch.stop()
        if self.ovs is not None:
            self.ovs.down()

    # ---- inventory ----------------------------------------------------------------------------

    def enroll(self, count: int) -> list[str]:
        """Enrol the next ``count`` blades (new spares, after the start)."""
        svc = BladeService(self.store, self.box)
        added = []
        for blade in self.blades[len(self.enrolled):len(self.enrolled) + count]:
            i = self.blades.index(blade) + 1
            svc.enroll(Enrollment(
                name=blade.name, bmc=blade.emulator.address(blade.system), username="admin",
                password=Secret(self.password), cpus=blade.system["cpus"], memory_gib=blade.system["memory_gib"],
                chassis=f"c{blade.chassis}", slot=i,
                nics=tuple(NicSpec(f"eth{k}", nic["mac"], SWITCH, self.port_of(blade.name, k))
                           for k, nic in enumerate(blade.system["nics"]))))
            self.enrolled.append(blade.name)
            added.append(blade.name)
        return added

    def blade(self, name: str) -> RigBlade:
        return next(b for b in self.blades if b.name == name)

    # ---- faults -------------------------------------------------------------------------------

    def crash(self, name: str) -> None:
        """The blade dies: powered off behind the appliance's back, straight on its BMC."""
        b = self.blade(name)
        url = f"{b.emulator.base_url}/redfish/v1/Systems/{b.system['uuid']}/Actions/ComputerSystem.Reset"
        auth = base64.b64encode(f"admin:{self.password}".encode()).decode()
        req = urllib.request.Request(url, data=json.dumps({"ResetType": "ForceOff"}).encode(), method="POST",
                                     headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5):
            pass

    def kill_bmc(self, name: str) -> None:
        """The blade's BMC stops answering (its emulator process is stopped, by PID)."""
        redfish_emulator.stop(self.blade(name).emulator)

    def kill_switch(self) -> None:
        if self.switch is not None:
            self.switch.stop()
        if self.ovs is not None:
            self.ovs.down()

    def raw_power(self, name: str) -> str:
        b = self.blade(name)
        return str(redfish_emulator.get_json(b.emulator, f"/redfish/v1/Systems/{b.system['uuid']}")["PowerState"])

    # ---- waiting ------------------------------------------------------------------------------

    async def until(self, what: str, check: Callable[[], T | None], timeout: float, every: float = 0.2) -> T:
        """Poll ``check`` (off the loop) until it returns something truthy; TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / every) + 2):
            got = await asyncio.to_thread(check)
            if got:
                return got
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(every)
        raise TimeoutError(f"{what}: not within {timeout:g} s")


def fast_engine(**kw: Any) -> EngineSettings:
    """Engine settings for a rig: quick polls, short boot deadline."""
    return replace(EngineSettings(poll_interval=0.1, boot_poll=0.2, boot_timeout=60.0, spare_poll=0.5), **kw)
