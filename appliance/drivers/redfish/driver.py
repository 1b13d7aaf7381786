"""Redfish BMC driver (DMTF ``redfish`` library, in worker threads).

Address: ``redfish+http://host:port/redfish/v1/Systems/ID`` (or ``redfish+https``).
One connection per BMC endpoint and credential is reused by every blade behind it.
Every other resource is reached by following ``@odata.id`` links from the System.

Decisions:
- ``get_power``: ``Off`` is OFF; ``On``, ``PoweringOn`` and ``PoweringOff`` are ON. A
  blade still powering off may still touch storage, so only a real ``Off`` confirms a
  fence; a blade powering on is treated as on (it is not safe to stamp elsewhere).
- ``set_power`` is sent once (no retry): the caller confirms with ``get_power``.
  Mapping: ON→On, OFF→ForceOff, SOFT_OFF→GracefulShutdown, RESET→ForceRestart (or
  GracefulRestart where ForceRestart is not among the allowable values).
- Reads and the boot override (idempotent PATCH) are retried on retryable errors
  within the blade's deadline ``Bmc.timeout``.
- Boot: Pxe↔NETWORK, Hdd↔DISK; an override that is ``Disabled`` or ``None`` reads as
  DISK (the normal boot order), not persistent.
- ``health`` reads the same System resource as ``get_power``: right after a power read
  (within ``HEALTH_REUSE_S``, as the monitor's probe does) it takes that document's
  ``Status`` instead of a second GET, which halves a probe's cost on BMC and appliance.
  Power itself is never served from that copy: a power confirmation always reads afresh.
- ``facts`` (inspect) reads only: the System, its EthernetInterfaces (which of them are
  NICs, and by which MAC, is decided in ``inventory.py``), its NetworkDeviceFunctions (HBAs,
  and NICs when no EthernetInterface gives one), and Processors / Memory only for what the
  System's summaries lack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from appliance.drivers._blocking import BlockingRunner
from appliance.drivers.errors import BadSettings, BmcFailure, Unsupported
from appliance.drivers.protocols import (
    BladeFacts,
    Bmc,
    BootDevice,
    BootMode,
    BootSetting,
    EventSource,
    Health,
    HealthState,
    IdentityCaps,
    PowerAction,
    PowerState,
    VirtualIdentities,
)
from appliance.drivers.redfish import events
from appliance.drivers.redfish import identity as ident
from appliance.drivers.redfish import inventory as inv
from appliance.drivers.redfish.session import DRIVER, Connection, Connections, Target, link, members, raise_for_status

T = TypeVar("T")
log = logging.getLogger(__name__)

_RESET = {
    PowerAction.ON: ("On",),
    PowerAction.OFF: ("ForceOff",),
    PowerAction.SOFT_OFF: ("GracefulShutdown",),
    PowerAction.RESET: ("ForceRestart", "GracefulRestart", "PowerCycle"),
}
_ON_STATES = frozenset({"On", "PoweringOn", "PoweringOff"})
_HEALTH = {"OK": HealthState.OK, "Warning": HealthState.WARNING, "Critical": HealthState.CRITICAL}
_RANK = {HealthState.OK: 0, HealthState.WARNING: 1, HealthState.CRITICAL: 2}
HEALTH_REUSE_S = 1.0
_RECENT_MAX = 20_000


class RedfishDriver:
    """BmcDriver over Redfish. ``per_bmc`` caps concurrent requests to one BMC endpoint."""

    name = DRIVER

    def __init__(self, *, max_workers: int = 64, per_bmc: int = 4, read_attempts: int = 3) -> None:
        self._runner = BlockingRunner(DRIVER, max_workers=max_workers, per_bmc=per_bmc)
        self._conns = Connections()
        self._read_attempts = read_attempts
        # NetworkDeviceFunction paths per system URL: finding them takes ~7 GETs, and they do not
        # move; a 404 on a cached path drops the entry and they are looked up again.
        self._ndf_paths: NdfPaths = {}
        self._caps: dict[str, IdentityCaps] = {}
        # The ComputerSystem.Reset action of each system (target and allowed types): static too.
        self._resets: dict[str, dict[str, Any]] = {}
        # The System document each power read got, per system URL, with when (see the docstring).
        self._recent: dict[str, tuple[float, dict[str, Any]]] = {}

    async def _run(self, bmc: Bmc, op: str, fn: Any, *, retry: bool, budget: float = 1.0) -> Any:
        target = Target.parse(bmc.address, bmc.blade)

        def work() -> Any:
            conn = self._conns.get(
                target.base_url, bmc.username, bmc.password.reveal(), verify_tls=bmc.verify_tls, timeout=bmc.timeout
            )
            return fn(conn, target, bmc.blade, op)

        return await self._runner.run(
            work,
            key=target.endpoint,
            blade=bmc.blade,
            op=op,
            timeout=bmc.timeout * budget,
            attempts=self._read_attempts if retry else 1,
        )

    # ---- power -------------------------------------------------------------

    async def get_power(self, bmc: Bmc) -> PowerState:
        def fn(c: Connection, t: Target, b: str, o: str) -> str:
            system = _system(c, t, b, o)
            if len(self._recent) > _RECENT_MAX:
                self._recent.clear()
            self._recent[f"{t.base_url}{t.system_path}"] = (time.monotonic(), system)
            return _power_of(system, b, o)

        state = await self._run(bmc, "get_power", fn, retry=True)
        return PowerState(state)

    async def set_power(self, bmc: Bmc, action: PowerAction) -> None:
        await self._run(bmc, "set_power", lambda c, t, b, o: _set_power(c, t, b, o, action, self._resets),
                        retry=False, budget=2)

    async def health(self, bmc: Bmc) -> Health:
        target = Target.parse(bmc.address, bmc.blade)
        hit = self._recent.get(f"{target.base_url}{target.system_path}")
        if hit is not None and time.monotonic() - hit[0] < HEALTH_REUSE_S:
            return _health_of(hit[1])
        result: Health = await self._run(
            bmc, "health", lambda c, t, b, o: _health_of(_system(c, t, b, o)), retry=True)
        return result

    # ---- boot --------------------------------------------------------------

    async def set_next_boot(self, bmc: Bmc, setting: BootSetting) -> None:
        await self._run(bmc, "set_next_boot", lambda c, t, b, o: _set_boot(c, t, b, o, setting), retry=True)

    async def get_next_boot(self, bmc: Bmc) -> BootSetting:
        result: BootSetting = await self._run(bmc, "get_next_boot", _get_boot, retry=True)
        return result

    # ---- inspect -----------------------------------------------------------

    async def facts(self, bmc: Bmc) -> BladeFacts:
        result: BladeFacts = await self._run(bmc, "facts", _facts, retry=True, budget=3)
        return result

    # ---- identity ----------------------------------------------------------

    async def capabilities(self, bmc: Bmc) -> IdentityCaps:
        def fn(c: Connection, t: Target, b: str, o: str) -> IdentityCaps:
            # A system's functions and which fields they have are hardware: known once read, as
            # long as their paths still answer (the path cache is dropped when they do not).
            key = f"{t.base_url}{t.system_path}"
            known = self._caps.get(key)
            if known is not None and key in self._ndf_paths:
                return known
            caps = ident.capabilities(_ndfs(c, t, b, o, required=False, cache=self._ndf_paths))
            if key in self._ndf_paths:
                self._caps[key] = caps
            return caps

        result: IdentityCaps = await self._run(bmc, "capabilities", fn, retry=True, budget=2)
        return result

    async def apply(self, bmc: Bmc, ids: VirtualIdentities) -> None:
        await self._run(bmc, "apply_identity", lambda c, t, b, o: _apply(c, t, b, o, ids, self._ndf_paths),
                        retry=True, budget=3)

    async def read(self, bmc: Bmc) -> VirtualIdentities:
        def fn(c: Connection, t: Target, b: str, o: str) -> VirtualIdentities:
            return ident.read(_ndfs(c, t, b, o, required=True, cache=self._ndf_paths))

        result: VirtualIdentities = await self._run(bmc, "read_identity", fn, retry=True, budget=2)
        return result

    async def clear(self, bmc: Bmc) -> None:
        await self.apply(bmc, VirtualIdentities())

    # ---- events ------------------------------------------------------------

    def event_source(self, bmc: Bmc) -> EventSource:
        target = Target.parse(bmc.address, bmc.blade)
        return EventSource(endpoint=f"redfish+{target.base_url}", resource=target.system_path)

    async def subscribe_events(self, bmc: Bmc, destination: str, context: str,
                               headers: Mapping[str, str]) -> str | None:
        result: str | None = await self._run(
            bmc, "subscribe_events", lambda c, t, b, o: events.subscribe(c, t, b, o, destination, context, headers),
            retry=False, budget=3)
        return result

    async def unsubscribe_events(self, bmc: Bmc, uri: str) -> None:
        await self._run(bmc, "unsubscribe_events", lambda c, t, b, o: events.unsubscribe(c, t, b, o, uri),
                        retry=True)

    async def close(self) -> None:
        self._runner.close()
        self._conns.close_all()


# ---- work done in threads ---------------------------------------------------

NdfPaths = dict[str, list[str]]


def _system(conn: Connection, target: Target, blade: str, op: str) -> dict[str, Any]:
    try:
        return conn.get(target.system_path, blade, op)
    except Unsupported as exc:  # 404 on the enrolled system itself: the address is wrong
        raise BadSettings(blade, DRIVER, op, f"no system at {target.system_path}") from exc


def _power_of(system: Mapping[str, Any], blade: str, op: str) -> str:
    state = system.get("PowerState")
    if state == "Off":
        return PowerState.OFF.value
    if state in _ON_STATES:
        return PowerState.ON.value
    raise BmcFailure(blade, DRIVER, op, f"unknown PowerState {state!r}", retryable=True)


def _set_power(conn: Connection, target: Target, blade: str, op: str, action: PowerAction,
               cache: dict[str, dict[str, Any]] | None = None) -> None:
    key = f"{target.base_url}{target.system_path}"
    reset = cache.get(key) if cache is not None else None
    if not reset:
        system = _system(conn, target, blade, op)
        reset = (system.get("Actions") or {}).get("#ComputerSystem.Reset") or {}
        if cache is not None and reset.get("target"):
            cache[key] = reset
    url = reset.get("target")
    if not url:
        raise Unsupported(blade, DRIVER, op, "system has no ComputerSystem.Reset action")
    allowed = reset.get("ResetType@Redfish.AllowableValues")
    choices = _RESET[action]
    reset_type = choices[0]
    if isinstance(allowed, list) and allowed:
        usable = [c for c in choices if c in allowed]
        if not usable:
            raise Unsupported(blade, DRIVER, op, f"{action.value}: none of {list(choices)} in {allowed}")
        reset_type = usable[0]
    reply = conn.request("POST", str(url), blade, op, {"ResetType": reset_type})
    raise_for_status(reply, blade, op, f"POST {url} ResetType={reset_type}")


def _health_of(system: Mapping[str, Any]) -> Health:
    status = system.get("Status") or {}
    if not isinstance(status, dict) or not status:
        return Health(HealthState.OK, "BMC reports no Status")
    worst, reasons = HealthState.OK, []
    # sushy-tools 2.2 spells it "HealthRollUp"; DMTF's schema says "HealthRollup".
    for key in ("Health", "HealthRollup", "HealthRollUp"):
        value = status.get(key)
        if value is None:
            continue
        state = _HEALTH.get(str(value), HealthState.WARNING)
        if state is not HealthState.OK or value not in _HEALTH:
            reasons.append(f"Status.{key}={value}")
        if _RANK[state] > _RANK[worst]:
            worst = state
    if status.get("State") not in (None, "Enabled"):
        reasons.append(f"Status.State={status.get('State')}")
    return Health(worst, "; ".join(reasons))


def _set_boot(conn: Connection, target: Target, blade: str, op: str, setting: BootSetting) -> None:
    boot: dict[str, Any] = {
        "BootSourceOverrideTarget": "Pxe" if setting.device is BootDevice.NETWORK else "Hdd",
        "BootSourceOverrideEnabled": "Continuous" if setting.persistent else "Once",
    }
    if setting.mode is BootMode.UEFI:
        boot["BootSourceOverrideMode"] = "UEFI"
    elif setting.mode is BootMode.LEGACY:
        boot["BootSourceOverrideMode"] = "Legacy"
    reply = conn.request("PATCH", target.system_path, blade, op, {"Boot": boot})
    raise_for_status(reply, blade, op, f"PATCH {target.system_path} Boot")


def _get_boot(conn: Connection, target: Target, blade: str, op: str) -> BootSetting:
    boot = _system(conn, target, blade, op).get("Boot") or {}
    tgt = boot.get("BootSourceOverrideTarget")
    enabled = boot.get("BootSourceOverrideEnabled")
    mode = {"UEFI": BootMode.UEFI, "Legacy": BootMode.LEGACY}.get(str(boot.get("BootSourceOverrideMode")))
    mode = mode or BootMode.UNKNOWN
    if enabled == "Disabled" or tgt in (None, "None"):
        return BootSetting(BootDevice.DISK, mode, persistent=False)
    if tgt in ("Pxe", "UefiHttp"):
        device = BootDevice.NETWORK
    elif tgt in ("Hdd", "UefiTarget"):
        device = BootDevice.DISK
    else:
        raise BmcFailure(blade, DRIVER, op, f"boot override {tgt!r} is neither network nor disk")
    return BootSetting(device, mode, persistent=enabled == "Continuous")


def _members(conn: Connection, resource: dict[str, Any], key: str, blade: str, op: str) -> list[tuple[str, Any]]:
    """(link, body) of each member of the collection ``resource[key]`` links to; [] when the link
    is missing or the BMC has no such collection (404/501). A member that answers 404 is left out."""
    coll = link(resource, key)
    if not coll:
        return []
    try:
        paths = members(conn.get(coll, blade, op))
    except Unsupported:
        return []
    out = []
    for path in paths:
        try:
            out.append((path, conn.get(path, blade, op)))
        except Unsupported:
            continue
    return out


def _facts(conn: Connection, target: Target, blade: str, op: str) -> BladeFacts:
    system = _system(conn, target, blade, op)
    ndfs = _ndfs(conn, target, blade, op, required=False, system=system)
    nics, skipped = inv.nics(_members(conn, system, "EthernetInterfaces", blade, op))
    if not nics:
        nics, more = inv.nics_from_functions(ndfs)
        skipped += more
    for s in skipped:
        log.info("blade %s: interface %s is not a NIC: %s", blade, s.name, s.reason, extra={"blade": blade})
    # Each of CPUs, threads, memory from the System's summary; the collections are read only
    # for what the summary lacks (one GET per processor or DIMM).
    cpus, threads = inv.processor_summary(system)
    if cpus is None or threads is None:
        counted = inv.processors(body for _, body in _members(conn, system, "Processors", blade, op))
        cpus, threads = cpus or counted[0], threads or counted[1]
    memory_gib = inv.memory_summary(system)
    if memory_gib is None:
        memory_gib = inv.memory(body for _, body in _members(conn, system, "Memory", blade, op))
    bios, uuid = inv.text(system.get("BiosVersion")), inv.text(system.get("UUID"))
    return BladeFacts(
        cpus=cpus,
        threads=threads,
        memory_gib=memory_gib,
        nics=nics,
        hbas=ident.hbas(ndfs),
        firmware={"bios": bios} if bios else {},
        system_uuid=uuid.lower() if uuid else None,
        model=inv.text(system.get("Model")),
        serial=inv.text(system.get("SerialNumber")),
    )


def _ndfs(
    conn: Connection,
    target: Target,
    blade: str,
    op: str,
    *,
    required: bool,
    system: dict[str, Any] | None = None,
    cache: NdfPaths | None = None,
) -> list[ident.Ndf]:
    """The system's NetworkDeviceFunctions, via System.NetworkInterfaces, else the
    system's first Chassis' NetworkAdapters. ``required``: raise Unsupported when none."""
    key = f"{target.base_url}{target.system_path}"
    known = cache.get(key) if cache is not None else None
    if cache is not None and known:
        try:
            return [ident.Ndf(path, conn.get(path, blade, op)) for path in known]
        except Unsupported:
            cache.pop(key, None)
    system = system if system is not None else _system(conn, target, blade, op)
    collections: list[str] = []
    try:
        ni_link = link(system, "NetworkInterfaces")
        if ni_link:
            for ni_path in members(conn.get(ni_link, blade, op)):
                ndf_link = link(conn.get(ni_path, blade, op), "NetworkDeviceFunctions")
                if ndf_link:
                    collections.append(ndf_link)
        else:
            chassis = (system.get("Links") or {}).get("Chassis") or []
            if chassis and isinstance(chassis[0], dict) and chassis[0].get("@odata.id"):
                adapters = link(conn.get(str(chassis[0]["@odata.id"]), blade, op), "NetworkAdapters")
                if adapters:
                    for ad_path in members(conn.get(adapters, blade, op)):
                        ndf_link = link(conn.get(ad_path, blade, op), "NetworkDeviceFunctions")
                        if ndf_link:
                            collections.append(ndf_link)
        out = [
            ident.Ndf(path, conn.get(path, blade, op))
            for coll in collections
            for path in members(conn.get(coll, blade, op))
        ]
    except Unsupported:
        out = []
    if required and not out:
        raise Unsupported(blade, DRIVER, op, "no NetworkDeviceFunctions: virtual identities are applied at boot")
    if cache is not None and out:
        cache[key] = [n.path for n in out]
    return out


def _apply(conn: Connection, target: Target, blade: str, op: str, ids: VirtualIdentities,
           cache: NdfPaths | None = None) -> None:
    ndfs = _ndfs(conn, target, blade, op, required=not ids.empty, cache=cache)
    try:
        patches = ident.plan(ndfs, ids)
    except ident.PlanError as exc:
        raise BadSettings(blade, DRIVER, op, str(exc)) from exc
    for path, body in patches:
        reply = conn.request("PATCH", path, blade, op, body)
        raise_for_status(reply, blade, op, f"PATCH {path}")
