"""The emulated rack behind ``anvil lab up|down|status``: real emulator processes, enrolled.

``up`` starts, on 127.0.0.1, one sushy-tools process serving N Redfish systems, one
process serving M IPMI BMCs, and one switch for them: snmpsim, or a private Open vSwitch
in its own namespace with one host namespace per blade NIC (root). With ``--vms N``
(root) it also starts the VM lab (:mod:`appliance.lab.vmlab`): QEMU blades behind pyghmi
BMCs on a bridge in namespace ``anvil-lab``, a tgtd and the boot role in that namespace,
and their own ``linux-bridge`` switch. The processes are detached
(own session, output to a log in the lab directory) so they outlive the command; what
runs where is written to ``lab.json`` (0600: it holds the lab's generated BMC password)
as soon as each piece starts, so ``down`` can always clean up, even after a failed
``up``. Then every blade and the switch are enrolled, each blade NIC cabled to its own
switch port.

``down`` refuses while a lab blade is anything but spare (``--force``: the store forgets the
bindings of the lab's blades, see :mod:`appliance.services.bindings`), then removes the
lab's blades and switch from the inventory, stops every process by PID (checking it is still the
process started, by its start time), SIGTERM then SIGKILL with bounded waits, deletes
the namespaces and run directories, and removes ``lab.json``.

``lab.json`` also carries what other processes need from the lab: ``storage`` (the VM
lab's tgtd control port, which ``anvil serve`` uses when ``[storage] driver`` is empty)
and ``vmlab`` (namespace, boot URL, and each VM's record for ``appliance.lab.vm.LabVm``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.drivers.protocols import Secret
from appliance.errors import AnvilError, Conflict
from appliance.lab import netns, procs
from appliance.progress import NoProgress, Progress

if TYPE_CHECKING:
    from appliance.lab.vmlab import VmLabOptions

log = logging.getLogger(__name__)

LAB_FILE = "lab.json"
SWITCH_NAME = "lab-sw"
CHASSIS = "lab"
USERNAME = "admin"
NICS_PER_BLADE = 2
SHORT_DELAY = (0.0, 0.2)
REALISTIC_DELAY = (1.0, 11.0)   # sushy-tools' own fake-driver delay, applied to the IPMI BMCs too
IPMI_CPUS, IPMI_MEMORY_GIB = 8, 32
# Redfish blades come in two sizes, so placement has a choice to make (and a reason to
# reject): the first half of them small, the rest large. Best-fit ranking then still
# walks them in name order for a profile that fits either.
SMALL, LARGE = (16, 64), (32, 256)
# A switch knows the VLANs it carries (an SNMP switch refuses a port on any other): the lab
# switch carries those of profiles/examples too, so the README's profiles stamp on the demo.
EXAMPLE_VLANS = (40, 300, 310, 311, 312, 500)


def redfish_size(index: int, count: int) -> tuple[int, int]:
    """(CPUs, memory GiB) of Redfish blade ``index`` (1-based) of ``count``."""
    return SMALL if index <= count // 2 or count == 1 else LARGE


class LabError(AnvilError):
    """The lab cannot be brought up or down; the message says why."""


@dataclass(frozen=True, slots=True)
class LabOptions:
    redfish: int = 4
    ipmi: int = 0
    switch: str = "snmp"          # snmp | ovs
    realistic_power: bool = False
    boot_url: str | None = None   # the boot service the blades' emulated OS boots from
    vm_lab: VmLabOptions | None = None   # --vms N: QEMU blades booting through the boot role in a namespace


@dataclass(frozen=True, slots=True)
class LabBlade:
    name: str
    bmc: str
    slot: int
    cpus: int
    memory_gib: int | None
    nics: tuple[tuple[str, str, str], ...]   # (name, mac, switch port)
    facts: dict[str, Any]
    switch: str = SWITCH_NAME


# ---- lab.json --------------------------------------------------------------------------


def lab_file(lab_dir: Path) -> Path:
    return lab_dir / LAB_FILE


def read_state(lab_dir: Path) -> dict[str, Any] | None:
    """The lab's recorded state, or None when no lab is up."""
    try:
        data: dict[str, Any] = json.loads(lab_file(lab_dir).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LabError(f"{lab_file(lab_dir)}: unreadable ({exc}); remove it after stopping its processes") from None
    return data


def _write_state(lab_dir: Path, state: dict[str, Any]) -> None:
    path = lab_file(lab_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=1)
    os.replace(tmp, path)


def _claim(lab_dir: Path) -> None:
    """Create lab.json exclusively; a second ``lab up`` fails here."""
    lab_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lab_file(lab_dir), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Conflict("lab already up (anvil lab down first)") from None
    with os.fdopen(fd, "w") as fh:
        json.dump({"version": 1, "state": "starting"}, fh)


# ---- processes by PID ------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) from /proc/PID/stat, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def pid_alive(pid: int, starttime: int | None) -> bool:
    """True while ``pid`` runs and is still the process started (same start time); zombies are gone."""
    st = _stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return starttime is None or st[1] == starttime


def stop_pid(pid: int, starttime: int | None, timeout: float) -> bool:
    """SIGTERM the process group, SIGKILL after ``timeout`` s; True when it is gone (bounded: ~timeout+2 s)."""
    if not pid_alive(pid, starttime):
        return True
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child (anvil demo)
            if not pid_alive(pid, starttime):
                return True
            time.sleep(0.02)
    return not pid_alive(pid, starttime)


def record_process(name: str, pid: int, log_path: Path, address: str, stop_timeout: float = 3.0,
                   **extra: Any) -> dict[str, Any]:
    """A process's entry in lab.json: enough for another process to stop it by PID, and only it."""
    st = _stat(pid)
    return {"name": name, "pid": pid, "starttime": st[1] if st else None, "address": address,
            "log": str(log_path), "stopTimeout": stop_timeout, **extra}


def _forget_tgtd(p: dict[str, Any]) -> None:
    """A killed tgtd leaves its control socket and lock file behind (appliance.lab.tgt)."""
    from appliance.lab import tgt

    with contextlib.suppress(OSError):
        tgt._forget_control_port(int(p["tgtControlPort"]))


def teardown(state: dict[str, Any]) -> list[str]:
    """Stop the recorded processes (last started first), delete namespaces and run dirs.

    Returns what could not be stopped (empty when all is gone).
    """
    left: list[str] = []
    for p in reversed(state.get("processes", [])):
        if p.get("libvirtRunDir") and pid_alive(int(p["pid"]), p.get("starttime")):
            # A libvirtd that stops leaves its QEMUs running: they go first (by their pid files).
            from appliance.lab.libvirtd import stop_qemus

            left += [f"QEMU of libvirtd (pid {q})" for q in stop_qemus(Path(p["libvirtRunDir"]))]
        # tgtd ignores SIGTERM while it has targets (a short stopTimeout, then SIGKILL).
        tgtd = p.get("tgtControlPort") is not None
        if not stop_pid(int(p["pid"]), p.get("starttime"), float(p.get("stopTimeout", 3.0))):
            left.append(f"{p['name']} (pid {p['pid']})")
        elif tgtd:
            _forget_tgtd(p)
    if state.get("namespaces"):
        netns.delete_all(list(reversed(state["namespaces"])))
    for d in state.get("rundirs", []):
        shutil.rmtree(d, ignore_errors=True)
    return left


# ---- the rack --------------------------------------------------------------------------


def _mac(kind: int, i: int, n: int) -> str:
    return f"52:54:{kind:02x}:00:{i:02x}:{n + 1:02x}"


def up(lab_dir: Path, opts: LabOptions,
       enroll: Callable[[dict[str, Any], list[dict[str, Any]], list[LabBlade]], None],
       progress: Progress | None = None) -> dict[str, Any]:
    """Start the emulators (and the VM lab), record them in lab.json, then
    ``enroll(state, switches, blades)``; each switch is ``{name, address, password}``, and each
    blade's NICs are cabled to ports of ``LabBlade.switch``.

    On any failure (or Ctrl-C) everything started is stopped again and lab.json removed.
    ``progress`` hears of each stage (a terminal's ``lab up`` shows them).
    """
    from appliance.lab import ipmi_emulator, redfish_emulator

    say = progress or NoProgress()

    vms = opts.vm_lab.vms if opts.vm_lab is not None else 0
    if not 0 <= opts.redfish <= 200 or not 0 <= opts.ipmi <= 200:
        raise LabError("the lab takes 0..200 Redfish and 0..200 IPMI blades")
    if opts.redfish + opts.ipmi + vms == 0:
        raise LabError("the lab needs at least one blade (--redfish, --ipmi or --vms)")
    if opts.vm_lab is not None:
        from appliance.lab.vmlab import preflight

        preflight(opts.vm_lab)   # before lab.json exists: a refusal leaves nothing to clean
    if opts.switch not in ("snmp", "ovs"):
        raise LabError(f"unknown lab switch {opts.switch!r} (snmp or ovs)")
    _require_packages(opts)
    if opts.switch == "ovs":
        from appliance.lab.ovs_switch import missing_tools

        reason = missing_tools()
        if reason:
            raise LabError(f"--switch ovs: {reason}")
        if os.geteuid() != 0:
            raise LabError("--switch ovs needs root (network namespaces)")
    _claim(lab_dir)
    password = secrets.token_urlsafe(18)
    state: dict[str, Any] = {
        "version": 1, "state": "starting", "createdAt": datetime.now(UTC).isoformat(),
        "username": USERNAME, "password": password, "switchKind": opts.switch,
        "realisticPower": opts.realistic_power, "bootUrl": opts.boot_url, "processes": [], "namespaces": [],
        "rundirs": [], "switch": None, "blades": [],
    }
    _write_state(lab_dir, state)
    try:
        blades: list[LabBlade] = []
        slot = 0
        if opts.redfish:
            say.stage(f"starting {opts.redfish} Redfish blade(s) (sushy-tools)")
            systems = redfish_emulator.make_systems(opts.redfish, seed=1, nics=NICS_PER_BLADE)
            for i, system in enumerate(systems, 1):
                system["cpus"], system["memory_gib"] = redfish_size(i, len(systems))
            emu = redfish_emulator.start_redfish(
                lab_dir / "redfish", procs.free_tcp_port(), systems,
                power_delay=None if opts.realistic_power else SHORT_DELAY, username=USERNAME, password=password,
                boot_url=opts.boot_url)
            state["processes"].append(record_process("redfish", emu.proc.pid, emu.proc.log_path, emu.base_url))
            _write_state(lab_dir, state)
            for i, system in enumerate(systems, 1):
                slot += 1
                blades.append(LabBlade(
                    name=f"rf-{i:02d}", bmc=emu.address(system), slot=slot, cpus=system["cpus"],
                    memory_gib=system["memory_gib"],
                    nics=tuple((f"eth{n}", nic["mac"], f"r{i:02d}e{n}") for n, nic in enumerate(system["nics"])),
                    facts={"model": system["model"], "serial": system["serial"]}))
        if opts.ipmi:
            say.stage(f"starting {opts.ipmi} IPMI blade(s)")
            ports = [procs.free_udp_port() for _ in range(opts.ipmi)]
            ipmi = ipmi_emulator.start_ipmi(lab_dir / "ipmi", ports,
                                            power_delay=REALISTIC_DELAY if opts.realistic_power else SHORT_DELAY,
                                            username=USERNAME, password=password, boot_url=opts.boot_url,
                                            macs=[_mac(0xFF, i, 0) for i in range(1, opts.ipmi + 1)])
            state["processes"].append(record_process("ipmi", ipmi.proc.pid, ipmi.proc.log_path,
                                                     f"udp://127.0.0.1:{ports[0]}..{ports[-1]}"))
            _write_state(lab_dir, state)
            for i, port in enumerate(ports, 1):
                slot += 1
                blades.append(LabBlade(
                    name=f"ipmi-{i:02d}", bmc=ipmi.address(port), slot=slot, cpus=IPMI_CPUS,
                    memory_gib=IPMI_MEMORY_GIB,
                    nics=tuple((f"eth{n}", _mac(0xFF, i, n), f"i{i:02d}e{n}") for n in range(NICS_PER_BLADE)),
                    facts={"model": "Lab IPMI Blade", "serial": f"IPMI{i:05d}"}))
        switches: list[dict[str, Any]] = []
        if blades:   # a VMs-only lab has no emulated blade to cable to an emulated switch
            say.stage(f"starting the {opts.switch} switch and cabling {len(blades)} blade(s) to it")
            switch = _start_switch(lab_dir, state, opts.switch, blades)
            blades = [_renumber(b, switch["ports"]) for b in blades]
            state["switch"] = SWITCH_NAME
            state["switchAddress"] = switch["address"]
            switches.append({"name": SWITCH_NAME, "address": switch["address"], "password": switch["password"]})
        state["blades"] = [b.name for b in blades]
        _write_state(lab_dir, state)
        if opts.vm_lab is not None:
            from appliance.lab import vmlab

            say.stage(f"starting the VM lab: {opts.vm_lab.vms} QEMU blade(s), the boot role and tgtd in namespace "
                      f"{opts.vm_lab.netns}")
            vm_switch, vm_blades = vmlab.start(lab_dir, state, lambda: _write_state(lab_dir, state), opts.vm_lab,
                                               username=USERNAME, password=password, first_slot=slot + 1)
            switches.append(vm_switch)
            state["vmSwitch"] = vm_switch["name"]
            state["vmSwitchAddress"] = vm_switch["address"]
            blades += vm_blades
            state["blades"] = [b.name for b in blades]
            _write_state(lab_dir, state)
        say.stage(f"enrolling {len(switches)} switch(es) and {len(blades)} blade(s)")
        enroll(state, switches, blades)
        state["state"] = "up"
        _write_state(lab_dir, state)
        return state
    except BaseException as exc:
        say.stage("failed: stopping what was started")
        left = teardown(state)
        if left:
            log.error("lab up failed and these could not be stopped: %s", ", ".join(left))
        else:
            lab_file(lab_dir).unlink(missing_ok=True)
        if isinstance(exc, procs.ProcError | netns.NetnsError):   # the machine's answer, not a bug
            raise LabError(f"lab up failed: {exc}") from exc
        raise


def _require_packages(opts: LabOptions) -> None:
    """The emulators' Python packages come with the [lab] extra: name what is missing before
    anything starts, rather than failing half-way through."""
    from appliance import extras

    needed: list[extras.OptionalPackage] = []
    if opts.redfish:
        needed += extras.LAB_REDFISH
    if (opts.redfish or opts.ipmi) and opts.switch == "snmp":
        needed += extras.LAB_SNMP
    extras.require(needed, needed_for="the emulated rack (anvil lab up, anvil demo)")


def _renumber(blade: LabBlade, ports: dict[str, str]) -> LabBlade:
    nics = tuple((n, mac, ports[key]) for n, mac, key in blade.nics)
    return LabBlade(blade.name, blade.bmc, blade.slot, blade.cpus, blade.memory_gib, nics, blade.facts, blade.switch)


def _start_switch(lab_dir: Path, state: dict[str, Any], kind: str, blades: list[LabBlade]) -> dict[str, Any]:
    """Start the lab switch; returns its address, community and the port of each NIC key."""
    keys = [key for b in blades for _, _, key in b.nics]
    if kind == "snmp":
        from appliance.lab.snmp_switch import DEFAULT_VLANS, SnmpSwitch

        community = "lab" + secrets.token_hex(8)
        sw = SnmpSwitch(lab_dir / "snmp", ports=max(24, len(keys)), vlans=(*DEFAULT_VLANS, *EXAMPLE_VLANS),
                        community=community)
        try:
            sw.start()
        finally:
            if sw.rundir != sw.workdir:
                state["rundirs"].append(str(sw.rundir))
        if sw.pid is None:
            raise LabError("snmpsim did not start")
        state["processes"].append(record_process("snmpsim", sw.pid, sw.workdir / "snmpsim.log", sw.address))
        _write_state(lab_dir, state)
        return {"address": sw.address, "password": community,
                "ports": {key: str(n) for n, key in enumerate(keys, 1)}}
    from appliance.lab.ovs_switch import Host, OvsSwitch

    # Every port starts untagged in VLAN 1, as on the SNMP switch (an OVS port with no tag trunks every VLAN).
    ovs = OvsSwitch(lab_dir / "ovs", hosts=tuple(Host(key, vlan=1) for key in keys),
                    prefix=netns.unique_prefix("av"))
    ovs.up()  # cleans itself up on failure
    for name, handle in zip(("ovsdb-server", "ovs-vswitchd"), ovs.handles, strict=True):
        state["processes"].append(record_process(name, handle.pid, handle.log_path, ovs.db, stop_timeout=0.2))
    state["namespaces"] = list(ovs.namespaces)
    state["rundirs"].append(str(ovs.rundir))
    _write_state(lab_dir, state)
    return {"address": ovs.address, "password": "", "ports": {key: ovs.port(key) for key in keys}}


def down(lab_dir: Path, remove: Callable[[dict[str, Any]], None]) -> list[str] | None:
    """``remove(state)`` drops the lab from the inventory (and may refuse); then stop everything.

    Returns the names of the processes stopped, or None when no lab is up (nothing to do:
    scripts may call ``down`` whatever state they are in). Raises LabError when a process
    cannot be stopped (lab.json is kept then, so ``down`` can be run again).
    """
    state = read_state(lab_dir)
    if state is None:
        return None
    remove(state)
    left = teardown(state)
    if left:
        raise LabError(f"could not stop {', '.join(left)}; lab.json kept, run `anvil lab down` again")
    lab_file(lab_dir).unlink(missing_ok=True)
    return [p["name"] for p in state.get("processes", [])]


def status(lab_dir: Path) -> list[dict[str, Any]]:
    """What runs where: one row per process (and per namespace), with whether it is alive;
    a VM's row also says its power as its BMC last recorded it."""
    state = read_state(lab_dir)
    if state is None:
        return []
    power: dict[str, str] = {}
    if state.get("vmlab"):
        from appliance.lab.vmlab import vm_status

        power = vm_status(state)
    rows = [{"process": p["name"], "pid": p["pid"], "alive": pid_alive(int(p["pid"]), p.get("starttime")),
             "address": p["address"] + (f" (power {power[p['name']]})" if p["name"] in power else "")}
            for p in state.get("processes", [])]
    if state.get("namespaces"):
        existing = set(_netns_names())
        rows += [{"process": "netns", "pid": None, "alive": ns in existing, "address": ns}
                 for ns in state["namespaces"]]
    return rows


def _netns_names() -> list[str]:
    try:
        return [line.split()[0] for line in netns.run(["ip", "netns", "list"]).splitlines() if line.strip()]
    except (netns.NetnsError, OSError):
        return []


def lab_switches(state: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(name, address) of each switch the lab enrolled: the emulated one and the VMs' bridge."""
    out: list[tuple[str, str | None]] = []
    for key in ("switch", "vmSwitch"):
        if state.get(key):
            out.append((str(state[key]), state.get(f"{key}Address")))
    return out


def lab_secret(state: dict[str, Any]) -> Secret:
    return Secret(str(state["password"]))
