"""One IPMI BMC per lab VM: a pyghmi ``Bmc`` on 127.0.0.1 that drives a QEMU process.

Run (one process per VM, normally through :mod:`appliance.lab.vm`)::

    python -m appliance.lab.vm_bmc --port P --name NAME --netns NS --tap TAP --mac MAC \\
        --run-dir DIR [--user admin --password password] [--uefi] [--memory 256] [--uuid U]

The password may come from ``ANVIL_LAB_BMC_PASSWORD`` instead (argv is visible in ``ps``).

Power is the QEMU process (lab/boot-vm.md §4a): *on* = started
(``ip netns exec NS qemu-system-x86_64 …``) and alive, so a QEMU killed from outside ("the
blade died") or powered off by its guest reads *off*. Off = QMP ``quit`` then SIGTERM,
SIGKILL; soft off = QMP ``system_powerdown`` (the lab image has no ACPI daemon, so it stays
on, as an OS that ignores the button would); reset = QMP ``system_reset``; cycle = off + on.
Reset and cycle need the VM on (else completion code 0xD5, like ``ipmi_emulator``).
QEMU runs without ``-no-reboot``: with it, ``system_reset`` makes QEMU exit.

Boot device: the IPMI boot-flags parameter is kept as sent (valid, persistent and EFI bits
included) and applied when QEMU starts: network → the NIC's iPXE ROM first
(``bootindex=1``); anything else → disk, with the NIC's option ROM removed so SeaBIOS cannot
fall through to PXE (a VM without a disk then stops at "No bootable device"). A
non-persistent setting is consumed by the boot that uses it (the valid bit is cleared, as
real BMCs do). A reset whose wanted device differs from what the running QEMU was started
with restarts QEMU, because QEMU's boot order is fixed at start. UEFI (``--uefi``): OVMF
with a per-VM copy of its variable store; there a "disk" boot may still fall through to
OVMF's own PXE (the firmware's boot order, not ours). ``--plain-pxe`` removes the iPXE ROM
on network boots too, so UEFI VMs take the real PXE → TFTP → iPXE chain.

System GUID: the one QEMU gets with ``-uuid`` (SMBIOS, what iPXE's ``${uuid}`` reports) is
what Get System GUID answers; by default derived from the MAC (:func:`default_uuid`).

State file ``DIR/NAME.state.json`` (replaced atomically after every change, and when QEMU
dies on its own; its first appearance means the BMC port is bound)::

    {"name", "bmc_pid", "port", "mac", "tap", "netns", "uuid", "serial", "power": "on"|"off",
     "pid": QEMU pid or null, "bootdev": "network"|"disk"|"default", "persistent", "uefi_boot",
     "boots": QEMU starts so far, "running_bootdev", "last_exit": QEMU exit status or null}

SIGTERM (or SIGINT) stops QEMU, then the BMC. QEMU also gets SIGKILL if this process dies
(PR_SET_PDEATHSIG), and shares its process group, so ``procs.stop`` of the BMC takes it too.

Workarounds imported from the repo, not copied: the SHA1-only server patch
(``ipmi_emulator._patch_sha1_only``) and pyghmi's socket race fix (``_pyghmi_quirks``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
NOT_IN_PRESENT_STATE = 0xD5
UNSPECIFIED_ERROR = 0xFF
_SUN_PATH_MAX = 107
_PR_SET_PDEATHSIG = 1
_QUIT_WAIT = 3.0
_START_WAIT = 5.0
_WATCH_INTERVAL = 0.2
_BOOT_FLAGS_VALID, _BOOT_FLAGS_PERSISTENT, _BOOT_FLAGS_EFI = 0x80, 0x40, 0x20
_BOOTDEV_PXE = 1


class VmBmcError(RuntimeError):
    """The BMC cannot start (bad arguments, path too long, QEMU missing); the message says which."""


def accel() -> str:
    """``kvm`` only with real hardware virtualisation; this sandbox's /dev/kvm is kvm-pvm (lab/boot-vm.md §2.0)."""
    return "kvm" if Path("/sys/module/kvm_intel").exists() or Path("/sys/module/kvm_amd").exists() else "tcg"


def default_uuid(mac: str) -> str:
    """The VM's SMBIOS UUID / system GUID when none is given: stable per MAC."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"anvil-lab-vm:{mac.lower()}"))


def state_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.state.json"


def read_state(path: Path) -> dict[str, Any]:
    """The state file as a dict (see the module docstring)."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@dataclass(frozen=True, slots=True)
class VmSpec:
    name: str
    netns: str
    tap: str
    mac: str
    run_dir: Path
    memory: int = 256
    uefi: bool = False
    plain_pxe: bool = False
    uuid: str = ""

    @property
    def serial(self) -> Path:
        return self.run_dir / f"{self.name}.serial"

    @property
    def qmp(self) -> Path:
        return self.run_dir / f"{self.name}.qmp"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def vars(self) -> Path:
        return self.run_dir / f"{self.name}.vars.fd"

    @property
    def system_uuid(self) -> str:
        return self.uuid or default_uuid(self.mac)


def qemu_argv(spec: VmSpec, *, network: bool) -> list[str]:
    """The command that powers the VM on, network-first or disk-only (see the module docstring)."""
    nic = f"virtio-net-pci,netdev=n0,mac={spec.mac}"
    if network:
        nic += ",bootindex=1"
    if not network or spec.plain_pxe:
        nic += ",romfile="
    argv = [
        "ip", "netns", "exec", spec.netns,
        "qemu-system-x86_64", "-name", spec.name,
        # graphics=off mirrors SeaBIOS and iPXE output to the serial log (lab/boot-vm.md §2.5)
        "-machine", f"q35,accel={accel()},graphics=off", "-m", str(spec.memory), "-smp", "1",
        "-display", "none", "-monitor", "none", "-nodefaults",
        "-serial", f"file:{spec.serial}",
        "-qmp", f"unix:{spec.qmp},server=on,wait=off",
        "-pidfile", str(spec.pidfile),
        "-uuid", spec.system_uuid,
        "-netdev", f"tap,id=n0,ifname={spec.tap},script=no,downscript=no",
        "-device", nic,
    ]
    if spec.uefi:
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,file={spec.vars}"]
    return argv


def tap_problem(spec: VmSpec) -> str | None:
    """None when the tap exists in the namespace as a bridge port, else why not.

    Checked before every start: QEMU would silently *create* a missing tap (TUNSETIFF),
    leaving the VM on a cable to nowhere.
    """
    try:
        res = subprocess.run(["ip", "-n", spec.netns, "-o", "link", "show", "dev", spec.tap],
                             capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot check tap {spec.tap} in {spec.netns}: {exc}"
    if res.returncode != 0:
        return f"no tap {spec.tap} in namespace {spec.netns}: {res.stderr.strip()}"
    if " master " not in res.stdout:
        return f"tap {spec.tap} in {spec.netns} is not attached to a bridge"
    return None


def qmp_command(path: Path, command: str, timeout: float = 2.0) -> dict[str, Any]:
    """Run one QMP command on QEMU's socket; the reply (``{}`` when QEMU closed on ``quit``)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        stream = sock.makefile("rwb")

        def reply() -> dict[str, Any]:
            while True:  # skip asynchronous events until the answer
                line = stream.readline()
                if not line:
                    return {}
                msg: dict[str, Any] = json.loads(line)
                if "return" in msg or "error" in msg or "QMP" in msg:
                    return msg

        reply()  # greeting
        for cmd in ("qmp_capabilities", command):
            stream.write(json.dumps({"execute": cmd}).encode() + b"\n")
            stream.flush()
            answer = reply()
            if "error" in answer:
                raise OSError(f"QMP {cmd}: {answer['error']}")
        return answer


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the forked child
    # A BMC killed with SIGKILL must not leave a VM burning a shared core.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass(slots=True)
class _State:
    power: str = "off"
    pid: int | None = None
    boots: int = 0
    last_exit: int | None = None
    running_network: bool | None = None
    flags: int = 0
    device: int = 0


@dataclass(slots=True)
class Vm:
    """The VM behind one BMC: QEMU's lifecycle and the state file. Thread-safe.

    Methods return an IPMI completion code (0 = done); only the thread that lives as long
    as the process (pyghmi's listen loop, the main thread) may start QEMU, since
    PR_SET_PDEATHSIG follows the thread that forked.
    """

    spec: VmSpec
    port: int
    st: _State = field(default_factory=_State)
    lock: threading.RLock = field(default_factory=threading.RLock)
    proc: subprocess.Popen[bytes] | None = None
    log_name: str = ""

    # ---- boot flags ---------------------------------------------------------------------

    def wants_network(self) -> bool:
        return bool(self.st.flags & _BOOT_FLAGS_VALID) and (self.st.device >> 2) & 0xF == _BOOTDEV_PXE

    def bootdev(self) -> str:
        if not self.st.flags & _BOOT_FLAGS_VALID:
            return "default"
        return "network" if self.wants_network() else "disk"

    def set_boot_flags(self, flags: int, device: int) -> None:
        with self.lock:
            self.st.flags, self.st.device = flags, device
            self.save()

    def boot_flags(self) -> tuple[int, int]:
        with self.lock:
            return self.st.flags, self.st.device

    def _consume_boot_flags(self) -> bool:
        """Whether this boot is a network boot; a one-time setting is used up here."""
        network = self.wants_network()
        if self.st.flags & _BOOT_FLAGS_VALID and not self.st.flags & _BOOT_FLAGS_PERSISTENT:
            self.st.flags &= ~_BOOT_FLAGS_VALID
        return network

    # ---- QEMU ---------------------------------------------------------------------------

    def alive(self) -> bool:
        with self.lock:
            return self.proc is not None and self.proc.poll() is None

    def _reap(self) -> None:
        """Record a QEMU that has exited (by itself, killed, or stopped by us)."""
        if self.proc is not None and self.proc.poll() is not None:
            self.st.last_exit = self.proc.returncode
            self.proc = None
            self.st.power, self.st.pid, self.st.running_network = "off", None, None
            self.save()

    def _start(self) -> int:
        spec = self.spec
        problem = tap_problem(spec)
        if problem:
            print(f"{self.log_name}: not powering on: {problem}", flush=True)
            return UNSPECIFIED_ERROR
        flags_before = self.st.flags
        network = self._consume_boot_flags()
        spec.qmp.unlink(missing_ok=True)
        spec.pidfile.unlink(missing_ok=True)
        if spec.uefi and not spec.vars.exists():
            shutil.copyfile(OVMF_VARS, spec.vars)
        argv = qemu_argv(spec, network=network)
        log = open(spec.run_dir / f"{spec.name}.qemu.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            log.write(f"--- {time.strftime('%F %T')} {' '.join(argv)}\n".encode())
            log.flush()
            # Same process group as this BMC (procs.stop of the BMC takes QEMU too);
            # `ip netns exec` execs QEMU, so the child's PID is QEMU's.
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=_set_pdeathsig)
        except OSError as exc:
            print(f"{self.log_name}: cannot start QEMU: {exc}", flush=True)
            self.st.flags = flags_before   # a boot that never happened uses nothing up
            return UNSPECIFIED_ERROR
        finally:
            log.close()
        self.st.boots += 1
        self.st.power, self.st.pid, self.st.running_network, self.st.last_exit = "on", self.proc.pid, network, None
        self.save()
        # Wait for QMP (or an early exit: tap missing or busy) so the power-on is honest.
        deadline = time.monotonic() + _START_WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                print(f"{self.log_name}: QEMU exited at start (status {self.proc.returncode}); "
                      f"see {spec.run_dir / (spec.name + '.qemu.log')}", flush=True)
                self.st.flags = flags_before
                self._reap()
                return UNSPECIFIED_ERROR
            if spec.qmp.exists():
                break
            time.sleep(0.02)
        print(f"{self.log_name}: QEMU pid {self.proc.pid} started ({'network' if network else 'disk'} boot)",
              flush=True)
        return 0

    def _stop(self, timeout: float = _QUIT_WAIT) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                qmp_command(self.spec.qmp, "quit", timeout=1.0)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    proc.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        self._reap()

    def _qmp(self, command: str) -> int:
        print(f"{self.log_name}: QMP {command}", flush=True)
        try:
            qmp_command(self.spec.qmp, command)
        except (OSError, ValueError) as exc:
            print(f"{self.log_name}: QMP {command} failed: {exc}", flush=True)
            return UNSPECIFIED_ERROR
        return 0

    # ---- IPMI chassis control ---------------------------------------------------------

    def power_state(self) -> str:
        with self.lock:
            self._reap()
            return self.st.power

    def power_on(self) -> int:
        with self.lock:
            self._reap()
            return 0 if self.proc is not None else self._start()

    def power_off(self) -> int:
        with self.lock:
            if self.proc is not None:
                print(f"{self.log_name}: power off (QEMU pid {self.proc.pid})", flush=True)
            self._stop()
            return 0

    def power_shutdown(self) -> int:
        with self.lock:
            self._reap()
            return self._qmp("system_powerdown") if self.proc is not None else 0

    def power_reset(self) -> int:
        with self.lock:
            self._reap()
            if self.proc is None:
                return NOT_IN_PRESENT_STATE
            if self.wants_network() != self.st.running_network:
                self._stop()
                return self._start()
            self._consume_boot_flags()
            self.save()
            return self._qmp("system_reset")

    def power_cycle(self) -> int:
        with self.lock:
            self._reap()
            if self.proc is None:
                return NOT_IN_PRESENT_STATE
            self._stop()
            return self._start()

    # ---- state file and watcher -----------------------------------------------------

    def save(self) -> None:
        with self.lock:
            spec, st = self.spec, self.st
            data = {
                "name": spec.name, "bmc_pid": os.getpid(), "port": self.port, "mac": spec.mac, "tap": spec.tap,
                "netns": spec.netns, "uuid": spec.system_uuid, "serial": str(spec.serial),
                "power": st.power, "pid": st.pid, "bootdev": self.bootdev(),
                "persistent": bool(st.flags & _BOOT_FLAGS_PERSISTENT), "uefi_boot": bool(st.flags & _BOOT_FLAGS_EFI),
                "boots": st.boots, "last_exit": st.last_exit,
                "running_bootdev": None if st.running_network is None else
                ("network" if st.running_network else "disk"),
                "spec": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(spec).items()},
            }
            path = state_path(spec.run_dir, spec.name)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, path)

    def watch(self, stop: threading.Event) -> None:
        """Notice a QEMU that died on its own (killed, guest poweroff) and record power off."""
        while not stop.wait(_WATCH_INTERVAL):
            with self.lock:
                proc = self.proc
                if proc is not None and proc.poll() is not None:
                    print(f"{self.log_name}: QEMU pid {proc.pid} exited (status {proc.returncode})", flush=True)
                    self._reap()


def _make_bmc_class() -> type:  # pragma: no cover - runs in the BMC process
    from pyghmi.ipmi import bmc as pyghmi_bmc

    class QemuBmc(pyghmi_bmc.Bmc):  # type: ignore[misc]
        def __init__(self, vm: Vm, users: dict[str, str]) -> None:
            super().__init__(users, port=vm.port, address=HOST)
            self.vm = vm

        def get_power_state(self) -> str:
            return self.vm.power_state()

        def power_on(self) -> int:
            return self.vm.power_on()

        def power_off(self) -> int:
            return self.vm.power_off()

        def power_shutdown(self) -> int:
            return self.vm.power_shutdown()

        def power_reset(self) -> int:
            return self.vm.power_reset()

        def power_cycle(self) -> int:
            return self.vm.power_cycle()

        def get_system_guid(self) -> uuid.UUID:
            return uuid.UUID(self.vm.spec.system_uuid)

        # pyghmi's stock boot-option handlers drop the persistent and EFI bits; keep them.
        def get_system_boot_options(self, request: dict[str, Any], session: Any) -> Any:
            if request["data"][0] == 5:
                flags, device = self.vm.boot_flags()
                return session.send_ipmi_response(data=[1, 5, flags, device, 0, 0, 0])
            return session.send_ipmi_response(code=0x80)   # parameter not supported

        def set_system_boot_options(self, request: dict[str, Any], session: Any) -> Any:
            data = request["data"]
            if data[0] in (0, 3, 4):
                return session.send_ipmi_response()
            if data[0] == 5 and len(data) >= 3:
                self.vm.set_boot_flags(data[1], data[2])
                return session.send_ipmi_response()
            return session.send_ipmi_response(code=0xCC)

    return QemuBmc


def _check_paths(spec: VmSpec) -> None:
    if len(str(spec.qmp)) > _SUN_PATH_MAX:
        raise VmBmcError(f"{spec.qmp}: longer than a unix socket path may be ({_SUN_PATH_MAX}); "
                         "use a shorter --run-dir")
    if shutil.which("qemu-system-x86_64") is None:
        raise VmBmcError("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    if spec.uefi and not (OVMF_CODE.is_file() and OVMF_VARS.is_file()):
        raise VmBmcError(f"--uefi needs {OVMF_CODE} and {OVMF_VARS} (apt-get install ovmf)")


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - runs in the BMC process
    ap = argparse.ArgumentParser(prog="python -m appliance.lab.vm_bmc")
    ap.add_argument("--port", required=True, type=int, help="UDP port on 127.0.0.1")
    ap.add_argument("--name", required=True)
    ap.add_argument("--netns", required=True)
    ap.add_argument("--tap", required=True)
    ap.add_argument("--mac", required=True)
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", default=None, help="default: $ANVIL_LAB_BMC_PASSWORD or 'password'")
    ap.add_argument("--uefi", action="store_true")
    ap.add_argument("--plain-pxe", action="store_true", help="no iPXE option ROM on the NIC (UEFI: PXE→TFTP)")
    ap.add_argument("--memory", type=int, default=256, help="MiB")
    ap.add_argument("--uuid", default="", help="system UUID (default: derived from the MAC)")
    args = ap.parse_args(argv)
    password = args.password or os.environ.get("ANVIL_LAB_BMC_PASSWORD", "password")
    spec = VmSpec(name=args.name, netns=args.netns, tap=args.tap, mac=args.mac.lower(),
                  run_dir=args.run_dir.resolve(), memory=args.memory, uefi=args.uefi, plain_pxe=args.plain_pxe,
                  uuid=str(uuid.UUID(args.uuid)) if args.uuid else "")
    try:
        _check_paths(spec)
        problem = tap_problem(spec)
        if problem:
            raise VmBmcError(problem)
    except VmBmcError as exc:
        print(f"vm_bmc: {exc}", file=sys.stderr, flush=True)
        return 2
    spec.run_dir.mkdir(parents=True, exist_ok=True)

    from pyghmi.ipmi import bmc as pyghmi_bmc

    from appliance.drivers.ipmi._pyghmi_quirks import fix_io_race
    from appliance.lab.ipmi_emulator import _patch_sha1_only

    _patch_sha1_only()
    fix_io_race()
    vm = Vm(spec=spec, port=args.port, log_name=f"vm_bmc {spec.name}")

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    stop = threading.Event()
    watcher = threading.Thread(target=vm.watch, args=(stop,), name="qemu-watch", daemon=True)
    try:
        _bmc = _make_bmc_class()(vm, {args.user: password})  # binds the port; referenced until exit
        vm.save()  # also the readiness signal: the port is bound
        watcher.start()
        print(f"vm_bmc {spec.name}: IPMI on {HOST}:{args.port}, tap {spec.tap} in {spec.netns}, "
              f"mac {spec.mac}, uuid {spec.system_uuid}, accel {accel()}", flush=True)
        pyghmi_bmc.Bmc.listen(timeout=0.5)
    except SystemExit:
        pass
    finally:
        stop.set()
        with vm.lock:
            vm._stop(timeout=2.0)
        print(f"vm_bmc {spec.name}: stopped", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
