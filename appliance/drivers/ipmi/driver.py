"""IPMI BMC driver on pyghmi (``pyghmi.ipmi.command.Command``), in worker threads.

Address: ``ipmi://host[:port]`` (default 623). One persistent session per BMC and
credential is kept and reused; a broken one is dropped and re-created on next use.
Calls on one session are serialised (one lock per session). Logins are capped per
process (``LOGIN_CAP``): pyghmi runs every session of the process on one shared I/O
loop, and ~100 RMCP+ handshakes at once stall it (it retries silently). A login past
the cap waits for a slot within the call's deadline, then fails as BmcBusy.

pyghmi reports failures two ways — a returned ``{'error': …}`` dict and a raised
``IpmiException`` (with ``ipmicode``) — and both go through ``_fail`` here:
bad password / unknown user → BmcAuthFailed; no session, timeouts, socket errors →
BmcUnreachable; completion code 0xC0 (node busy) → BmcBusy; 0xC1 (invalid command) →
Unsupported; 0xCC/0xC9 (invalid data) → BadSettings; others → BmcFailure.

Retries: never for ``set_power`` ("a power-on is never sent twice blindly"; the caller
confirms with ``get_power``). Reads and the boot device (an idempotent write) are
retried with backoff on retryable errors, bounded by the blade's ``Bmc.timeout``.

Limits (stated in capabilities / facts): no virtual identities; standard IPMI does not
list the host's NIC MACs, so ``facts().nics`` is empty — MACs come from enrolment or
from the inventory image.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi import command as ipmi_command

from appliance.drivers._blocking import BlockingRunner
from appliance.drivers.errors import (
    BadSettings,
    BmcAuthFailed,
    BmcBusy,
    BmcFailure,
    BmcUnreachable,
    DriverError,
    Unsupported,
)
from appliance.drivers.ipmi import sel as ipmi_sel
from appliance.drivers.ipmi._pyghmi_quirks import fix_io_race
from appliance.drivers.protocols import (
    BladeFacts,
    Bmc,
    BootDevice,
    BootMode,
    BootSetting,
    Health,
    HealthState,
    IdentityCaps,
    PowerAction,
    PowerState,
    VirtualIdentities,
)

DRIVER = "ipmi"
_POWER = {
    PowerAction.ON: "on",
    PowerAction.OFF: "off",
    PowerAction.SOFT_OFF: "shutdown",
    PowerAction.RESET: "reset",
}
_AUTH_WORDS = ("password", "unauthorized name", "privilege", "invalid user", "authentication")
LOGIN_CAP = 24
# Per process, not per driver: pyghmi's session loop and sockets are process-wide.
_LOGIN_SLOTS = threading.BoundedSemaphore(LOGIN_CAP)
_UNREACHABLE_WORDS = ("timeout", "timed out", "no longer connected", "failed to initialize", "unreachable", "refused")


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, address: str, blade: str) -> Target:
        parts = urlsplit(address)
        if parts.scheme != "ipmi" or not parts.hostname:
            raise BadSettings(blade, DRIVER, "address", f"not an ipmi:// URL: {address!r}")
        try:
            port = parts.port or 623
        except ValueError as exc:
            raise BadSettings(blade, DRIVER, "address", f"bad port in {address!r}") from exc
        return cls(parts.hostname, port)


def _fail(blade: str, op: str, message: object, code: int = 0, *, in_login: bool = False) -> DriverError:
    """Map one pyghmi failure (returned or raised) to the matching DriverError."""
    text = str(message or "").strip()
    low = text.lower()
    if code == 0 and isinstance(message, dict):
        code = int(message.get("code") or 0)
        text = str(message.get("error") or text)
        low = text.lower()
    reason = text or ("no session (BMC did not answer)" if in_login else "unknown IPMI error")
    if code:
        reason = f"{reason} (completion code 0x{code:02x})"
    if any(w in low for w in _AUTH_WORDS):
        return BmcAuthFailed(blade, DRIVER, op, reason)
    if code == 0xC0:
        return BmcBusy(blade, DRIVER, op, reason)
    if code == 0xC1:
        return Unsupported(blade, DRIVER, op, reason)
    if code in (0xC9, 0xCC):
        return BadSettings(blade, DRIVER, op, reason)
    if code == 0xC3 or any(w in low for w in _UNREACHABLE_WORDS) or (in_login and not code):
        return BmcUnreachable(blade, DRIVER, op, reason)
    return BmcFailure(blade, DRIVER, op, reason, retryable=code in (0xC3, 0xFF))


class _Session:
    """One pyghmi Command (= one IPMI session) for one BMC, re-created when broken."""

    def __init__(self, target: Target, username: str, password: str) -> None:
        self.target = target
        self._username = username
        self._password = password
        self.lock = threading.Lock()
        self._cmd: Any = None

    def command(self, blade: str, op: str, deadline: float) -> Any:
        """The logged-in Command; caller holds ``lock``. ``deadline`` is time.monotonic()-based."""
        cmd = self._cmd
        if cmd is not None and getattr(getattr(cmd, "ipmi_session", None), "broken", False):
            cmd = self._cmd = None
        if cmd is None:
            if not _LOGIN_SLOTS.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
                raise BmcBusy(blade, DRIVER, op, f"more than {LOGIN_CAP} IPMI logins in progress in this process")
            try:
                cmd = ipmi_command.Command(
                    bmc=self.target.host,
                    userid=self._username,
                    password=self._password,
                    port=self.target.port,
                    keepalive=True,
                )
            except pyghmi_exc.IpmiException as exc:
                raise _fail(blade, op, exc, getattr(exc, "ipmicode", 0), in_login=True) from exc
            except (OSError, socket.gaierror) as exc:
                raise BmcUnreachable(blade, DRIVER, op, f"socket error: {exc}") from exc
            finally:
                _LOGIN_SLOTS.release()
            self._cmd = cmd
        return cmd

    def drop(self) -> None:
        cmd, self._cmd = self._cmd, None
        if cmd is not None:
            with contextlib.suppress(Exception):  # best effort: the BMC times the session out anyway
                cmd.ipmi_session.logout()

    def call(self, blade: str, op: str, fn: Any, deadline: float) -> Any:
        """Run ``fn(command)`` on the session; errors normalised, a broken session dropped."""
        with self.lock:
            cmd = self.command(blade, op, deadline)
            try:
                result = fn(cmd)
            except pyghmi_exc.IpmiException as exc:
                err = _fail(blade, op, exc, getattr(exc, "ipmicode", 0))
                if isinstance(err, BmcUnreachable):
                    self._cmd = None
                raise err from exc
            except pyghmi_exc.PyghmiException as exc:
                raise BmcFailure(blade, DRIVER, op, str(exc)) from exc
            except (OSError, socket.gaierror) as exc:
                self._cmd = None
                raise BmcUnreachable(blade, DRIVER, op, f"socket error: {exc}") from exc
            if isinstance(result, dict) and "error" in result:
                err = _fail(blade, op, result)
                if isinstance(err, BmcUnreachable):
                    self._cmd = None
                raise err
            return result


class IpmiDriver:
    """BmcDriver over IPMI 2.0 (RMCP+). ``per_bmc`` caps threads waiting on one BMC."""

    name = DRIVER

    def __init__(self, *, max_workers: int = 64, per_bmc: int = 4, read_attempts: int = 3) -> None:
        fix_io_race()
        self._runner = BlockingRunner(DRIVER, max_workers=max_workers, per_bmc=per_bmc)
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, int, str, str], _Session] = {}
        self._sel: dict[tuple[str, int], ipmi_sel.SelCache] = {}
        self._read_attempts = read_attempts

    def _session(self, target: Target, bmc: Bmc) -> _Session:
        key = (target.host, target.port, bmc.username, bmc.password.reveal())
        with self._lock:
            sess = self._sessions.get(key)
            if sess is None:
                sess = self._sessions[key] = _Session(target, bmc.username, bmc.password.reveal())
            return sess

    async def _run(self, bmc: Bmc, op: str, fn: Any, *, retry: bool) -> Any:
        target = Target.parse(bmc.address, bmc.blade)
        deadline = time.monotonic() + bmc.timeout

        def work() -> Any:
            return self._session(target, bmc).call(bmc.blade, op, fn, deadline)

        return await self._runner.run(
            work,
            key=target.endpoint,
            blade=bmc.blade,
            op=op,
            timeout=bmc.timeout,
            attempts=self._read_attempts if retry else 1,
        )

    # ---- power -------------------------------------------------------------

    async def get_power(self, bmc: Bmc) -> PowerState:
        result = await self._run(bmc, "get_power", lambda c: c.get_power(), retry=True)
        state = result.get("powerstate") if isinstance(result, dict) else None
        if state == "on":
            return PowerState.ON
        if state == "off":
            return PowerState.OFF
        raise BmcFailure(bmc.blade, DRIVER, "get_power", f"unknown power state {state!r}", retryable=True)

    async def set_power(self, bmc: Bmc, action: PowerAction) -> None:
        await self._run(bmc, "set_power", lambda c: c.set_power(_POWER[action], wait=False), retry=False)

    async def health(self, bmc: Bmc) -> Health:
        """Chassis status (power, cooling, drive faults) and, where the BMC keeps one, the faults its
        SEL holds asserted (see :mod:`appliance.drivers.ipmi.sel`), in one session turn."""
        target = Target.parse(bmc.address, bmc.blade)
        with self._lock:
            cache = self._sel.setdefault((target.host, target.port), ipmi_sel.SelCache())

        def fn(c: Any) -> Any:
            chassis = c.raw_command(netfn=0, command=1)
            if "error" in chassis:
                return chassis

            def raw(netfn: int, command: int, data: bytes) -> tuple[int, bytes]:
                r = c.raw_command(netfn=netfn, command=command, data=tuple(data))
                code = int(r.get("code") or 0) or (0xFF if "error" in r else 0)
                return code, bytes(r.get("data") or b"")

            try:
                sel = cache.health_now(raw)
            except ipmi_sel.SelUnreadable as exc:
                sel = Health(HealthState.WARNING, f"SEL unreadable: {exc}")
            return {"data": chassis.get("data"), "sel": sel}

        result = await self._run(bmc, "health", fn, retry=True)
        return ipmi_sel.combine(_chassis_health(bytes(result.get("data") or b"")), result.get("sel"))

    # ---- boot --------------------------------------------------------------

    async def set_next_boot(self, bmc: Bmc, setting: BootSetting) -> None:
        dev = "network" if setting.device is BootDevice.NETWORK else "hd"
        uefi = setting.mode is BootMode.UEFI

        def fn(c: Any) -> Any:
            return c.set_bootdev(dev, persist=setting.persistent, uefiboot=uefi)

        await self._run(bmc, "set_next_boot", fn, retry=True)

    async def get_next_boot(self, bmc: Bmc) -> BootSetting:
        result = await self._run(bmc, "get_next_boot", lambda c: c.get_bootdev(), retry=True)
        dev = result.get("bootdev")
        if dev in ("network",):
            device = BootDevice.NETWORK
        elif dev in ("hd", "default", "safe"):
            device = BootDevice.DISK
        else:
            raise BmcFailure(bmc.blade, DRIVER, "get_next_boot", f"boot device {dev!r} is neither network nor disk")
        if dev == "default":
            return BootSetting(BootDevice.DISK, BootMode.UNKNOWN, persistent=False)
        mode = BootMode.UEFI if result.get("uefimode") else BootMode.LEGACY
        return BootSetting(device, mode, persistent=bool(result.get("persistent")))

    # ---- inspect -----------------------------------------------------------

    async def facts(self, bmc: Bmc) -> BladeFacts:
        def fn(c: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            guid = c.raw_command(netfn=6, command=0x37)
            if "error" not in guid and len(guid.get("data") or b"") == 16:
                out["uuid"] = str(uuid.UUID(bytes_le=bytes(guid["data"])))
            devid = c.raw_command(netfn=6, command=1)
            data = bytes(devid.get("data") or b"") if "error" not in devid else b""
            if len(data) >= 4:
                out["bmc"] = f"{data[2] & 0x7F}.{data[3]:02x}"
            return out

        found = await self._run(bmc, "facts", fn, retry=True)
        return BladeFacts(
            system_uuid=found.get("uuid"),
            firmware={"bmc": found["bmc"]} if "bmc" in found else {},
        )

    # ---- identity: not in IPMI -----------------------------------------------

    async def capabilities(self, bmc: Bmc) -> IdentityCaps:
        return IdentityCaps()

    async def apply(self, bmc: Bmc, ids: VirtualIdentities) -> None:
        raise Unsupported(bmc.blade, DRIVER, "apply_identity", "IPMI has no virtual identities; apply at boot")

    async def read(self, bmc: Bmc) -> VirtualIdentities:
        raise Unsupported(bmc.blade, DRIVER, "read_identity", "IPMI has no virtual identities")

    async def clear(self, bmc: Bmc) -> None:
        raise Unsupported(bmc.blade, DRIVER, "clear_identity", "IPMI has no virtual identities")

    async def close(self) -> None:
        self._runner.close()
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for sess in sessions:
            if sess.lock.acquire(blocking=False):  # a thread stuck on a hung BMC keeps its session
                try:
                    sess.drop()
                finally:
                    sess.lock.release()


def _chassis_health(data: bytes) -> Health:
    """Health from Get Chassis Status (IPMI 2.0 §28.2): power/cooling faults are critical."""
    if len(data) < 1:
        return Health(HealthState.WARNING, "empty chassis status")
    power, misc = data[0], data[2] if len(data) > 2 else 0
    critical, warning = [], []
    if power & 0x08:
        critical.append("power fault")
    if power & 0x10:
        critical.append("power control fault")
    if misc & 0x08:
        critical.append("cooling/fan fault")
    if power & 0x02:
        warning.append("power overload")
    if misc & 0x04:
        warning.append("drive fault")
    if misc & 0x01:
        warning.append("chassis intrusion")
    if critical:
        return Health(HealthState.CRITICAL, ", ".join(critical + warning))
    if warning:
        return Health(HealthState.WARNING, ", ".join(warning))
    return Health(HealthState.OK, "")
