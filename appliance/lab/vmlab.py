"""The VM part of ``anvil lab up --vms N``: real QEMU blades network-booting through Anvil.

:func:`start` builds, in this order, and records each piece in the lab state as soon as
it runs (so ``lab down`` — or a failed ``up`` — can always stop it by PID)::

    namespace NS (default "anvil-lab", DESIGN §7; overridable for tests)
      br0 10.77.0.1/24 + fd77::1/64, taps tap01…tapNN      appliance.lab.bootnet
      (``--subnet 10.78.0.0/24``: 10.78.0.1 and fd78::1 instead, and so below; a second
      appliance's lab on the same machine, DESIGN §8)
    STATE/images/lab/{vmlinuz,initrd.img}                   appliance.lab.guest_image
    tgtd in NS, portal 10.77.0.1:3260, its own control port appliance.lab.tgt
    the boot role in NS:                                     anvil serve --role boot
      ip netns exec NS PYTHON -m appliance --config LAB/vmlab/boot.toml serve --role boot
      boot HTTP 10.77.0.1:8080, TFTP 10.77.0.1:69, dnsmasq on br0 (reservations,
      pool 10.77.0.100-199), its /metrics on 10.77.0.1:9465 (reach it from NS:
      ip netns exec NS curl http://10.77.0.1:9465/metrics), same state directory and
      store as the appliance
    one pyghmi BMC process per VM on 127.0.0.1 (UDP)        appliance.lab.vm
      (the last ``uefi_vms`` of them UEFI: OVMF, no iPXE ROM on the NIC, so they take
      the firmware's PXE → Anvil's TFTP (ipxe.efi) → iPXE → boot HTTP chain)

and returns the VMs as lab blades (``vm-01`` …, one NIC each, cabled to the lab's
``linux-bridge`` switch whose ports are the taps; VLANs ignored, the bridge has none).

The boot role's configuration is written, not inherited: its ``ANVIL_*`` environment is
dropped, because environment variables override the file and a caller's
``ANVIL_BOOT_LISTEN`` (tests set one for the main appliance) would move boot HTTP off
10.77.0.1. The file names the state directory and store URL explicitly and nothing
secret beyond the store URL (it is 0600); the boot role never reads the secrets key.

The main appliance (``anvil serve`` in the host namespace) reaches this tgtd through
the lab state's ``storage`` record (see ``appliance.services.hardware.storage_driver``):
tgtd's control socket is a file in /var/run/tgtd, so tgtadm in the host namespace
reaches a tgtd in NS by its control port.

Needs root (namespaces, taps), qemu-system-x86_64, tgt, dnsmasq; checked before
anything starts. Every wait is bounded.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.lab import bootnet, procs
from appliance.lab.rack import LabBlade, LabError, record_process

if TYPE_CHECKING:
    from appliance.lab.tgt import TgtdHandle

MAX_VMS = 4
MAX_VM_HOST_SLOTS = 2      # DESIGN §7: at most 2 QEMU at once in CI; a slot is one
VM_HOST_NAME = "lab-vmhost"
DEFAULT_CACHE = Path("/var/tmp/anvil-lab-cache")
CACHE_ENV = "ANVIL_LAB_CACHE"
SWITCH_NAME = "lab-vm-sw"
BOOT_HTTP_PORT = 8080
TFTP_PORT = 69
METRICS_PORT = 9465
ISCSI_PORT = 3260
DEFAULT_SUBNET = bootnet.SUBNET
VM_MEMORY_MIB = 256
RUN_SUBDIR = "vmlab"
_NETNS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_BOOT_READY_WAIT = 60.0    # a cold start of the appliance package under a loaded TCG host takes ~5-10 s
_TGT_ATTEMPTS = 3


class VmLabSetupError(LabError):
    """The VM lab cannot be started; the message names the piece and why."""


@dataclass(frozen=True, slots=True)
class VmLabOptions:
    """What the VM lab needs from the appliance's settings (its state directory and store)."""

    vms: int
    netns: str
    state_dir: Path
    store_url: str
    log_level: str = "INFO"
    agent_mode: str = "agent"
    cache_dir: Path | None = None
    uefi_vms: int = 0
    vm_host_slots: int = 0     # > 0: a libvirtd in the namespace too, enrolled as VM host ``lab-vmhost``
    subnet: str = DEFAULT_SUBNET   # the provisioning network; a second appliance's lab uses 10.78.0.0/24


@dataclass(frozen=True, slots=True)
class LabNet:
    """The lab's provisioning addresses, all derived from its /24."""

    server_ipv4: str
    server_ipv6: str
    dhcp_range: tuple[str, str]


def lab_net(subnet: str) -> LabNet:
    """The addresses of the lab on ``subnet`` (an IPv4 /24): the appliance's side is .1, the
    DHCP pool .100-.199, IPv6 fdXX::1/64 for the router advertisement iPXE waits for (fd77::1
    for the default 10.77.0.0/24 and fd78::1 for 10.78.0.0/24, as DESIGN §8 has them)."""
    try:
        net = ipaddress.IPv4Network(subnet)
    except ValueError as exc:
        raise VmLabSetupError(f"--subnet {subnet!r}: not an IPv4 network ({exc})") from None
    if net.prefixlen != 24 or not net.is_private:
        raise VmLabSetupError(f"--subnet {subnet}: the VM lab needs a private /24 such as 10.78.0.0/24")
    base = net.network_address.packed
    # The /24's middle octets name the IPv6 /64 (10.78.0.0 -> fd78::): an octet under 100 written
    # in decimal reads as valid hex and keeps fd77::1 / fd78::1; a larger one is written in hex.
    # Each lab has a namespace of its own, so two labs may even share the address.
    v6 = ipaddress.IPv6Address(f"fd{base[1]:02x}:{base[2]:x}::1" if base[1] > 99 else
                               f"fd{base[1]:02d}:{base[2]:x}::1")
    host = str(net.network_address).rsplit(".", 1)[0]
    return LabNet(f"{host}.1", str(v6), (f"{host}.100", f"{host}.199"))


def cache_dir(opts: VmLabOptions) -> Path:
    if opts.cache_dir is not None:
        return opts.cache_dir
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def check_uefi_vms(vms: int, uefi_vms: int) -> None:
    """Refuse more UEFI VMs than VMs (or a negative count), naming both options."""
    if not 0 <= uefi_vms <= vms:
        raise VmLabSetupError(f"--uefi-vms {uefi_vms}: at most --vms ({vms}) of the VMs can be UEFI")


def check_netns_name(name: str) -> str:
    """``name`` when it can name the lab's namespace (1-15 characters, letters, digits, ``_.-``)."""
    if not _NETNS_NAME.match(name or ""):
        raise VmLabSetupError(f"--netns {name!r}: a namespace name is 1-15 characters of letters, digits, "
                              "'_', '.', '-', starting with a letter or digit")
    return name


def store_unreachable_from_netns(store_url: str) -> str | None:
    """Why the boot role, inside the lab's namespace, could not reach this store; None if it can.

    The namespace has its own loopback and no route out, so only a file (SQLite) or a unix
    socket (PostgreSQL's ``?host=/run/postgresql``) reaches the appliance's store from there.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(store_url)
    except ArgumentError as exc:
        return f"store URL cannot be parsed: {exc}"
    if url.get_backend_name() != "postgresql":
        return None
    hosts = [url.host] if url.host else []
    query_host = url.query.get("host")
    hosts += list(query_host) if isinstance(query_host, tuple) else [query_host] if query_host else []
    tcp = [h for h in hosts if not h.startswith("/")]
    if tcp:
        return (f"the VM lab's boot role runs in its own network namespace and cannot reach PostgreSQL at "
                f"{', '.join(tcp)} over TCP; give [store] url a unix socket instead "
                "(postgresql+psycopg://USER@/DB?host=/run/postgresql)")
    return None


def preflight(opts: VmLabOptions) -> None:
    """Refuse before anything starts: not root, a tool missing, a bad count or namespace name."""
    if not 1 <= opts.vms <= MAX_VMS:
        raise VmLabSetupError(f"--vms {opts.vms}: the VM lab runs 1..{MAX_VMS} VMs")
    check_uefi_vms(opts.vms, opts.uefi_vms)
    check_netns_name(opts.netns)
    lab_net(opts.subnet)
    store_problem = store_unreachable_from_netns(opts.store_url)
    if store_problem:
        raise VmLabSetupError(store_problem)
    if os.geteuid() != 0:
        raise VmLabSetupError("--vms needs root (network namespace, bridge and tap devices)")
    for tool, package in (("ip", "iproute2"), ("qemu-system-x86_64", "qemu-system-x86"), ("tgtd", "tgt"),
                          ("tgtadm", "tgt"), ("dnsmasq", "dnsmasq-base")):
        if shutil.which(tool) is None:
            raise VmLabSetupError(f"--vms needs {tool} (apt-get install {package})")
    if opts.vm_host_slots:
        from appliance.lab import libvirtd

        if not 0 < opts.vm_host_slots <= MAX_VM_HOST_SLOTS:
            raise VmLabSetupError(f"--vm-host-slots {opts.vm_host_slots}: 1..{MAX_VM_HOST_SLOTS}")
        why = libvirtd.missing()
        if why:
            raise VmLabSetupError(f"--vm-host-slots: {why}")
    if opts.uefi_vms:
        from appliance.lab.vm_bmc import OVMF_CODE, OVMF_VARS

        for firmware in (OVMF_CODE, OVMF_VARS):
            if not firmware.is_file():
                raise VmLabSetupError(f"--uefi-vms needs {firmware} (apt-get install ovmf)")
    from appliance.lab import netns

    if netns.exists(opts.netns):
        raise VmLabSetupError(f"network namespace {opts.netns} already exists (another lab is up, or left over: "
                              f"`ip netns del {opts.netns}` once nothing runs in it; or pick --netns)")


def vm_blade_name(index: int) -> str:
    return f"vm-{index:02d}"


def boot_config(opts: VmLabOptions, template_dir: Path | None = None) -> str:
    """The boot role's TOML: everything explicit, so no default or environment can move it."""
    net = lab_net(opts.subnet)
    server = net.server_ipv4
    lines = [
        f"state_dir = {json.dumps(str(opts.state_dir))}",
        f"log_level = {json.dumps(opts.log_level)}",
        "",
        "[store]",
        f"url = {json.dumps(opts.store_url)}",
        "",
        "[boot]",
        f'listen = "{server}:{BOOT_HTTP_PORT}"',
        f'advertise_url = "http://{server}:{BOOT_HTTP_PORT}"',
        f'tftp_listen = "{server}:{TFTP_PORT}"',
        'dhcp = "reservations"',
        f'interface = "{bootnet.BRIDGE}"',
        f'dhcp_range = "{net.dhcp_range[0]},{net.dhcp_range[1]}"',
        f"image_agent_mode = {json.dumps(opts.agent_mode)}",
        f"template_dirs = [{json.dumps(str(template_dir))}]" if template_dir else "",
        "",
        "[metrics]",
        f'boot_listen = "{server}:{METRICS_PORT}"',
        "",
    ]
    return "\n".join(lines)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")}


def _start_detached(cmd: list[str], log_path: Path, env: dict[str, str]) -> procs.ProcHandle:
    """Like ``procs.start`` but with exactly ``env`` (procs.start can only add variables)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)
    return procs.ProcHandle(pid=popen.pid, cmd=tuple(cmd), log_path=log_path, popen=popen)


def start_boot_role(run_dir: Path, opts: VmLabOptions, *, timeout: float = _BOOT_READY_WAIT) -> procs.ProcHandle:
    """Write the boot role's config and start it in the namespace; returns once it is ready."""
    config = run_dir / "boot.toml"
    ready = run_dir / "boot.ready"
    # The lab's own iPXE templates, searched before the built-in ones: a per-profile script
    # goes to RUN/ipxe/profiles/TENANT/NAME.ipxe.j2 (picked up within a second).
    _write_private(config, boot_config(opts, template_dir=run_dir / "ipxe"))
    ready.unlink(missing_ok=True)
    cmd = ["ip", "netns", "exec", opts.netns, sys.executable, "-m", "appliance", "--config", str(config),
           "serve", "--role", "boot", "--ready-file", str(ready)]
    handle = _start_detached(cmd, run_dir / "boot.log", _clean_env())

    def is_ready() -> bool:
        return ready.is_file() and bool(ready.read_text().strip())

    try:
        procs.wait_until(is_ready, handle, timeout, f"boot role in {opts.netns}", interval=0.1)
    except procs.ProcError as exc:
        procs.stop(handle)
        raise VmLabSetupError(str(exc)) from None
    return handle


def _start_tgtd(run_dir: Path, ns: str, server: str) -> TgtdHandle:
    from appliance.lab import tgt

    last: Exception | None = None
    for _ in range(_TGT_ATTEMPTS):   # a parallel lab may take the control port between the check and the start
        port = tgt.free_control_port()
        try:
            return tgt.start(run_dir, server, ISCSI_PORT, port, netns=ns)
        except procs.ProcError as exc:
            last = exc
    raise VmLabSetupError(f"tgtd in {ns} did not start: {last}")


def start(lab_dir: Path, state: dict[str, Any], save: Callable[[], None], opts: VmLabOptions, *,
          username: str, password: str, first_slot: int) -> tuple[dict[str, Any], list[LabBlade]]:
    """Start the VM lab (see the module docstring), recording into ``state`` and calling ``save()``
    after each piece. Returns (the switch to enrol, the VMs as ``rack.LabBlade``).

    On failure the caller tears down what ``state`` records (``rack.teardown``).
    """
    from appliance.lab.guest_image import ensure_lab_image
    from appliance.lab.vm import start_vms, stop_vms

    preflight(opts)
    run_dir = (lab_dir / RUN_SUBDIR).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    addresses = lab_net(opts.subnet)
    try:
        net = bootnet.create(opts.netns, taps=opts.vms, server_ipv4=addresses.server_ipv4,
                             server_ipv6=addresses.server_ipv6)   # all or nothing
    except bootnet.BootNetError as exc:
        raise VmLabSetupError(str(exc)) from None
    # Recorded only once it is ours: a namespace that existed before must never be deleted by us.
    state["namespaces"].append(opts.netns)
    save()
    images_dir = opts.state_dir / "images"
    kernel, initrd = ensure_lab_image(images_dir, cache_dir(opts))
    server = addresses.server_ipv4

    tgtd = _start_tgtd(run_dir, opts.netns, server)
    state["processes"].append(record_process(
        "tgtd", tgtd.pid, tgtd.proc.log_path,
        f"iscsi://{server}:{ISCSI_PORT} in {opts.netns} (control port {tgtd.control_port})", 0.2,
        tgtControlPort=tgtd.control_port))
    state["storage"] = {"driver": "tgt", "controlPort": tgtd.control_port, "netns": opts.netns,
                        "portal": f"{server}:{ISCSI_PORT}"}
    save()

    boot = start_boot_role(run_dir, opts)
    state["processes"].append(record_process(
        "boot", boot.pid, boot.log_path,
        f"http://{server}:{BOOT_HTTP_PORT} tftp {server}:{TFTP_PORT} dhcp {bootnet.BRIDGE} in {opts.netns}", 10.0))
    save()

    bios = opts.vms - opts.uefi_vms
    vms = start_vms(lab_dir, net, bios, username=username, password=password, memory=VM_MEMORY_MIB)
    try:
        vms += start_vms(lab_dir, net, opts.uefi_vms, first=bios + 1, username=username, password=password,
                         memory=VM_MEMORY_MIB, uefi=True)
    except BaseException:
        stop_vms(vms)
        raise
    blades = []
    for i, vm in enumerate(vms):
        state["processes"].append(record_process(
            vm_blade_name(vm.index), vm.pid, Path(vm.run_dir) / f"{vm.name}.bmc.log",
            f"{vm.bmc_address} {vm.tap} {vm.mac}", 5.0))
        blades.append(LabBlade(
            name=vm_blade_name(vm.index), bmc=vm.bmc_address, slot=first_slot + i, cpus=1, memory_gib=None,
            nics=(("eth0", vm.mac, vm.tap),),
            facts={"model": "QEMU lab VM", "serial": f"VM{vm.index:05d}", "uuid": vm.uuid,
                   "memoryMiB": VM_MEMORY_MIB, "firmware": "uefi" if vm.uefi else "bios"},
            switch=SWITCH_NAME))
    if opts.vm_host_slots:
        start_vm_host(run_dir, state, save, opts)
    state["vmlab"] = {
        "netns": opts.netns, "bridge": net.bridge, "server": server, "bootUrl": f"http://{server}:{BOOT_HTTP_PORT}",
        "bootConfig": str(run_dir / "boot.toml"), "templateDir": str(run_dir / "ipxe"),
        "image": {"kernel": kernel, "initrd": initrd},
        "vms": [vm.to_json() for vm in vms],
    }
    save()
    switch = {"name": SWITCH_NAME, "address": net.switch_address(ignore_vlans=True), "password": ""}
    return switch, blades


def start_vm_host(run_dir: Path, state: dict[str, Any], save: Callable[[], None], opts: VmLabOptions) -> None:
    """A libvirtd in the lab's namespace (appliance.lab.libvirtd), recorded so that ``lab down``
    stops its QEMUs and then it, by PID; ``state["vmHost"]`` says how to enrol it."""
    from appliance.lab import libvirtd

    try:
        lv = libvirtd.start(run_dir / "libvirt", opts.netns, cache_dir(opts) / "libvirt")
    except libvirtd.LibvirtdError as exc:
        raise VmLabSetupError(f"the lab's VM host: {exc}") from None
    state["processes"].append(record_process("libvirtd", lv.pid, lv.log_path, f"{lv.uri} in {opts.netns}", 10.0,
                                             **libvirtd.record(lv)))
    state["vmHost"] = {"name": VM_HOST_NAME, "uri": lv.uri, "bridge": bootnet.BRIDGE, "slots": opts.vm_host_slots,
                       "memoryMiB": VM_MEMORY_MIB}
    save()


def vm_status(state: dict[str, Any]) -> dict[str, str]:
    """Blade name → the VM's power as its BMC last recorded it (``on``/``off``/``?``)."""
    from appliance.lab.vm import LabVm

    out: dict[str, str] = {}
    for data in (state.get("vmlab") or {}).get("vms", []):
        try:
            vm = LabVm.from_json(data)
            out[vm_blade_name(vm.index)] = str(vm.state().get("power", "?"))
        except (OSError, ValueError, TypeError):
            out[vm_blade_name(int(data.get("index", 0)))] = "?"
    return out

