"""One appliance VM in QEMU for the image tests: BIOS or UEFI, the ISO as a CD, a data disk and
a seed disk, user-mode networking with 443 forwarded to a loopback port. Stopped by PID."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.lab.procs import free_tcp_port

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def accel() -> str:
    """kvm only with hardware KVM (kvm_intel/kvm_amd) and a usable /dev/kvm; else TCG (kvm_pvm here)."""
    hardware = Path("/sys/module/kvm_intel").exists() or Path("/sys/module/kvm_amd").exists()
    return "kvm" if hardware and os.access("/dev/kvm", os.W_OK) else "tcg"


def seed_disk(path: Path, files: dict[str, str]) -> Path:
    """A small FAT volume labelled ANVIL-SEED holding ``files`` (no loop device: mtools)."""
    subprocess.run(["mkfs.fat", "-C", "-n", "ANVIL-SEED", str(path), "8192"], check=True, capture_output=True)
    for name, text in files.items():
        src = path.parent / f"seed-src-{name}"
        src.write_text(text)
        subprocess.run(["mcopy", "-i", str(path), str(src), f"::/{name}"], check=True, capture_output=True)
    return path


@dataclass
class Vm:
    pid: int
    https_port: int
    serial: Path
    qmp: Path
    started: float

    def serial_text(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def alive(self) -> bool:
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def wait_https(self, path: str, timeout: float) -> float:
        """Seconds from QEMU's start until ``GET path`` answers over HTTPS (any certificate)."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        url = f"https://127.0.0.1:{self.https_port}{path}"
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"QEMU exited; serial console:\n{self.serial_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:
                    if resp.status == 200:
                        return time.monotonic() - self.started
            except (urllib.error.URLError, OSError, ssl.SSLError):
                pass
            time.sleep(2)
        raise AssertionError(f"{url} did not answer in {timeout:.0f} s; serial console:\n{self.serial_text()[-4000:]}")

    def wait_serial(self, marker: str, timeout: float) -> float:
        """Seconds from QEMU's start until ``marker`` is on the serial console."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if marker in self.serial_text():
                return time.monotonic() - self.started
            if not self.alive():
                raise AssertionError(f"QEMU exited; serial console:\n{self.serial_text()[-3000:]}")
            time.sleep(1)
        raise AssertionError(f"{marker!r} not on the serial console in {timeout:.0f} s:\n{self.serial_text()[-4000:]}")

    def stop(self) -> None:
        """QMP quit, then SIGTERM and SIGKILL by PID, each bounded."""
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.qmp))
            f = s.makefile("rw")
            f.readline()
            for cmd in ("qmp_capabilities", "quit"):
                f.write(json.dumps({"execute": cmd}) + "\n")
                f.flush()
                f.readline()
        for sig, wait in ((0, 10.0), (15, 5.0), (9, 5.0)):
            if sig:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
            end = time.monotonic() + wait
            while time.monotonic() < end:
                if not self.alive():
                    return
                time.sleep(0.2)


@contextlib.contextmanager
def boot(run: Path, image: Path, firmware: str, disks: list[Path], media: str = "cdrom",
         mem_mib: int = 1536) -> Iterator[Vm]:
    run.mkdir(parents=True, exist_ok=True)
    port = free_tcp_port()
    argv = ["qemu-system-x86_64", "-machine", f"q35,accel={accel()}", "-smp", "2", "-m", str(mem_mib),
            "-display", "none", "-monitor", "none", "-serial", f"file:{run / 'serial.log'}",
            "-qmp", f"unix:{run / 'qmp.sock'},server=on,wait=off", "-no-reboot",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:443", "-device", "virtio-net-pci,netdev=n0"]
    if firmware == "uefi":
        vars_ = run / "OVMF_VARS.fd"
        shutil.copy(OVMF_VARS, vars_)
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={vars_}"]
    if media == "cdrom":
        argv += ["-drive", f"file={image},media=cdrom,readonly=on,if=ide,index=0"]
    else:
        argv += ["-drive", f"file={image},format=qcow2,if=virtio,snapshot=on"]
    for d in disks:
        argv += ["-drive", f"file={d},format=raw,if=virtio"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=(run / "qemu.out").open("w"),
                            stderr=subprocess.STDOUT)
    vm = Vm(proc.pid, port, run / "serial.log", run / "qmp.sock", time.monotonic())
    try:
        yield vm
    finally:
        vm.stop()
        proc.wait(timeout=10)
