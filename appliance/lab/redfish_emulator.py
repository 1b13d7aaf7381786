"""A Redfish BMC for the lab: sushy-tools' emulator (fake driver) plus our own resources.

Run as its own process: ``python -m appliance.lab.redfish_emulator --config FILE``
(the sushy-tools config file, see ``write_config``). One process is one BMC serving
N systems under ``/redfish/v1/Systems/<uuid>``.

What this wrapper adds to sushy-tools 2.2 (whose fake driver lacks them):

- **NetworkDeviceFunctions** following DMTF's schema: ``System.NetworkInterfaces`` →
  ``NetworkInterface`` → ``Chassis/<c>/NetworkAdapters/<system>/NetworkDeviceFunctions``:
  one Ethernet function per configured NIC (``PermanentMACAddress`` = the NIC's MAC,
  writable ``MACAddress`` and ``iSCSIBoot``) and one FibreChannel function per ``fc``
  entry (writable ``WWPN``/``WWNN``, permanent ones from config). GET and PATCH; state
  kept in the fake driver's sqlite store, so it persists like power and boot do.
- ``ProcessorSummary.Count``, ``MemorySummary.TotalSystemMemoryGiB``, ``BiosVersion``,
  ``Model`` and ``SerialNumber`` from the system's config (``cpus``, ``memory_gib``,
  ``bios_version``, ``model``, ``serial``).
- ``Boot.BootSourceOverrideEnabled`` is remembered (stock sushy-tools ignores it and
  always reads back ``Continuous``).
- An EventService (``appliance.lab.redfish_events``): subscriptions, and an event to each
  on every real power change.
- A configurable power delay: config key ``ANVIL_POWER_DELAY = (lo, hi)`` seconds
  (uniform); ``None`` keeps sushy-tools' own random 1-11 s.
- A power history: every change of a system's power state, as the emulator applies it,
  appended to ``<state dir>/power-history.jsonl`` (``{"t": epoch s, "system": uuid,
  "from": "Off", "to": "On"}``); a delayed change is stamped with the time it took effect.
  Tests read it (:func:`power_history`) to check what really ran, not what the store says.
- BIOS (``Bios`` with pending ``@Redfish.Settings`` taken at the next power-on, and its
  ``AttributeRegistry``) and firmware (``FirmwareInventory``, ``UpdateService.SimpleUpdate``
  with Tasks): ``appliance.lab.redfish_bios_fw``.
- A lab fault: ``POST /redfish/v1/Systems/<uuid>/Actions/Oem/AnvilLab.HangOs`` (:func:`hang_os`)
  hangs the blade's emulated OS: its heartbeats stop while the BMC still reads On.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.lab import procs, redfish_bios_fw, redfish_events
from appliance.lab.emulated_os import BladeHooks, EmulatedOs

HOST = "127.0.0.1"
POWER_HISTORY = "power-history.jsonl"
UPDATE_HISTORY = redfish_bios_fw.UPDATE_HISTORY
_MAC = re.compile(r"^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$")
_WWN = re.compile(r"^([0-9a-fA-F]{2}:){7}[0-9a-fA-F]{2}$")


# ---- the Python API (test and lab side) --------------------------------------------


def make_systems(count: int, *, seed: int = 1, nics: int = 2, power_state: str = "Off") -> list[dict[str, Any]]:
    """``count`` fake systems with distinct UUIDs, MACs and FC WWNs (``seed`` keeps racks apart)."""
    out = []
    for i in range(1, count + 1):
        hi, lo = (seed >> 8) & 0xFF, seed & 0xFF
        out.append(
            {
                "uuid": f"{seed:08x}-0000-4000-8000-{i:012x}",
                "name": f"blade{seed:02d}-{i:03d}",
                "power_state": power_state,
                "external_notifier": False,
                "nics": [{"mac": f"52:54:{hi:02x}:{lo:02x}:{i % 256:02x}:{n + 1:02x}"} for n in range(nics)],
                "fc": [{"wwpn": f"20:00:00:25:b5:{lo:02x}:{i % 256:02x}:01",
                        "wwnn": f"20:00:00:25:b5:{lo:02x}:{i % 256:02x}:ff"}],
                "cpus": 16,
                "memory_gib": 64,
                "model": "Lab Blade R1",
                "serial": f"SN{seed:04d}{i:05d}",
                "bios_version": "1.0.0",
            }
        )
    return out


@dataclass(slots=True)
class RedfishEmulator:
    """A running emulator: one BMC endpoint serving ``systems``."""

    proc: procs.ProcHandle
    port: int
    systems: list[dict[str, Any]]
    username: str
    password: str
    power_delay: tuple[float, float] | None
    state_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def address(self, system: dict[str, Any] | str) -> str:
        uuid = system if isinstance(system, str) else system["uuid"]
        return f"redfish+http://{HOST}:{self.port}/redfish/v1/Systems/{uuid}"


def write_config(
    dir: Path,
    port: int,
    systems: list[dict[str, Any]],
    *,
    power_delay: tuple[float, float] | None,
    username: str | None,
    password: str | None,
    boot_url: str | None = None,
    update_seconds: float | None = None,
) -> Path:
    """Write the sushy-tools config (and bcrypt htpasswd, rounds=4) into a fresh ``dir``."""
    import bcrypt  # comes with sushy-tools (htpasswd); only needed on the lab side

    dir.mkdir(parents=True, exist_ok=True)
    state = dir / "state"
    state.mkdir(exist_ok=True)
    lines = [
        f"SUSHY_EMULATOR_LISTEN_IP = {HOST!r}",
        f"SUSHY_EMULATOR_LISTEN_PORT = {port!r}",
        "SUSHY_EMULATOR_FAKE_DRIVER = True",
        f"SUSHY_EMULATOR_STATE_DIR = {str(state)!r}",
        "EXTERNAL_NOTIFICATION_URL = 'http://127.0.0.1:9'",
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}",
        f"ANVIL_POWER_DELAY = {tuple(power_delay) if power_delay is not None else None!r}",
        f"ANVIL_BOOT_URL = {boot_url!r}",
        f"ANVIL_UPDATE_SECONDS = {update_seconds!r}",
    ]
    if username is not None and password is not None:
        # rounds=4: bcrypt is checked on every request (rounds=12 costs ~240 ms each).
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (dir / "htpasswd").write_text(f"{username}:{hashed}\n")
        lines.append(f"SUSHY_EMULATOR_AUTH_FILE = {str(dir / 'htpasswd')!r}")
    conf = dir / "emulator.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def start_redfish(
    dir: Path,
    port: int,
    systems: list[dict[str, Any]],
    *,
    power_delay: tuple[float, float] | None = (0.0, 0.2),
    username: str | None = "admin",
    password: str | None = "password",
    ready_timeout: float = 20.0,
    boot_url: str | None = None,
    update_seconds: float | None = None,
) -> RedfishEmulator:
    """Start one emulator process on 127.0.0.1:``port``; returns when it answers.

    ``boot_url``: the boot service the blades' emulated OS boots from (none: blades only power on).
    ``update_seconds``: how long a firmware update task runs (none: the lab's default).
    """
    conf = write_config(dir, port, systems, power_delay=power_delay, username=username, password=password,
                        boot_url=boot_url, update_seconds=update_seconds)
    proc = procs.start(
        [sys.executable, "-m", "appliance.lab.redfish_emulator", "--config", str(conf)],
        dir / "emulator.log",
    )
    emu = RedfishEmulator(
        proc=proc,
        port=port,
        systems=systems,
        username=username or "",
        password=password or "",
        power_delay=power_delay,
        state_dir=dir / "state",
    )
    try:
        procs.wait_until(lambda: _answers(emu), proc, ready_timeout, f"redfish emulator :{port}")
    except BaseException:
        procs.stop(proc)
        raise
    return emu


def _answers(emu: RedfishEmulator) -> bool:
    try:
        with urllib.request.urlopen(f"{emu.base_url}/redfish/v1/", timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def get_json(emu: RedfishEmulator, path: str) -> dict[str, Any]:
    """GET a resource straight from the emulator (tests use it to check what a driver wrote)."""
    req = urllib.request.Request(emu.base_url + path)
    if emu.username:
        token = base64.b64encode(f"{emu.username}:{emu.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def stop(emu: RedfishEmulator, timeout: float = 5.0) -> None:
    procs.stop(emu.proc, timeout)


def hang_os(emu: RedfishEmulator, system: dict[str, Any] | str) -> None:
    """Hang the emulated OS of ``system`` (heartbeats stop, power stays On): a lab fault."""
    uuid = system if isinstance(system, str) else system["uuid"]
    req = urllib.request.Request(f"{emu.base_url}/redfish/v1/Systems/{uuid}/Actions/Oem/AnvilLab.HangOs", data=b"{}",
                                 method="POST", headers={"Content-Type": "application/json"})
    if emu.username:
        token = base64.b64encode(f"{emu.username}:{emu.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=5):
        pass


def _post(emu: RedfishEmulator, path: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(emu.base_url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if emu.username:
        token = base64.b64encode(f"{emu.username}:{emu.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=5):
        pass


def change_bios(emu: RedfishEmulator, system: dict[str, Any] | str, attributes: dict[str, Any]) -> None:
    """Change BIOS attributes in effect at once, behind the appliance's back (a lab fault: drift)."""
    uuid = system if isinstance(system, str) else system["uuid"]
    _post(emu, f"/redfish/v1/Systems/{uuid}/BIOS/Actions/Oem/AnvilLab.ChangeAttributes", {"Attributes": attributes})


def fail_next_update(emu: RedfishEmulator, system: dict[str, Any] | str) -> None:
    """Make the next firmware update of ``system`` fail (a lab fault)."""
    uuid = system if isinstance(system, str) else system["uuid"]
    _post(emu, f"/redfish/v1/Systems/{uuid}/Actions/Oem/AnvilLab.FailNextUpdate", {})


def slow_next_update_answer(emu: RedfishEmulator, system: dict[str, Any] | str, seconds: float) -> None:
    """Make the BMC take ``system``'s next SimpleUpdate at once (the flash runs) but answer the
    POST ``seconds`` later (a lab fault: a client stopped meanwhile never learns the task)."""
    uuid = system if isinstance(system, str) else system["uuid"]
    _post(emu, f"/redfish/v1/Systems/{uuid}/Actions/Oem/AnvilLab.SlowNextUpdateAnswer", {"Seconds": seconds})


@dataclass(frozen=True, slots=True)
class UpdateCall:
    at: float        # epoch seconds, when the emulator took the SimpleUpdate
    system: str      # uuid
    component: str
    image: str


def update_history(emu: RedfishEmulator) -> list[UpdateCall]:
    """Every SimpleUpdate the emulator accepted, oldest first (what a test counts flashes by)."""
    try:
        lines = (emu.state_dir / UPDATE_HISTORY).read_text().splitlines()
    except FileNotFoundError:
        return []
    calls = [json.loads(line) for line in lines if line.strip()]
    return [UpdateCall(float(c["t"]), str(c["system"]), str(c["component"]), str(c["image"])) for c in calls]


@dataclass(frozen=True, slots=True)
class PowerChange:
    at: float        # epoch seconds, when the emulator's state changed
    system: str      # uuid
    was: str
    now: str


def power_history(emu: RedfishEmulator) -> list[PowerChange]:
    """Every power change the emulator applied, oldest first (also after it was stopped).

    A change still pending is in it once something read the system after its time came.
    """
    return read_power_history(emu.state_dir)


def read_power_history(state_dir: Path) -> list[PowerChange]:
    """:func:`power_history` of the emulator whose sushy-tools state directory is ``state_dir``."""
    path = state_dir / POWER_HISTORY
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        if line.strip():
            rec = json.loads(line)
            out.append(PowerChange(float(rec["t"]), str(rec["system"]), str(rec["from"]), str(rec["to"])))
    return sorted(out, key=lambda c: c.at)


# ---- the emulator process ---------------------------------------------------------


def _install(app: Any, fakedriver: Any, sushy_error: Any) -> None:  # pragma: no cover - runs in the child
    import flask

    fake = fakedriver.FakeDriver
    stock_set_power = fake.set_power_state
    stock_update = fake._update
    history_lock = threading.Lock()

    def update_recording_power(self: Any, system: Any, **changes: Any) -> None:
        """Every power state change goes through here: record it (the stored copy is the old state)."""
        record = system if isinstance(system, dict) else self._get(system)
        stored = self._systems.get(record["uuid"]) or {}
        was = stored.get("power_state")
        pending = stored.get("pending_power") or {}
        stock_update(self, system, **changes)
        now = record.get("power_state")
        if was is None or now == was:
            return
        if now == "On":
            came_on = app.config.get("ANVIL_POWER_CAME_ON")
            if came_on is not None:
                came_on(self._get(record["uuid"]))
        applying = "power_state" in changes and "pending_power" in changes and changes["pending_power"] is None
        at = float(pending.get("apply_time") or time.time()) if applying else time.time()
        line = json.dumps({"t": at, "system": record["uuid"], "from": was, "to": now}) + "\n"
        path = Path(app.config["SUSHY_EMULATOR_STATE_DIR"]) / POWER_HISTORY
        with history_lock, open(path, "a") as fh:
            fh.write(line)

    fake._update = update_recording_power

    # The config file is read after this runs (by sushy-tools' main), so look it up on first use.
    oses: dict[str, EmulatedOs] = {}

    def emulated_os_of() -> EmulatedOs | None:
        boot_url = app.config.get("ANVIL_BOOT_URL")
        if not boot_url:
            return None
        if boot_url not in oses:
            oses[boot_url] = EmulatedOs(boot_url)
        return oses[boot_url]

    events = redfish_events.EventService()
    redfish_events.install(app, events)

    def set_power_state(self: Any, identity: str, state: str) -> None:
        was = self._get(identity)["power_state"]
        was_on = was == "On"
        _set_power_state(self, identity, state)
        _announce(self, identity, was)
        emulated_os = emulated_os_of()
        if emulated_os is not None:
            _os_follows_power(emulated_os, self, identity, state, was_on)

    def _announce(driver: Any, identity: str, was: str) -> None:
        """Tell the event subscribers once the power state has really changed."""
        system = driver._get(identity)
        uuid = str(system["uuid"])
        path = f"/redfish/v1/Systems/{uuid}"
        now = system["power_state"]
        if now != was:
            events.power_changed(path, uuid, now)
        pending = system.get("pending_power") or {}
        if not pending:
            return

        def applied() -> None:
            with contextlib.suppress(Exception):
                state = driver._get(identity)["power_state"]   # reading applies the pending change
                if state != now:
                    events.power_changed(path, uuid, state)

        events.after(float(pending.get("apply_time") or 0) - time.time(), applied)

    def _os_follows_power(emulated_os: EmulatedOs, driver: Any, identity: str, state: str, was_on: bool) -> None:
        system = driver._get(identity)
        key = str(system["uuid"])
        if state in ("ForceOff", "GracefulShutdown"):
            emulated_os.power_off(key)
            return
        if "On" in state and was_on:
            return   # already running: a repeated "on" must not reboot it
        pending = system.get("pending_power") or {}
        after = max(0.0, float(pending.get("apply_time") or 0) - time.time())

        def pxe_mac() -> str:
            current = driver._get(identity)
            eth0 = (current.get("anvil_ndf") or {}).get("eth0") or {}
            nics = current.get("nics") or [{}]
            return str(eth0.get("mac") or nics[0].get("mac") or "")

        def power_off() -> None:
            with contextlib.suppress(Exception):
                set_power_state(driver, identity, "ForceOff")

        emulated_os.power_on(key, BladeHooks(
            pxe_mac=pxe_mac,
            powered_on=lambda: driver._get(identity)["power_state"] == "On",
            network_boot=lambda: driver.get_boot_device(identity) == "Pxe",
            power_off=power_off,
            uuid=lambda: key,
        ), after=after)

    def _set_power_state(self: Any, identity: str, state: str) -> None:
        delay = app.config.get("ANVIL_POWER_DELAY")
        if delay is None:
            return stock_set_power(self, identity, state)  # type: ignore[no-any-return]
        system = self._get(identity)
        if "On" in state:
            pending = "On"
        elif state in ("ForceOff", "GracefulShutdown"):
            pending = "Off"
        elif "Restart" in state:
            system["power_state"] = "Off"
            pending = state
        else:
            raise sushy_error.NotSupportedError(f"Power state {state} is not supported")
        if system["power_state"] != pending:
            apply_time = time.time() + random.uniform(float(delay[0]), float(delay[1]))
            self._update(system, pending_power={"power_state": pending, "apply_time": apply_time})
        return None

    def _field(name: str) -> Any:
        def get(self: Any, identity: str) -> Any:
            value = self._get(identity).get(name)
            if value is None:
                raise sushy_error.NotSupportedError(name)
            return value

        return get

    def get_versions(self: Any, identity: str) -> dict[str, str]:
        return {"BiosVersion": self._get(identity).get("bios_version", "1.0.0")}

    def set_versions(self: Any, identity: str, versions: dict[str, str]) -> None:
        if versions.get("BiosVersion"):
            self._update(identity, bios_version=versions["BiosVersion"])

    fake.set_power_state = set_power_state
    fake.get_total_cpus = _field("cpus")
    fake.get_total_memory = _field("memory_gib")
    fake.get_versions = get_versions
    fake.set_versions = set_versions

    def route(rule: str, methods: list[str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        deco: Callable[[Callable[..., Any]], Callable[..., Any]] = app.route(rule, methods=methods)
        return deco

    after_request: Callable[[Callable[..., Any]], Callable[..., Any]] = app.after_request

    systems_re = re.compile(r"^/redfish/v1/Systems/([^/]+)/?$")

    def system_of(identity: str) -> dict[str, Any]:
        try:
            system: dict[str, Any] = app.systems._get(identity)
        except Exception:
            flask.abort(404)
        return system

    def chassis_id() -> str:
        chassis = app.chassis.chassis
        return str(chassis[0]) if chassis else "chassis"

    def ndf_state(system: dict[str, Any]) -> dict[str, dict[str, Any]]:
        state: dict[str, dict[str, Any]] = dict(system.get("anvil_ndf") or {})
        for n, nic in enumerate(system.get("nics") or []):
            state.setdefault(
                f"eth{n}",
                {
                    "kind": "eth",
                    "perm": nic["mac"].lower(),
                    "mac": nic["mac"].lower(),
                    "iscsi": {
                        "InitiatorName": "",
                        "PrimaryTargetName": "",
                        "PrimaryTargetIPAddress": "",
                        "PrimaryTargetTCPPort": 3260,
                        "PrimaryLUN": 0,
                    },
                },
            )
        for n, hba in enumerate(system.get("fc") or []):
            state.setdefault(
                f"fc{n}",
                {"kind": "fc", "pwwpn": hba["wwpn"], "pwwnn": hba["wwnn"], "wwpn": hba["wwpn"], "wwnn": hba["wwnn"]},
            )
        return state

    def adapter_path(uuid: str) -> str:
        return f"/redfish/v1/Chassis/{chassis_id()}/NetworkAdapters/{uuid}"

    def ndf_body(uuid: str, fid: str, st: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "@odata.type": "#NetworkDeviceFunction.v1_9_0.NetworkDeviceFunction",
            "@odata.id": f"{adapter_path(uuid)}/NetworkDeviceFunctions/{fid}",
            "Id": fid,
            "Name": f"Function {fid}",
            "Status": {"State": "Enabled", "Health": "OK"},
            "DeviceEnabled": True,
        }
        if st["kind"] == "eth":
            body["NetDevFuncType"] = "Ethernet"
            body["NetDevFuncCapabilities"] = ["Ethernet", "iSCSI"]
            body["Ethernet"] = {"PermanentMACAddress": st["perm"], "MACAddress": st["mac"], "MTUSize": 1500}
            body["iSCSIBoot"] = dict(st["iscsi"], IPAddressType="IPv4", AuthenticationMethod="None")
            body["BootMode"] = "iSCSI" if st["iscsi"].get("InitiatorName") else "Disabled"
        else:
            body["NetDevFuncType"] = "FibreChannel"
            body["NetDevFuncCapabilities"] = ["FibreChannel"]
            body["FibreChannel"] = {
                "PermanentWWPN": st["pwwpn"],
                "PermanentWWNN": st["pwwnn"],
                "WWPN": st["wwpn"],
                "WWNN": st["wwnn"],
                "WWNSource": "ConfiguredLocally" if (st["wwpn"], st["wwnn"]) != (st["pwwpn"], st["pwwnn"])
                else "ProvidedByFabric",
            }
        return body

    def error(status: int, message: str) -> Any:
        body = {"error": {"code": "Base.1.0.GeneralError", "message": message,
                          "@Message.ExtendedInfo": [{"Message": message}]}}
        return flask.Response(json.dumps(body), status=status, mimetype="application/json")

    def collection(path: str, name: str, links: list[str]) -> Any:
        return flask.jsonify({
            "@odata.id": path, "Name": name,
            "Members@odata.count": len(links), "Members": [{"@odata.id": p} for p in links],
        })

    redfish_bios_fw.install(app, fake, system_of=system_of, error=error)

    @route("/redfish/v1/Systems/<identity>/Actions/Oem/AnvilLab.HangOs", methods=["POST"])
    def anvil_hang_os(identity: str) -> Any:
        """Lab fault: the blade's OS hangs. Its agent stops (no more heartbeats) while the BMC
        still reads On, the failure only heartbeats can see; the next power-on boots afresh."""
        system = system_of(identity)
        emulated_os = emulated_os_of()
        if emulated_os is None:
            return error(409, "this emulator runs no emulated OS (no ANVIL_BOOT_URL)")
        emulated_os.power_off(str(system["uuid"]))
        return flask.Response(status=204)

    @route("/redfish/v1/Systems/<identity>/NetworkInterfaces", methods=["GET"])
    def anvil_network_interfaces(identity: str) -> Any:
        system = system_of(identity)
        path = f"/redfish/v1/Systems/{system['uuid']}/NetworkInterfaces"
        return collection(path, "Network Interfaces", [f"{path}/{system['uuid']}"])

    @route("/redfish/v1/Systems/<identity>/NetworkInterfaces/<nid>", methods=["GET"])
    def anvil_network_interface(identity: str, nid: str) -> Any:
        system = system_of(identity)
        if nid != system["uuid"]:
            flask.abort(404)
        return flask.jsonify({
            "@odata.type": "#NetworkInterface.v1_2_0.NetworkInterface",
            "@odata.id": f"/redfish/v1/Systems/{system['uuid']}/NetworkInterfaces/{nid}",
            "Id": nid, "Name": "Network interface",
            "Links": {"NetworkAdapter": {"@odata.id": adapter_path(system["uuid"])}},
            "NetworkDeviceFunctions": {"@odata.id": f"{adapter_path(system['uuid'])}/NetworkDeviceFunctions"},
        })

    @route("/redfish/v1/Chassis/<cid>/NetworkAdapters", methods=["GET"])
    def anvil_network_adapters(cid: str) -> Any:
        uuids = list(app.systems.systems)
        return collection(f"/redfish/v1/Chassis/{cid}/NetworkAdapters", "Network Adapters",
                          [adapter_path(u) for u in uuids])

    @route("/redfish/v1/Chassis/<cid>/NetworkAdapters/<identity>", methods=["GET"])
    def anvil_network_adapter(cid: str, identity: str) -> Any:
        system = system_of(identity)
        return flask.jsonify({
            "@odata.type": "#NetworkAdapter.v1_9_0.NetworkAdapter",
            "@odata.id": adapter_path(system["uuid"]), "Id": system["uuid"], "Name": "Lab converged adapter",
            "Manufacturer": "Anvil Lab", "Model": "CNA-2x10G-1xFC",
            "NetworkDeviceFunctions": {"@odata.id": f"{adapter_path(system['uuid'])}/NetworkDeviceFunctions"},
        })

    @route("/redfish/v1/Chassis/<cid>/NetworkAdapters/<identity>/NetworkDeviceFunctions", methods=["GET"])
    def anvil_ndfs(cid: str, identity: str) -> Any:
        system = system_of(identity)
        base = f"{adapter_path(system['uuid'])}/NetworkDeviceFunctions"
        return collection(base, "Network Device Functions", [f"{base}/{fid}" for fid in ndf_state(system)])

    @route("/redfish/v1/Chassis/<cid>/NetworkAdapters/<identity>/NetworkDeviceFunctions/<fid>",
               methods=["GET", "PATCH"])
    def anvil_ndf(cid: str, identity: str, fid: str) -> Any:
        system = system_of(identity)
        state = ndf_state(system)
        if fid not in state:
            flask.abort(404)
        st = dict(state[fid])
        if flask.request.method == "GET":
            return flask.jsonify(ndf_body(system["uuid"], fid, st))
        patch = flask.request.get_json(silent=True)
        if not isinstance(patch, dict):
            return error(400, "PATCH body must be a JSON object")
        for key in patch:
            if key not in ("Ethernet", "iSCSIBoot", "FibreChannel", "BootMode", "DeviceEnabled"):
                return error(400, f"property {key} is read-only or unknown")
        if st["kind"] == "eth":
            eth = patch.get("Ethernet") or {}
            if set(eth) - {"MACAddress", "MTUSize"}:
                return error(400, "only Ethernet.MACAddress and MTUSize are writable")
            if "MACAddress" in eth:
                if not isinstance(eth["MACAddress"], str) or not _MAC.match(eth["MACAddress"]):
                    return error(400, f"bad MACAddress {eth['MACAddress']!r}")
                st["mac"] = eth["MACAddress"].lower().replace("-", ":")
            boot = patch.get("iSCSIBoot") or {}
            allowed = set(st["iscsi"]) | {"IPAddressType", "AuthenticationMethod"}
            if set(boot) - allowed:
                return error(400, f"iSCSIBoot: unsupported properties {sorted(set(boot) - allowed)}")
            st["iscsi"] = {**st["iscsi"], **{k: v for k, v in boot.items() if k in st["iscsi"]}}
            if "FibreChannel" in patch:
                return error(400, "not a FibreChannel function")
        else:
            fc = patch.get("FibreChannel") or {}
            if set(fc) - {"WWPN", "WWNN"}:
                return error(400, "only FibreChannel.WWPN and WWNN are writable")
            for key in ("WWPN", "WWNN"):
                if key in fc:
                    if not isinstance(fc[key], str) or not _WWN.match(fc[key]):
                        return error(400, f"bad {key} {fc[key]!r}")
                    st[key.lower()] = fc[key].lower()
            if "Ethernet" in patch or "iSCSIBoot" in patch:
                return error(400, "not an Ethernet function")
        state[fid] = st
        app.systems._update(system["uuid"], anvil_ndf=state)
        return flask.Response(status=204)

    @after_request
    def anvil_system_extras(response: Any) -> Any:
        match = systems_re.match(flask.request.path)
        if not match or response.status_code not in (200, 204):
            return response
        try:
            system = app.systems._get(match.group(1))
        except Exception:
            return response
        if flask.request.method == "PATCH" and response.status_code == 204:
            boot = (flask.request.get_json(silent=True) or {}).get("Boot") or {}
            enabled = boot.get("BootSourceOverrideEnabled")
            if enabled in ("Once", "Continuous", "Disabled"):
                app.systems._update(system["uuid"], anvil_boot_enabled=enabled)
            return response
        if flask.request.method != "GET":
            return response
        try:
            body = json.loads(response.get_data())
        except ValueError:
            return response
        body.setdefault("Boot", {})["BootSourceOverrideEnabled"] = system.get("anvil_boot_enabled", "Continuous")
        body["NetworkInterfaces"] = {"@odata.id": f"/redfish/v1/Systems/{system['uuid']}/NetworkInterfaces"}
        for key, cfg in (("Model", "model"), ("SerialNumber", "serial")):
            if system.get(cfg):
                body[key] = system[cfg]
        response.set_data(json.dumps(body, indent=1))
        return response


def main() -> int:  # pragma: no cover - runs in the child
    from sushy_tools import error as sushy_error
    from sushy_tools.emulator import main as sushy_main
    from sushy_tools.emulator.resources.systems import fakedriver

    # One log line per request would cost more than the request itself.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    _install(sushy_main.app, fakedriver, sushy_error)
    _serve_with_keepalive(sushy_main.app)
    result: int = sushy_main.main()
    return result


def _serve_with_keepalive(app: Any) -> None:  # pragma: no cover - runs in the child
    """Serve plain HTTP with waitress instead of werkzeug's development server.

    Werkzeug answers every request with ``Connection: close`` and a new thread, so each
    Redfish call paid a TCP connect on both sides; real BMCs keep connections alive, and
    so does waitress. TLS (an ``ssl_context``) stays on werkzeug, which supports it.
    """
    import waitress

    flask_run = app.run

    def run(host: str | None = None, port: int | None = None, ssl_context: Any = None, **kw: Any) -> None:
        if ssl_context is not None:
            flask_run(host=host, port=port, ssl_context=ssl_context, **kw)
            return
        logging.getLogger("waitress").setLevel(logging.WARNING)
        waitress.serve(app, host=host or HOST, port=int(port or 8000), threads=8, ident="anvil-lab-redfish",
                       channel_timeout=120, connection_limit=1000, _quiet=True)

    app.run = run


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
