"""A private libvirtd for the VM lab: a real "VM host" whose domains sit on the lab's bridge.

Why inside the lab's namespace: a domain's NIC is a tap that libvirt creates and plugs into
``<source bridge='br0'/>`` itself, in the namespace libvirtd runs in. The lab's bridge lives
in its namespace (DESIGN §7: nothing of 10.77.0.0/24 in the host namespace), so libvirtd
runs there too — the same way the boot role and tgtd do — and its guests boot from the
boot role on that bridge. (Handing libvirt a tap made in the namespace does not work: a
``type='ethernet'`` tap must be in libvirtd's own namespace.)

Why its own directories: as root, libvirtd's paths are fixed (``/run/libvirt``,
``/var/lib/libvirt``, ``/etc/libvirt``…). It runs in a mount namespace of its own
(``unshare --mount``) where the lab's run directory is bind-mounted over each, so its
socket, domain definitions, QEMU pid files and logs are the lab's files, invisible to any
other libvirtd on the machine, and gone with the lab. Its ``qemu.conf`` runs QEMU as root
with no security driver, no cgroups and no per-domain mount namespace (a container has
none of those to give), and logs QEMU's stdio to files (no virtlogd). Debian's libvirt
looks up the ``libvirt-qemu`` user before reading qemu.conf, and only
libvirt-daemon-system creates it: the namespace gets its own /etc/passwd and /etc/group
with that user added, rather than adding a user to the machine.

The client reaches it as ``qemu:///system?socket=RUN/run/libvirt-sock``. QEMU capability
probing (a few seconds under TCG) is cached in a directory kept across labs.

Stopping (by PID only): every QEMU libvirtd started (pid files in RUN/run/qemu), then
libvirtd itself. A libvirtd that is killed leaves its QEMUs running, so they go first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.lab import procs
from appliance.lab.rack import LabError

QEMU_USER = "libvirt-qemu"
_MOUNTS = (("run", "/run/libvirt"), ("lib", "/var/lib/libvirt"), ("cache", "/var/cache/libvirt"),
           ("log", "/var/log/libvirt"), ("etc", "/etc/libvirt"))
_READY_WAIT = 60.0
OVS_RUNDIR = "/run/openvswitch"

LIBVIRTD_CONF = """\
# Written by the Anvil lab; this libvirtd serves the lab only.
unix_sock_group = "root"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:stderr"
"""

QEMU_CONF = """\
# Written by the Anvil lab: QEMU as root, nothing a container cannot give.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"""


class LibvirtdError(LabError):
    """The lab's libvirtd could not be started or stopped; the message says why."""


@dataclass(frozen=True, slots=True)
class Libvirtd:
    pid: int
    run_dir: Path
    netns: str
    log_path: Path

    @property
    def socket(self) -> Path:
        return self.run_dir / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"


def missing() -> str | None:
    """Why no lab libvirtd can start here, or None."""
    if os.geteuid() != 0:
        return "a VM host in the lab needs root (network and mount namespaces)"
    for tool, package in (("libvirtd", "libvirt-daemon libvirt-daemon-driver-qemu"), ("unshare", "util-linux"),
                          ("qemu-system-x86_64", "qemu-system-x86")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    if not Path("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so").exists() and \
            not any(Path("/usr/lib").glob("*/libvirt/connection-driver/libvirt_driver_qemu.so")):
        return "libvirt's QEMU driver is not installed (apt-get install libvirt-daemon-driver-qemu)"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python is not installed (pip install 'anvil-appliance[libvirt]')"
    return None


def _private_users(run_dir: Path) -> tuple[Path, Path]:
    passwd, group = run_dir / "passwd", run_dir / "group"
    users = Path("/etc/passwd").read_text()
    groups = Path("/etc/group").read_text()
    if not any(line.startswith(f"{QEMU_USER}:") for line in users.splitlines()):
        users += f"{QEMU_USER}:x:0:0:libvirt QEMU (lab: root):/nonexistent:/usr/sbin/nologin\n"
    for name in ("kvm", QEMU_USER):
        if not any(line.startswith(f"{name}:") for line in groups.splitlines()):
            groups += f"{name}:x:0:\n"
    passwd.write_text(users)
    group.write_text(groups)
    return passwd, group


def start(run_dir: Path, netns: str, cache_dir: Path | None = None, *, timeout: float = _READY_WAIT,
          ovs_rundir: Path | None = None) -> Libvirtd:
    """Start libvirtd in ``netns`` with its directories under ``run_dir``; returns once its socket
    answers. LibvirtdError (with its log) otherwise; nothing is left running then.

    ``ovs_rundir``: a private Open vSwitch's run directory (appliance.lab.ovs_switch), seen by
    libvirtd as /run/openvswitch, where the ``ovs-vsctl`` it runs to plug a domain's port (and
    set its VLAN tags) looks for the database socket. libvirtd must then run in the namespace
    of that switch's ovs-vswitchd (the userspace datapath opens ports by name there)."""
    why = missing()
    if why:
        raise LibvirtdError(why)
    run_dir = run_dir.resolve()
    for sub, _ in _MOUNTS:
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    (run_dir / "log" / "qemu").mkdir(exist_ok=True)     # QEMU logs and the slots' serial consoles
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "etc" / "libvirtd.conf").write_text(LIBVIRTD_CONF)
    (run_dir / "etc" / "qemu.conf").write_text(QEMU_CONF)
    passwd, group = _private_users(run_dir)
    binds = [(cache_dir if cache_dir is not None and sub == "cache" else run_dir / sub, target)
             for sub, target in _MOUNTS]
    binds += [(passwd, "/etc/passwd"), (group, "/etc/group")]
    targets = [target for _, target in _MOUNTS]
    if ovs_rundir is not None:
        binds.append((ovs_rundir, OVS_RUNDIR))
        targets.append(OVS_RUNDIR)
    # The mount points must exist on the machine (libvirt's own directories; libvirt-daemon-system
    # and openvswitch-switch would have made them); the binds stay inside the private mount namespace.
    for target in targets:
        Path(target).mkdir(parents=True, exist_ok=True)
    script = " && ".join(f"mount --bind '{src}' '{dst}'" for src, dst in binds)
    script += " && exec libvirtd --config /etc/libvirt/libvirtd.conf --pid-file /run/libvirt/libvirtd.pid"
    cmd = ["ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    log_path = run_dir / "libvirtd.log"
    handle = procs.start(cmd, log_path)
    lv = Libvirtd(pid=handle.pid, run_dir=run_dir, netns=netns, log_path=log_path)
    try:
        procs.wait_until(lambda: _answers(lv), handle, timeout, f"libvirtd in {netns}", interval=0.2)
    except procs.ProcError as exc:
        stop(lv)
        raise LibvirtdError(f"{exc}") from None
    return lv


def _answers(lv: Libvirtd) -> bool:
    if not lv.socket.exists():
        return False
    import libvirt

    try:
        conn = libvirt.open(lv.uri)
    except libvirt.libvirtError:
        return False
    try:
        conn.getLibVersion()
        return True
    finally:
        conn.close()


def qemu_pids(run_dir: Path) -> list[int]:
    """PIDs of the QEMUs this libvirtd runs (its pid files), that are QEMU still."""
    out = []
    for pid_file in sorted((run_dir / "run" / "qemu").glob("*.pid")):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            if b"qemu" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
    return out


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat[stat.rindex(")") + 2:].startswith("Z"):
            return True
        time.sleep(0.05)
    return False


def stop_qemus(run_dir: Path, timeout: float = 5.0) -> list[int]:
    """SIGKILL every QEMU of this libvirtd (a VM host losing power); the PIDs that survived."""
    left = []
    for pid in qemu_pids(run_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not _wait_gone(pid, timeout):
            left.append(pid)
    return left


def stop(lv: Libvirtd, timeout: float = 10.0) -> None:
    """Stop its QEMUs, then libvirtd (SIGTERM, SIGKILL after ``timeout``). LibvirtdError if one lives on."""
    left = stop_qemus(lv.run_dir)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 3.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(lv.pid, sig)
        if _wait_gone(lv.pid, wait):
            break
    else:
        left.append(lv.pid)
    if left:
        raise LibvirtdError(f"libvirtd (pid {lv.pid}) or its QEMUs {left} still run")


def record(lv: Libvirtd) -> dict[str, Any]:
    """What lab.json keeps of it (see ``appliance.lab.rack.teardown``)."""
    return {"libvirtRunDir": str(lv.run_dir), "libvirtUri": lv.uri}
