"""Fixtures for the VM lab tests: the lab image, a private boot network with a real
dnsmasq and a stand-in boot HTTP server, QEMU VMs behind their IPMI BMCs, and tgtd.

Everything runs in a namespace named per test (``netns.unique_prefix``), so tests are
safe under pytest-xdist; every process is started here and stopped by PID, the namespace
deleted afterwards. The guest kernel is downloaded once into ``$ANVIL_LAB_CACHE``
(default ``/var/tmp/anvil-lab-cache``) and reused by later runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from appliance.drivers import registry
from appliance.drivers.protocols import Bmc, BmcDriver, Secret
from appliance.lab import bootnet, netns, procs, tgt
from appliance.lab.bootnet import BootNet
from appliance.lab.guest_image import ensure_lab_image
from appliance.lab.vm import LabVm, start_vms, stop_vms

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("ANVIL_LAB_CACHE", "/var/tmp/anvil-lab-cache"))
HTTP_PORT = 8080
BMC_USER, BMC_PASSWORD = "admin", "lab-secret"
SERVER = bootnet.SERVER_IPV4


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the VM lab needs root (network namespaces, tap devices)"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
    return None


requires_vm_lab = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


@dataclass(frozen=True)
class LabImage:
    dir: Path        # images/lab: vmlinuz and initrd.img
    kernel: Path
    initrd: Path


@pytest.fixture(scope="session")
def lab_image(tmp_path_factory: pytest.TempPathFactory) -> LabImage:
    images = tmp_path_factory.mktemp("images")
    kernel, initrd = ensure_lab_image(images, CACHE)
    return LabImage(images / "lab", images / kernel, images / initrd)


@pytest.fixture
def boot_net() -> Iterator[BootNet]:
    ns = netns.unique_prefix("vm") + "lab"
    net = bootnet.create(ns, taps=1)
    try:
        yield net
    finally:
        bootnet.destroy(ns)
        assert not netns.exists(ns)


@pytest.fixture
def lab_vm(tmp_path: Path, boot_net: BootNet) -> Iterator[LabVm]:
    vms = start_vms(tmp_path / "lab", boot_net, 1, username=BMC_USER, password=BMC_PASSWORD)
    try:
        yield vms[0]
    finally:
        stop_vms(vms)
        qemu = vms[0].state().get("pid")
        assert qemu is None or not Path(f"/proc/{qemu}").exists() or _zombie(qemu), "QEMU outlived its BMC"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture
async def ipmi() -> AsyncIterator[BmcDriver]:
    """Anvil's own IPMI driver, as the registry hands it out."""
    driver = registry.create("ipmi")
    try:
        yield driver
    finally:
        await driver.close()


def bmc_of(vm: LabVm) -> Bmc:
    return Bmc(blade=vm.name, address=vm.bmc_address, username=BMC_USER, password=Secret(BMC_PASSWORD), timeout=10)


# ---- boot services in the namespace ---------------------------------------------------------


DNSMASQ_CONF = """\
port=0
user=root
interface={bridge}
bind-interfaces
except-interface=lo
dhcp-range=10.77.0.100,10.77.0.199,255.255.255.0,1h
dhcp-leasefile={run}/dnsmasq.leases
dhcp-option=option:router,{server}
log-dhcp
log-facility={run}/dnsmasq.log
dhcp-match=set:ipxe,175
dhcp-userclass=set:ipxe,iPXE
dhcp-match=set:efi64,option:client-arch,7
dhcp-match=set:efi64,option:client-arch,9
dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe,,{server}
dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi,,{server}
dhcp-boot=tag:ipxe,http://{server}:{port}/boot.ipxe?mac=${{net0/mac}}
dhcp-option=tag:ipxe,encap:175,176,1b
enable-ra
dhcp-range=::,constructor:{bridge},ra-only
"""


@dataclass
class BootRig:
    """dnsmasq (DHCP + RA) and labhttp.py inside the lab namespace."""

    net: BootNet
    run: Path
    script: Path
    record: Path
    token: str
    secret: str
    handles: list[procs.ProcHandle] = field(default_factory=list)

    def set_script(self, text: str) -> None:
        self.script.write_text(text)

    def entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        lines = self.record.read_text().splitlines() if self.record.exists() else []
        found = [json.loads(line) for line in lines if line.strip()]
        return [e for e in found if kind is None or e["kind"] == kind]

    async def wait_for(self, kind: str, timeout: float, what: str,
                       pred: Callable[[dict[str, Any]], bool] = lambda e: True,
                       debug: Callable[[], str] = lambda: "") -> dict[str, Any]:
        """The first recorded request of ``kind`` matching ``pred``; fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.entries(kind):
                if pred(entry):
                    return entry
            for h in self.handles:
                assert h.alive(), f"{h.cmd[4]} died:\n{h.log_tail()}"
            await asyncio.sleep(0.2)
        pytest.fail(f"no {what} within {timeout:g}s; requests seen: "
                    f"{[(e['kind'], e['path'], e['status']) for e in self.entries()]}\n{debug()}")


@pytest.fixture
def boot_rig(tmp_path: Path, boot_net: BootNet, lab_image: LabImage) -> Iterator[BootRig]:
    run = tmp_path / "boot"
    run.mkdir()
    rig = BootRig(net=boot_net, run=run, script=run / "boot.ipxe", record=run / "requests.jsonl",
                  token=f"tok-{os.urandom(6).hex()}", secret=f"hb-{os.urandom(6).hex()}")
    rig.set_script("#!ipxe\necho no script yet\nexit\n")
    conf = run / "dnsmasq.conf"
    conf.write_text(DNSMASQ_CONF.format(bridge=boot_net.bridge, run=run, server=SERVER, port=HTTP_PORT))
    in_ns = ["ip", "netns", "exec", boot_net.netns]
    try:
        dnsmasq = procs.start([*in_ns, "dnsmasq", "-k", "-C", str(conf)], run / "dnsmasq.out")
        rig.handles.append(dnsmasq)
        procs.wait_until(lambda: "DHCP, IP range" in (run / "dnsmasq.log").read_text(), dnsmasq, 10, "dnsmasq")
        http = procs.start([*in_ns, sys.executable, str(HERE / "labhttp.py"), "--bind", SERVER,
                            "--port", str(HTTP_PORT), "--root", str(lab_image.dir), "--script", str(rig.script),
                            "--record", str(rig.record), "--token", rig.token, "--secret", rig.secret,
                            "--interval", "1"], run / "labhttp.out")
        rig.handles.append(http)
        procs.wait_until(rig.record.exists, http, 10, "labhttp")
        yield rig
    finally:
        for h in reversed(rig.handles):
            procs.stop(h)


def image_script(rig: BootRig, *, mode: str, extra: str = "", pre: str = "") -> str:
    """An iPXE script booting the lab image with the agent's command line."""
    base = f"http://{SERVER}:{HTTP_PORT}"
    return (
        "#!ipxe\n"
        "echo lab: booting the lab image for @MAC@\n"
        f"{pre}"
        f"kernel {base}/vmlinuz initrd=initrd.img console=ttyS0 quiet panic=-1 "
        f"anvil.callback={base}/callback anvil.token={rig.token} anvil.mode={mode} "
        f"anvil.profile=acme/web-01 anvil.nic=eth0,@MAC@ {extra}\n"
        f"initrd {base}/initrd.img\n"
        "boot\n"
    )


# ---- tgtd -------------------------------------------------------------------------------------


@dataclass
class IscsiTarget:
    iqn: str
    initiator: str
    backing: Path
    lun: int = 1

    @property
    def root_path(self) -> str:
        # LUN 0 is tgt's controller; the disk is LUN 1 (lab/boot-vm.md §3).
        return f"iscsi:{SERVER}:::{self.lun}:{self.iqn}"


@pytest.fixture
def iscsi_target(tmp_path: Path, boot_net: BootNet) -> Iterator[IscsiTarget]:
    if shutil.which("tgtd") is None or shutil.which("tgtadm") is None:
        pytest.skip("tgt is not installed (apt-get install tgt)")
    target = IscsiTarget(iqn="iqn.2024-01.lab.anvil:disk1", initiator="iqn.2024-01.lab.anvil:vm01",
                         backing=tmp_path / "disk1.img")
    with open(target.backing, "wb") as fh:
        fh.truncate(8 << 20)
    ns = boot_net.netns

    # Its own control port: the default (0) is host-wide, shared with every other tgtd.
    handle = tgt.start(tmp_path, SERVER, 3260, tgt.free_control_port(), ns)

    def tgtadm(*args: str) -> None:
        netns.run(["tgtadm", "-C", str(handle.control_port), "--lld", "iscsi", *args], netns=ns)

    try:
        tgtadm("--op", "new", "--mode", "target", "--tid", "1", "-T", target.iqn)
        tgtadm("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", str(target.lun),
               "-b", str(target.backing))
        tgtadm("--op", "bind", "--mode", "target", "--tid", "1", "--initiator-name", target.initiator)
        yield target
    finally:
        # tgtd refuses "delete system" (EINVAL) while it has targets; tgt.stop then exits it.
        netns.run(["tgtadm", "-C", str(handle.control_port), "--lld", "iscsi", "--op", "delete", "--mode",
                   "target", "--tid", "1", "--force"], netns=ns, check=False)
        tgt.stop(handle)
