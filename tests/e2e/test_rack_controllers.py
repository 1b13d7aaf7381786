"""Two rack controllers in two namespaces, each booting a QEMU VM of its own rack (issue 18, item 2).

The region is a real ``anvil serve`` (HTTPS, self-signed) in the host namespace; each rack is a
namespace of the test's own with its provisioning bridge (rack-a 10.77.0.1/24, rack-b
10.78.0.1/24, DESIGN §8's second-network convention), one QEMU VM on a tap there, and a rack
controller::

    ip netns exec NS python -m appliance --config RACK.toml serve --role boot \\
        --region https://10.79.N.1:PORT --rack-token TOKEN --region-ca REGION/tls/cert.pem

with its own state directory (no store, no boot key, no secrets key: checked), reaching the
region over a veth pair (the management network, 10.79.N.0/30 and .4/30, addresses on the
host's ends only). Its DHCP (dnsmasq), TFTP and boot HTTP serve its rack; scripts, callbacks,
heartbeats, reservations and images come from the region with its rack token.

Checked from outside the appliance: each rack controller's own log and dnsmasq lease file name
its VM and never the other's; the boot signal's DHCP address is on the VM's own rack network;
``anvil rack list`` shows both racks up with their networks and version; killing rack-b's
controller shows it down, and a stamp on its blade then waits at await-boot saying so in
``anvil job show``; once it is back, the blade (reset) boots through it and the stamp ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from appliance.lab import bootnet, netns
from appliance.lab.guest_image import ensure_lab_image
from appliance.lab.vm import LabVm, start_vms, stop_vms
from appliance.store.tables import JobEventRow
from tests.e2e.conftest import CACHE, skip_reason
from tests.integration.engine.rig import Anvil, Result, free_port

pytestmark = [pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""), pytest.mark.slow,
              pytest.mark.xdist_group("vm-lab"), pytest.mark.timeout(900)]

BOOT_TIMEOUT_S = 240
JOB_TIMEOUT_S = BOOT_TIMEOUT_S + 120
KERNEL, INITRD = "lab/vmlinuz", "lab/initrd.img"
BMC_PASSWORD = "rack-lab-" + secrets.token_hex(4)


@dataclass
class Rack:
    name: str
    netns: str
    server: str              # the rack's provisioning address (its bridge)
    mgmt: str                # the rack's end of the management veth
    host_mgmt: str           # the host's end
    vm_index: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    vm: LabVm | None = None

    @property
    def log(self) -> Path:
        return self.dir / "rack.log"

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def leases(self) -> str:
        try:
            return (self.dir / "state" / "run" / "dnsmasq.leases").read_text()
        except OSError:
            return ""


@dataclass
class Region:
    anvil: Anvil
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None
    tenant: str = field(default_factory=lambda: "rk" + os.urandom(3).hex())

    @property
    def log(self) -> Path:
        return self.anvil.tmp / "region.log"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Site:
    region: Region
    racks: dict[str, Rack]

    def anvil(self, *args: str, check: bool = True, timeout: float = 90) -> Result:
        return self.region.anvil(*args, check=check, timeout=timeout)

    def rack_list(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in json.loads(self.anvil("rack", "list", "-o", "json").out)}

    def import_profile(self, name: str, mac: str) -> None:
        doc = {"apiVersion": "anvil/v1", "kind": "ServerProfile",
               "metadata": {"name": name, "tenant": self.region.tenant},
               "spec": {"identity": {"nics": [{"name": "eth0", "mac": mac, "pxe": True}]},
                        "boot": {"mode": "legacy", "source": {"type": "image", "kernel": KERNEL, "initrd": INITRD,
                                                              "cmdline": "console=ttyS0 panic=-1"}}}}
        path = self.region.anvil.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.anvil("profile", "import", str(path))

    def start_assign(self, profile: str, blade: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "appliance", "profile", "assign", profile, "--tenant",
                                 self.region.tenant, "--blade", blade], env=self.region.anvil.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True)

    def release(self, profile: str) -> None:
        self.anvil("profile", "release", profile, "--tenant", self.region.tenant, timeout=JOB_TIMEOUT_S)

    def boot_signal(self, job_id: str) -> dict[str, Any]:
        store = self.region.anvil.store()
        try:
            with store.read() as s:
                rows = s.scalars(select(JobEventRow).where(JobEventRow.job_id == job_id,
                                                           JobEventRow.kind == "boot-signal")).all()
                assert rows, f"job {job_id} has no boot signal"
                return dict(rows[0].data or {})
        finally:
            store.close()


def _finish(proc: subprocess.Popen[str], what: str, site: Site, timeout: float = JOB_TIMEOUT_S) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
        pytest.fail(f"{what} did not end within {timeout:g} s:\n{out}\nregion:\n{site.region.log_tail()}")
    assert proc.returncode == 0 and "succeeded" in out, (
        f"{what} failed ({proc.returncode}):\n{out}\nregion:\n{site.region.log_tail()}\n"
        + "\n".join(f"{r.name}:\n{r.log_text()[-2000:]}" for r in site.racks.values()))
    return out


def _job_id(out: str) -> str:
    m = re.search(r"^job (\S+): ", out, re.MULTILINE)
    assert m, f"no job id in:\n{out}"
    return m.group(1)


def _wait(what: str, check: Any, timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"{what}: not within {timeout:g} s (last: {last!r})")


def _rack_config(rack: Rack) -> str:
    prefix = rack.server.rsplit(".", 1)[0]
    return "\n".join([
        f"state_dir = {json.dumps(str(rack.dir / 'state'))}",
        'log_level = "INFO"',
        "",
        "[boot]",
        f'listen = "{rack.server}:8080"',
        f'advertise_url = "http://{rack.server}:8080"',
        f'tftp_listen = "{rack.server}:69"',
        'dhcp = "reservations"',
        f'interface = "{bootnet.BRIDGE}"',
        f'dhcp_range = "{prefix}.100,{prefix}.199"',
        'image_agent_mode = "agent"',
        "",
    ])


def start_rack(site: Site, rack: Rack, timeout: float = 60) -> None:
    """The rack controller in its namespace, with only its own config, token and the region's cert."""
    assert rack.proc is None or rack.proc.poll() is not None
    config = rack.dir / "rack.toml"
    config.write_text(_rack_config(rack))
    ready = rack.dir / "ready"
    ready.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")}
    cmd = ["ip", "netns", "exec", rack.netns, sys.executable, "-m", "appliance", "--config", str(config), "serve",
           "--role", "boot", "--region", site.region.url, "--rack-token", str(rack.dir / "rack.token"),
           "--region-ca", str(site.region.anvil.state_dir / "tls" / "cert.pem"), "--ready-file", str(ready)]
    with open(rack.log, "ab") as log:
        rack.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
    deadline = time.monotonic() + timeout
    while not (ready.is_file() and ready.read_text().strip()):
        if rack.proc.poll() is not None or time.monotonic() > deadline:
            stop_rack(rack)
            pytest.fail(f"rack controller {rack.name} did not start:\n{rack.log_text()[-3000:]}")
        time.sleep(0.1)


def stop_rack(rack: Rack, sig: int = signal.SIGTERM) -> None:
    """Stop the rack controller's process group (it and its dnsmasq) by its PID; bounded."""
    proc = rack.proc
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def start_region(region: Region, timeout: float = 60) -> None:
    ready = region.anvil.tmp / "region.ready"
    ready.unlink(missing_ok=True)
    with open(region.log, "ab") as log:
        region.proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--ready-file", str(ready)],
                                       env=region.anvil.env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
    deadline = time.monotonic() + timeout
    while not (ready.is_file() and ready.read_text().strip()):
        if region.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the region did not start:\n{region.log_tail()}")
        time.sleep(0.1)
    region.url = ready.read_text().strip()
    assert region.url.startswith("https://"), region.url


def stop_region(region: Region) -> None:
    proc = region.proc
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    anvil = Anvil(tmp_path_factory.mktemp("rk"))
    prefix = netns.unique_prefix("rk")
    third = 1 + secrets.randbelow(250)
    mgmt = f"10.79.{third}"
    racks = {
        "rack-a": Rack("rack-a", prefix + "a", "10.77.0.1", f"{mgmt}.2", f"{mgmt}.1", 1, anvil.tmp / "rack-a"),
        "rack-b": Rack("rack-b", prefix + "b", "10.78.0.1", f"{mgmt}.6", f"{mgmt}.5", 2, anvil.tmp / "rack-b"),
    }
    # The region's API on the host's end of rack-a's management veth (rack-b reaches it by a route).
    anvil.env.update({"ANVIL_API_LISTEN": f"{mgmt}.1:{free_port()}", "ANVIL_ENGINE_BOOT_TIMEOUT": str(BOOT_TIMEOUT_S),
                      "ANVIL_LAB_CACHE": str(CACHE), "ANVIL_BMC_PASSWORD": BMC_PASSWORD})
    region = Region(anvil)
    made: list[str] = []
    host_links: list[str] = []
    vms: list[LabVm] = []
    site = Site(region, racks)
    try:
        for i, rack in enumerate(racks.values()):
            rack.dir.mkdir(parents=True)
            v6 = "fd77::1" if rack.server.startswith("10.77.") else "fd78::1"
            bootnet.create(rack.netns, taps=rack.vm_index, server_ipv4=rack.server, server_ipv6=v6)
            made.append(rack.netns)
            host_if, rack_if = f"{prefix}h{i}", f"{prefix}m{i}"
            netns.run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", rack_if, "netns", rack.netns])
            host_links.append(host_if)
            netns.run(["ip", "addr", "add", f"{rack.host_mgmt}/30", "dev", host_if])
            netns.run(["ip", "link", "set", host_if, "up"])
            netns.add_address(rack.netns, rack_if, f"{rack.mgmt}/30")
            netns.link_set(rack.netns, rack_if, up=True)
            if rack.host_mgmt != f"{mgmt}.1":
                netns.run(["ip", "-n", rack.netns, "route", "add", f"{mgmt}.1/32", "via", rack.host_mgmt])
        ensure_lab_image(anvil.state_dir / "images", CACHE)
        start_region(region)
        for rack in racks.values():
            net = rack.server.rsplit(".", 1)[0] + ".0/24"
            anvil("rack", "add", rack.name, "--network", net, "--token-file", str(rack.dir / "rack.token"))
            net_rec = bootnet.BootNet(rack.netns, bootnet.BRIDGE, tuple(bootnet.tap_name(i)
                                                                        for i in range(1, rack.vm_index + 1)))
            vm = start_vms(rack.dir / "lab", net_rec, 1, first=rack.vm_index, username="admin",
                           password=BMC_PASSWORD)[0]
            vms.append(vm)
            rack.vm = vm
            anvil("blade", "enroll", f"vm-{rack.name[-1]}", "--bmc", vm.bmc_address, "--username", "admin",
                  "--nic", f"eth0={vm.mac}", "--cpus", "1", "--rack", rack.name)
            start_rack(site, rack)
        yield site
    finally:
        try:
            for rack in racks.values():
                stop_rack(rack)
            stop_region(region)
            stop_vms(vms)
        finally:
            for link in host_links:
                netns.run(["ip", "link", "del", link], check=False)
            netns.delete_all(made)
    for ns in made:
        assert not netns.exists(ns), f"namespace {ns} outlived the test"


def test_two_rack_controllers_each_boot_their_own_vm(site: Site) -> None:
    a, b = site.racks["rack-a"], site.racks["rack-b"]
    assert a.vm is not None and b.vm is not None
    racks = site.rack_list()
    for rack, net in ((a, "10.77.0.0/24"), (b, "10.78.0.0/24")):
        row = racks[rack.name]
        assert row["health"] == "up" and row["version"] and row["reportedNetworks"] == [net], row
        assert row["bootUrl"] == f"http://{rack.server}:8080" and row["blades"] == [f"vm-{rack.name[-1]}"], row
    site.import_profile("web-a", "02:a0:00:00:e7:01")
    site.import_profile("web-b", "02:a0:00:00:e7:02")
    t0 = time.monotonic()
    # Both at once (two TCG VMs: this machine's limit), each through its own rack.
    procs = {"web-a": site.start_assign("web-a", "vm-a"), "web-b": site.start_assign("web-b", "vm-b")}
    jobs = {name: _job_id(_finish(p, f"stamping {name}", site)) for name, p in procs.items()}
    print(f"two VMs stamped through their own rack controllers in {time.monotonic() - t0:.1f} s")
    try:
        for rack, profile, other in ((a, "web-a", b), (b, "web-b", a)):
            assert rack.vm is not None and other.vm is not None
            signal_data = site.boot_signal(jobs[profile])
            prefix = rack.server.rsplit(".", 1)[0] + "."
            assert signal_data["blade"] == f"vm-{rack.name[-1]}"
            assert signal_data["facts"]["ip"].startswith(prefix), signal_data
            assert signal_data["peer"].startswith(prefix) and signal_data["peer_rule"] in ("rack-neighbour",
                                                                                           "reservation")
            log = rack.log_text()
            # This rack served its own VM's script, callback and DHCP lease — and nothing of the other's.
            assert f"script for {rack.vm.mac}" in log and f"callback from {signal_data['peer']} accepted" in log
            assert other.vm.mac not in log
            assert rack.vm.mac in rack.leases() and other.vm.mac not in rack.leases()
            # and its dnsmasq would answer the other rack's VM nothing, were it cabled here
            assert f"{other.vm.mac},ignore" in (rack.dir / "state" / "run" / "dnsmasq.hosts").read_text()
            assert f"image {KERNEL} fetched from the region" in log
            # The rack holds nothing of the region's: no store, no boot key, no secrets key.
            state = rack.dir / "state"
            assert not (state / "anvil.db").exists() and not (state / "boot.key").exists()
            assert not (state / "secrets.key").exists()
    finally:
        for profile in ("web-a", "web-b"):
            site.release(profile)


def test_a_dead_rack_controller_is_shown_down_and_its_stamp_waits_with_that_reason(site: Site) -> None:
    b = site.racks["rack-b"]
    stop_rack(b, signal.SIGKILL)        # no goodbye: as a rack controller whose machine died
    row = _wait("rack-b shown down", lambda: (r := site.rack_list()["rack-b"])["health"] == "down" and r, 40)
    assert row["lastSeenAt"], row
    assert site.rack_list()["rack-a"]["health"] == "up"
    listing = site.anvil("rack", "list").out
    assert re.search(r"rack-b\s+down", listing), listing
    site.import_profile("web-b2", "02:a0:00:00:e7:03")
    out = site.anvil("profile", "assign", "web-b2", "--tenant", site.region.tenant, "--blade", "vm-b",
                     "--no-wait").out
    job = out.strip()

    def waiting() -> str | None:
        shown = site.anvil("job", "show", job).out
        return shown if "rack controller rack-b is down" in shown else None

    shown = _wait("the stamp waits on rack-b", waiting, 120, interval=2)
    assert "await-boot" in shown and "waiting for boot signal from the image on vm-b" in shown, shown
    # Back: the blade, network-booted again (its one-time network boot was spent on the failed try:
    # what an operator does, or a PXE ROM that retries), boots through rack-b, and the stamp ends.
    start_rack(site, b)
    _wait("rack-b up again", lambda: site.rack_list()["rack-b"]["health"] == "up", 30)
    site.anvil("blade", "boot", "vm-b", "network")
    site.anvil("blade", "power", "vm-b", "reset")
    watch = subprocess.run([sys.executable, "-m", "appliance", "job", "watch", job, "--timeout", str(JOB_TIMEOUT_S)],
                           env=site.region.anvil.env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S + 30)
    assert watch.returncode == 0, f"{watch.stdout}{watch.stderr}\n{b.log_text()[-3000:]}"
    data = site.boot_signal(job)
    assert data["blade"] == "vm-b" and data["facts"]["ip"].startswith("10.78.0."), data
    site.release("web-b2")
