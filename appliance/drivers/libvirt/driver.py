"""libvirt BMC driver: a VM host's domain as a blade, through libvirt-python (``libvirt`` module).

Address: ``libvirt+<libvirt URI>#<domain>``, e.g. ``libvirt+qemu:///system#anvil-h1-01`` or
``libvirt+qemu+ssh://root@hv1/system#anvil-h1-01`` (a ``?socket=PATH`` query reaches a
libvirtd on its own socket). The URI is libvirt's own; credentials, when it needs any,
come from it (ssh keys, SASL config), so the blade's username/password are unused.

- power: ``create`` (on), ``destroy`` (hard off), ``shutdown`` (ACPI), ``reset``; read back
  with ``isActive``. A crashed or paused domain reads as on with health critical/warning.
- boot: the order in the domain XML (network first, or disk first) and the firmware
  (``firmware='efi'`` for UEFI). It is persistent — a domain has no one-time boot override.
- identity: the domain's UUID (SMBIOS system UUID inside the guest), each NIC's MAC, and
  its VLANs (OVS port tags). A domain's UUID cannot change in place, so ``apply`` undefines
  the (powered-off) domain and defines it again from the same slot with the new identity;
  should that define fail, the old definition is defined back. Refused while it runs.
- inspect: CPUs, memory and NICs (burned-in MACs) from the slot's XML.

libvirt calls block, so they run through :class:`BlockingRunner` (one connection per URI,
reused; a broken one is dropped and opened again). Read-modify-write of one domain's XML
is serialised by a lock per domain. The domains themselves are defined by the VM host's
enrolment (:func:`define_slot`), never by a stamp.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from appliance.drivers._blocking import BlockingRunner
from appliance.drivers.errors import BadSettings, BmcFailure, BmcUnreachable, DriverError, Unsupported
from appliance.drivers.libvirt.domain import Slot, SlotError, parse, render
from appliance.drivers.protocols import (
    BladeFacts,
    Bmc,
    BootMode,
    BootSetting,
    Health,
    HealthState,
    IdentityCaps,
    NicFact,
    PowerAction,
    PowerState,
    VirtualIdentities,
)

DRIVER = "libvirt"
PREFIX = "libvirt+"
T = TypeVar("T")

try:  # the [libvirt] extra; without it every call says how to get it
    import libvirt as _libvirt
except ImportError:  # pragma: no cover - depends on the machine
    _libvirt = None


def split_address(address: str) -> tuple[str, str]:
    """(libvirt URI, domain name) of a blade address; BadSettings naming what is wrong."""
    if not address.startswith(PREFIX):
        raise BadSettings("-", DRIVER, "address", f"{address!r} does not start with {PREFIX}")
    uri, sep, domain = address[len(PREFIX):].partition("#")
    if not sep or not domain:
        raise BadSettings("-", DRIVER, "address", f"{address!r} names no domain (…#DOMAIN)")
    if not urlsplit(uri).scheme:
        raise BadSettings("-", DRIVER, "address", f"{address!r}: {uri!r} is not a libvirt URI")
    return uri, domain


def blade_address(uri: str, domain: str) -> str:
    return f"{PREFIX}{uri}#{domain}"


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ours are raised as DriverErrors."""


class Connections:
    """One open libvirt connection per URI, shared by threads (libvirt connections are thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: dict[str, Any] = {}

    def get(self, uri: str) -> Any:
        if _libvirt is None:
            raise BadSettings("-", DRIVER, "connect", "libvirt-python is not installed "
                              "(pip install 'anvil-appliance[libvirt]'; it builds against libvirt-dev)")
        with self._lock:
            conn = self._conns.get(uri)
            if conn is not None:
                try:
                    if conn.isAlive():
                        return conn
                except _libvirt.libvirtError:
                    pass
                self._drop_locked(uri)
            _libvirt.registerErrorHandler(_quiet, None)
            conn = _libvirt.open(uri)
            self._conns[uri] = conn
            return conn

    def drop(self, uri: str) -> None:
        with self._lock:
            self._drop_locked(uri)

    def _drop_locked(self, uri: str) -> None:
        conn = self._conns.pop(uri, None)
        if conn is not None:
            with contextlib.suppress(Exception):   # a broken connection may fail to close; it is gone anyway
                conn.close()

    def close(self) -> None:
        with self._lock:
            for uri in list(self._conns):
                self._drop_locked(uri)


def _error(exc: Exception, blade: str, op: str, uri: str, domain: str) -> DriverError:
    """libvirt's error → a DriverError: unreachable (retry) or a fatal one that says why."""
    if _libvirt is None or not isinstance(exc, _libvirt.libvirtError):
        if isinstance(exc, SlotError):
            return BadSettings(blade, DRIVER, op, str(exc))
        return BmcFailure(blade, DRIVER, op, f"{type(exc).__name__}: {exc}")
    code = exc.get_error_code()
    msg = exc.get_error_message() or str(exc)
    if code == _libvirt.VIR_ERR_NO_DOMAIN:
        return BadSettings(blade, DRIVER, op, f"{uri} has no domain {domain} (enrol the VM host again)")
    if code in (_libvirt.VIR_ERR_NO_CONNECT, _libvirt.VIR_ERR_RPC, _libvirt.VIR_ERR_INVALID_CONN) or \
            exc.get_error_domain() in (_libvirt.VIR_FROM_RPC, _libvirt.VIR_FROM_REMOTE):
        return BmcUnreachable(blade, DRIVER, op, f"{uri}: {msg}")
    if code == _libvirt.VIR_ERR_AUTH_FAILED:
        from appliance.drivers.errors import BmcAuthFailed

        return BmcAuthFailed(blade, DRIVER, op, f"{uri}: {msg}")
    if code in (_libvirt.VIR_ERR_OPERATION_INVALID, _libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
                _libvirt.VIR_ERR_XML_ERROR):
        return BadSettings(blade, DRIVER, op, msg)
    return BmcFailure(blade, DRIVER, op, msg)


class LibvirtDriver:
    """BMC driver for libvirt domains (see the module docstring)."""

    name = DRIVER

    def __init__(self, *, max_workers: int = 16, per_host: int = 4) -> None:
        self._runner = BlockingRunner(DRIVER, max_workers=max_workers, per_bmc=per_host)
        self._conns = Connections()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ---- plumbing ------------------------------------------------------------------------
    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    async def _call(self, bmc: Bmc, op: str, fn: Callable[[Any, str], T], *, attempts: int = 1) -> T:
        uri, domain = split_address(bmc.address)

        def run() -> T:
            try:
                conn = self._conns.get(uri)
                return fn(conn, domain)
            except DriverError:
                raise
            except Exception as exc:
                err = _error(exc, bmc.blade, op, uri, domain)
                if isinstance(err, BmcUnreachable):
                    self._conns.drop(uri)
                raise err from exc

        return await self._runner.run(run, key=uri, blade=bmc.blade, op=op, timeout=bmc.timeout, attempts=attempts)

    def _slot(self, conn: Any, domain: str) -> tuple[Any, Slot]:
        dom = conn.lookupByName(domain)
        return dom, parse(dom.XMLDesc(_libvirt.VIR_DOMAIN_XML_INACTIVE))

    def _redefine(self, conn: Any, domain: str, change: Callable[[Slot], Slot], *, new_uuid: bool) -> None:
        with self._lock(domain):
            dom, slot = self._slot(conn, domain)
            want = change(slot)
            if want == slot:
                return
            if new_uuid and want.uuid != slot.uuid:
                if dom.isActive():
                    raise BadSettings(domain, DRIVER, "apply", f"domain {domain} is running; power it off before "
                                      "changing its identity")
                old = dom.XMLDesc(_libvirt.VIR_DOMAIN_XML_INACTIVE)
                dom.undefineFlags(_libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)   # the same VM, a new UUID
                try:
                    conn.defineXML(render(want))
                except Exception:
                    conn.defineXML(old)    # never leave the slot undefined
                    raise
                return
            conn.defineXML(render(want))

    # ---- power ----------------------------------------------------------------------------
    async def get_power(self, bmc: Bmc) -> PowerState:
        def run(conn: Any, domain: str) -> PowerState:
            return PowerState.ON if conn.lookupByName(domain).isActive() else PowerState.OFF
        return await self._call(bmc, "get_power", run, attempts=3)

    async def set_power(self, bmc: Bmc, action: PowerAction) -> None:
        def run(conn: Any, domain: str) -> None:
            dom = conn.lookupByName(domain)
            active = bool(dom.isActive())
            if action is PowerAction.ON and not active:
                dom.create()
            elif action is PowerAction.OFF and active:
                dom.destroy()
            elif action is PowerAction.SOFT_OFF and active:
                dom.shutdown()
            elif action is PowerAction.RESET:
                if active:
                    dom.reset(0)
                else:
                    dom.create()
        await self._call(bmc, "set_power", run)

    async def health(self, bmc: Bmc) -> Health:
        def run(conn: Any, domain: str) -> Health:
            state, reason = conn.lookupByName(domain).state()
            if state == _libvirt.VIR_DOMAIN_CRASHED:
                return Health(HealthState.CRITICAL, f"domain crashed (reason {reason})")
            if state == _libvirt.VIR_DOMAIN_PAUSED:
                return Health(HealthState.WARNING, f"domain paused (reason {reason})")
            return Health(HealthState.OK)
        return await self._call(bmc, "health", run, attempts=3)

    # ---- boot -----------------------------------------------------------------------------
    async def set_next_boot(self, bmc: Bmc, setting: BootSetting) -> None:
        def run(conn: Any, domain: str) -> None:
            def change(slot: Slot) -> Slot:
                mode = slot.mode if setting.mode is BootMode.UNKNOWN else setting.mode
                return replace(slot, boot=setting.device, mode=mode)
            self._redefine(conn, domain, change, new_uuid=False)
        await self._call(bmc, "set_next_boot", run, attempts=3)

    async def get_next_boot(self, bmc: Bmc) -> BootSetting:
        def run(conn: Any, domain: str) -> BootSetting:
            slot = self._slot(conn, domain)[1]
            return BootSetting(device=slot.boot, mode=slot.mode, persistent=True)
        return await self._call(bmc, "get_next_boot", run, attempts=3)

    # ---- inspect ----------------------------------------------------------------------------
    async def facts(self, bmc: Bmc) -> BladeFacts:
        def run(conn: Any, domain: str) -> BladeFacts:
            slot = self._slot(conn, domain)[1]
            return BladeFacts(
                cpus=slot.cpus, threads=slot.cpus, memory_gib=slot.memory_mib // 1024,
                nics=tuple(NicFact(name=f"eth{i}", mac=own, current_mac=now)
                           for i, (own, now) in enumerate(zip(slot.own_macs, slot.macs, strict=True))),
                system_uuid=slot.own_uuid, model=f"libvirt domain ({slot.accel})", serial=slot.name)
        return await self._call(bmc, "facts", run, attempts=3)

    # ---- identity -----------------------------------------------------------------------------
    async def capabilities(self, bmc: Bmc) -> IdentityCaps:
        return IdentityCaps(mac=True, uuid=True, vlans=True)

    async def apply(self, bmc: Bmc, ids: VirtualIdentities) -> None:
        if ids.iscsi is not None or ids.fc:
            raise Unsupported(bmc.blade, DRIVER, "apply", "a libvirt domain takes its iSCSI initiator at boot "
                              "(iPXE) and has no FC HBAs")

        def run(conn: Any, domain: str) -> None:
            self._redefine(conn, domain, lambda s: s.with_identity(ids.uuid, ids.macs, ids.vlans), new_uuid=True)
        await self._call(bmc, "apply", run)

    async def read(self, bmc: Bmc) -> VirtualIdentities:
        def run(conn: Any, domain: str) -> VirtualIdentities:
            slot = self._slot(conn, domain)[1]
            return VirtualIdentities(macs=slot.macs, uuid=slot.uuid, vlans=slot.vlans)
        return await self._call(bmc, "read", run, attempts=3)

    async def clear(self, bmc: Bmc) -> None:
        def run(conn: Any, domain: str) -> None:
            self._redefine(conn, domain, lambda s: s.cleared(), new_uuid=True)
        await self._call(bmc, "clear", run)

    async def close(self) -> None:
        self._runner.close()
        self._conns.close()


# ---- slots: what a VM host's enrolment defines (not a Protocol method) -----------------------


def define_slot(uri: str, slot: Slot, *, timeout: float = 30.0) -> str:
    """Define ``slot`` on ``uri`` unless a domain of that name exists already (then it is kept as
    it is, identity and all, if it is an Anvil slot). Blocking; returns "defined" or "kept".
    BadSettings/BmcUnreachable naming the host and the domain."""
    conns = Connections()
    try:
        conn = conns.get(uri)
        try:
            existing = conn.lookupByName(slot.name)
        except Exception as exc:
            if _libvirt is None or not isinstance(exc, _libvirt.libvirtError) or \
                    exc.get_error_code() != _libvirt.VIR_ERR_NO_DOMAIN:
                raise
            existing = None
        if existing is not None:
            parse(existing.XMLDesc(_libvirt.VIR_DOMAIN_XML_INACTIVE))   # SlotError: not ours
            return "kept"
        conn.defineXML(render(slot))
        return "defined"
    except DriverError:
        raise
    except Exception as exc:
        raise _error(exc, slot.host, "define", uri, slot.name) from exc
    finally:
        conns.close()


def undefine_slot(uri: str, name: str) -> str:
    """Undefine Anvil's domain ``name`` on ``uri`` when it is off: "undefined", "gone" (there was
    none). BadSettings while it runs or when it is not an Anvil slot."""
    conns = Connections()
    try:
        conn = conns.get(uri)
        try:
            dom = conn.lookupByName(name)
        except Exception as exc:
            if _libvirt is not None and isinstance(exc, _libvirt.libvirtError) and \
                    exc.get_error_code() == _libvirt.VIR_ERR_NO_DOMAIN:
                return "gone"
            raise
        parse(dom.XMLDesc(_libvirt.VIR_DOMAIN_XML_INACTIVE))
        if dom.isActive():
            raise BadSettings(name, DRIVER, "undefine", f"domain {name} on {uri} is running; power it off first")
        dom.undefineFlags(_libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        return "undefined"
    except DriverError:
        raise
    except Exception as exc:
        raise _error(exc, name, "undefine", uri, name) from exc
    finally:
        conns.close()
