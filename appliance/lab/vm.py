"""Start and stop the VM lab's blades: one :mod:`appliance.lab.vm_bmc` process per VM.

``start_vms(lab_dir, net, count)`` starts VM 1…count (powered off, boot device unset)
and returns a :class:`LabVm` per VM once its BMC port is bound:

=========  =================================================================
name       ``vm01`` …
bmc        ``ipmi://127.0.0.1:PORT`` (UDP port free at start, or as given)
mac        ``52:54:00:77:00:NN`` (NN = the index in hex)
tap        ``tap01`` … in the lab network (:mod:`appliance.lab.bootnet`); also the VM's
           ``linux-bridge`` switch port
pid        the BMC process (also its process group; QEMU runs in that group)
run_dir    ``lab_dir/vms``: ``NAME.state.json``, ``NAME.serial`` (console), ``NAME.qmp``,
           ``NAME.bmc.log``, ``NAME.qemu.log``
=========  =================================================================

``stop_vms`` stops them by PID (SIGTERM to the group, SIGKILL after a deadline), checking
each PID still belongs to the process started (its start time), so a recycled PID is never
signalled. The records are plain data (``LabVm.to_json``/``from_json``) so ``anvil lab
down`` in another process can stop what ``lab up`` started.

Needs root (network namespaces, taps) and qemu-system-x86 on the host; every wait bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance.lab import procs
from appliance.lab.bootnet import BootNet, tap_name
from appliance.lab.rack import LabError
from appliance.lab.vm_bmc import HOST, default_uuid, read_state, state_path

MAC_PREFIX = "52:54:00:77:00"
RUN_SUBDIR = "vms"
PASSWORD_ENV = "ANVIL_LAB_BMC_PASSWORD"


class VmLabError(LabError):
    """A lab VM's BMC could not be started or stopped; the message quotes its log."""


def vm_name(index: int) -> str:
    return f"vm{index:02d}"


def vm_mac(index: int) -> str:
    if not 1 <= index <= 0xFF:
        raise ValueError(f"VM index {index} outside 1..255")
    return f"{MAC_PREFIX}:{index:02x}"


@dataclass(frozen=True, slots=True)
class LabVm:
    name: str
    index: int
    bmc_port: int
    mac: str
    tap: str
    netns: str
    uuid: str
    pid: int
    started: int | None   # BMC start time in clock ticks (/proc/PID/stat), to spot a recycled PID
    run_dir: str
    uefi: bool = False    # OVMF with a ROM-less NIC: its own PXE fetches iPXE over TFTP

    @property
    def bmc_address(self) -> str:
        return f"ipmi://{HOST}:{self.bmc_port}"

    @property
    def state_file(self) -> Path:
        return state_path(Path(self.run_dir), self.name)

    @property
    def serial_log(self) -> Path:
        return Path(self.run_dir) / f"{self.name}.serial"

    def state(self) -> dict[str, Any]:
        """The BMC's state file (power, QEMU pid, boot device…; see appliance.lab.vm_bmc)."""
        return read_state(self.state_file)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabVm:
        return cls(**data)


def _start_ticks(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2:].split()[19])


def _running(pid: int, started: int | None) -> bool:
    """Alive, not a zombie, and (when known) the same process that was started."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0] != "Z" and (started is None or int(fields[19]) == started)


def start_vms(
    lab_dir: Path,
    net: BootNet,
    count: int,
    *,
    first: int = 1,
    ports: Sequence[int] | None = None,
    username: str = "admin",
    password: str = "password",
    memory: int = 256,
    uefi: bool = False,
    ready_timeout: float = 20.0,
) -> list[LabVm]:
    """Start the BMCs of VMs ``first`` … ``first+count-1`` (taps must exist in ``net``); all or nothing.

    ``uefi``: OVMF firmware and no iPXE option ROM on the NIC, so a network boot takes the
    firmware's own PXE → TFTP → iPXE chain, as a real blade with a vendor PXE stack does.
    """
    run_dir = (lab_dir / RUN_SUBDIR).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if ports is not None and len(ports) != count:
        raise VmLabError(f"{count} VMs but {len(ports)} BMC ports given")
    started: list[LabVm] = []
    try:
        for n in range(count):
            index = first + n
            tap = tap_name(index)
            if tap not in net.taps:
                raise VmLabError(f"{net.netns} has no {tap} for VM {index} (create the network with more taps)")
            port = ports[n] if ports is not None else procs.free_udp_port(HOST)
            started.append(_start_one(run_dir, net, index, port, username=username, password=password,
                                      memory=memory, uefi=uefi, ready_timeout=ready_timeout))
    except BaseException:
        stop_vms(started)
        raise
    return started


def _start_one(run_dir: Path, net: BootNet, index: int, port: int, *, username: str, password: str,
               memory: int, uefi: bool, ready_timeout: float) -> LabVm:
    name, mac = vm_name(index), vm_mac(index)
    state = state_path(run_dir, name)
    state.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "appliance.lab.vm_bmc", "--port", str(port), "--name", name,
           "--netns", net.netns, "--tap", tap_name(index), "--mac", mac, "--run-dir", str(run_dir),
           "--user", username, "--memory", str(memory)]
    if uefi:
        cmd += ["--uefi", "--plain-pxe"]
    # The password goes through the environment, not argv (ps shows argv).
    handle = procs.start(cmd, run_dir / f"{name}.bmc.log", env={PASSWORD_ENV: password})
    try:
        procs.wait_until(state.exists, handle, ready_timeout, f"BMC of {name} (port {port})")
    except procs.ProcError as exc:
        procs.stop(handle)
        raise VmLabError(str(exc)) from exc
    return LabVm(name=name, index=index, bmc_port=port, mac=mac, tap=tap_name(index), netns=net.netns,
                 uuid=default_uuid(mac), pid=handle.pid, started=_start_ticks(handle.pid), run_dir=str(run_dir),
                 uefi=uefi)


def stop_vm(vm: LabVm, timeout: float = 5.0) -> None:
    """SIGTERM the BMC's process group (the BMC stops its QEMU), SIGKILL after ``timeout`` s. Bounded."""
    if not _running(vm.pid, vm.started):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(vm.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(vm.pid, os.WNOHANG)   # reap it if it is our child
            if not _running(vm.pid, vm.started):
                return
            time.sleep(0.05)
    raise VmLabError(f"BMC of {vm.name} (pid {vm.pid}) still running after SIGKILL")


def stop_vms(vms: Sequence[LabVm], timeout: float = 5.0) -> None:
    """Stop every VM (each bounded); the first failure is raised after trying them all."""
    errors: list[VmLabError] = []
    for vm in vms:
        try:
            stop_vm(vm, timeout)
        except VmLabError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
