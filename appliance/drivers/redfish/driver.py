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

import json
import logging
import time
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from appliance.drivers._blocking import BlockingRunner
from appliance.drivers.errors import BadSettings, BmcFailure, Unsupported
from appliance.drivers.protocols import (
    BiosRegistry,
    BiosSettings,
    BiosValue,
    BladeFacts,
    Bmc,
    BootDevice,
    BootMode,
    BootSetting,
    EventSource,
    FirmwareItem,
    Health,
    HealthState,
    IdentityCaps,
    PowerAction,
    PowerState,
    UpdateProgress,
    UpdateState,
    VirtualIdentities,
)
from appliance.drivers.redfish import bios as rbios
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
        # The BIOS AttributeRegistry per system URL, with the registry id it was read for.
        self._registries: dict[str, tuple[str, BiosRegistry]] = {}

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

    # ---- BIOS and firmware (optional capabilities) -----------------------------

    async def bios(self, bmc: Bmc) -> BiosSettings:
        result: BiosSettings = await self._run(bmc, "bios", _bios, retry=True, budget=2)
        return result

    async def bios_registry(self, bmc: Bmc) -> BiosRegistry:
        def fn(c: Connection, t: Target, b: str, o: str) -> BiosRegistry:
            # A BIOS's registry is firmware: read once per system (a firmware update restarts Anvil's
            # view of it only when the registry id the Bios names changes).
            key = f"{t.base_url}{t.system_path}"
            doc = _bios_doc(c, t, b, o)
            name = str(doc.get("AttributeRegistry") or "")
            known = self._registries.get(key)
            if known is not None and known[0] == name:
                return known[1]
            registry = _registry(c, b, o, name, rbios.attributes(doc))
            self._registries[key] = (name, registry)
            return registry

        result: BiosRegistry = await self._run(bmc, "bios_registry", fn, retry=True, budget=3)
        return result

    async def set_bios(self, bmc: Bmc, attributes: Mapping[str, BiosValue]) -> None:
        await self._run(bmc, "set_bios", lambda c, t, b, o: _set_bios(c, t, b, o, attributes), retry=True, budget=2)

    async def firmware(self, bmc: Bmc) -> tuple[FirmwareItem, ...]:
        result: tuple[FirmwareItem, ...] = await self._run(bmc, "firmware", _firmware, retry=True, budget=3)
        return result

    async def start_update(self, bmc: Bmc, item: FirmwareItem, image_uri: str) -> str:
        result: str = await self._run(bmc, "start_update",
                                      lambda c, t, b, o: _start_update(c, t, b, o, item, image_uri),
                                      retry=False, budget=3)
        return result

    async def running_update(self, bmc: Bmc, item: FirmwareItem) -> str | None:
        result: str | None = await self._run(bmc, "running_update",
                                             lambda c, t, b, o: _running_update(c, b, o, item), retry=True)
        return result

    async def update_progress(self, bmc: Bmc, handle: str) -> UpdateProgress:
        result: UpdateProgress = await self._run(bmc, "update_progress",
                                                 lambda c, t, b, o: _update_progress(c, b, o, handle), retry=True)
        return result

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


# ---- BIOS and firmware ------------------------------------------------------------


def _bios_doc(conn: Connection, target: Target, blade: str, op: str) -> dict[str, Any]:
    path = link(_system(conn, target, blade, op), "Bios")
    if not path:
        raise Unsupported(blade, DRIVER, op, "the system has no Bios resource: BIOS settings cannot be set here")
    return conn.get(path, blade, op)


def _bios(conn: Connection, target: Target, blade: str, op: str) -> BiosSettings:
    doc = _bios_doc(conn, target, blade, op)
    current = rbios.attributes(doc)
    staged: dict[str, BiosValue] = {}
    path = rbios.settings_path(doc)
    if path:
        try:
            staged = rbios.attributes(conn.get(path, blade, op))
        except Unsupported:
            staged = {}
    return BiosSettings(current=current, pending=rbios.pending(current, staged),
                        registry=str(doc.get("AttributeRegistry") or ""))


def _registry(conn: Connection, blade: str, op: str, name: str, current: Mapping[str, BiosValue]) -> BiosRegistry:
    """The AttributeRegistry ``name`` from the service's Registries, else the current attributes."""
    if name:
        try:
            root = conn.get("/redfish/v1/", blade, op)
            files = [body for _, body in _members(conn, root, "Registries", blade, op)]
            uri = rbios.registry_location(files, name)
            if uri:
                registry = rbios.registry_from_doc(conn.get(uri, blade, op))
                if registry.attributes:
                    return registry
        except Unsupported:
            pass
    return rbios.registry_from_current(current)


def _set_bios(conn: Connection, target: Target, blade: str, op: str, attributes: Mapping[str, BiosValue]) -> None:
    doc = _bios_doc(conn, target, blade, op)
    # DSP0266: a resource with @Redfish.Settings takes changes through its settings object; one
    # without it applies them in place (still at the next boot, as a BIOS does).
    path = rbios.settings_path(doc) or str(doc.get("@odata.id") or link(_system(conn, target, blade, op), "Bios"))
    reply = conn.request("PATCH", path, blade, op, {"Attributes": dict(attributes)})
    raise_for_status(reply, blade, op, f"PATCH {path} Attributes")


def _update_service(conn: Connection, blade: str, op: str) -> dict[str, Any]:
    path = link(conn.get("/redfish/v1/", blade, op), "UpdateService")
    if not path:
        raise Unsupported(blade, DRIVER, op, "the service has no UpdateService")
    return conn.get(path, blade, op)


def _firmware(conn: Connection, target: Target, blade: str, op: str) -> tuple[FirmwareItem, ...]:
    service = _update_service(conn, blade, op)
    return rbios.firmware_items(_members(conn, service, "FirmwareInventory", blade, op), target.system_path)


def _start_update(conn: Connection, target: Target, blade: str, op: str, item: FirmwareItem, image_uri: str) -> str:
    service = _update_service(conn, blade, op)
    action = (service.get("Actions") or {}).get("#UpdateService.SimpleUpdate") or {}
    url = action.get("target")
    if not url:
        raise Unsupported(blade, DRIVER, op, "UpdateService has no SimpleUpdate action")
    body: dict[str, Any] = {"ImageURI": image_uri, "TransferProtocol": image_uri.split(":", 1)[0].upper()}
    if item.uri:
        body["Targets"] = [item.uri]
    reply = conn.request("POST", str(url), blade, op, body)
    raise_for_status(reply, blade, op, f"POST {url} ImageURI={image_uri}")
    location = reply.headers.get("location") or ""
    if not location and isinstance(reply.body.get("@odata.id"), str) and "Task" in reply.body["@odata.id"]:
        location = str(reply.body["@odata.id"])
    # A Location may be absolute; keep the path (the connection has the base URL).
    return urlsplit(location).path if "://" in location else location


# A BMC's task list can be long (every job since its last reset): the newest are enough to find
# an update started a moment ago.
_TASKS_READ = 32
_TASK_LIVE = frozenset({"New", "Starting", "Running", "Pending", "Stopping", "Suspended", "Service"})


def _running_update(conn: Connection, blade: str, op: str, item: FirmwareItem) -> str | None:
    """The task URI of an update of ``item`` the BMC still runs: a live task whose Payload (the
    request that started it) targets ``item``. None when there is none or the BMC keeps no
    payloads (nothing to go by: the caller starts the update)."""
    if not item.uri:
        return None
    root = conn.get("/redfish/v1/", blade, op)
    # Redfish fixes the TaskService's URI; the root's link is preferred when the BMC gives one.
    service_path = link(root, "Tasks") or "/redfish/v1/TaskService"
    try:
        tasks_path = link(conn.get(service_path, blade, op), "Tasks")
        paths = members(conn.get(tasks_path, blade, op)) if tasks_path else []
    except Unsupported:
        return None
    want = item.uri.rstrip("/")
    for path in reversed(paths[-_TASKS_READ:]):
        try:
            task = conn.get(path, blade, op)
        except Unsupported:
            continue
        if task.get("TaskState") not in _TASK_LIVE:
            continue
        payload = task.get("Payload")
        body = payload.get("JsonBody") if isinstance(payload, dict) else None
        try:   # the request as the BMC kept it: a JSON string (small; a huge one is not ours)
            sent = json.loads(body) if isinstance(body, str) and len(body) < 65536 else body
        except (ValueError, RecursionError):
            continue
        targets = sent.get("Targets") if isinstance(sent, dict) else None
        if isinstance(targets, list) and any(isinstance(t, str) and t.rstrip("/") == want for t in targets):
            return path
    return None


_TASK_DONE = frozenset({"Completed"})
_TASK_FAILED = frozenset({"Exception", "Killed", "Cancelled", "Interrupted"})


def _update_progress(conn: Connection, blade: str, op: str, handle: str) -> UpdateProgress:
    if not handle:
        return UpdateProgress(UpdateState.DONE, "the BMC finished the update at once")
    task = conn.get(handle, blade, op)
    state = str(task.get("TaskState") or "")
    messages = [str(m.get("Message")) for m in task.get("Messages") or [] if isinstance(m, dict) and m.get("Message")]
    text = "; ".join(messages) or f"task {state}"
    if state in _TASK_DONE and task.get("TaskStatus") in (None, "OK", "Warning"):
        return UpdateProgress(UpdateState.DONE, text)
    if state in _TASK_FAILED or (state in _TASK_DONE and task.get("TaskStatus") == "Critical"):
        return UpdateProgress(UpdateState.FAILED, text)
    return UpdateProgress(UpdateState.RUNNING, text)
