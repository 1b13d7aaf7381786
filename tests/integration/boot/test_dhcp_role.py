"""The boot role's managed dnsmasq in a private namespace, answering DHCP probes from the
machines' side: reservations follow the live bindings by SIGHUP (the PID never changes),
dnsmasq comes back when it dies and goes when the appliance does, and proxy-DHCP mode
answers PXE ROMs and iPXE while leaving addresses to another server."""

from __future__ import annotations

import ipaddress
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.store import Store, open_store
from appliance.store.tables import BindingRow
from tests.integration.boot.conftest import SERVER, ProvisioningNet
from tests.support.boot_role import BootRole, wait_for
from tests.unit.boot.conftest import IMAGE, Inventory, profile_doc

BLADE_MAC = "52:54:00:78:00:01"
PROFILE_MAC = "02:a0:00:78:00:01"
RESERVED = "10.78.0.50"
POOL = ("10.78.0.100", "10.78.0.150")


def _role(tmp_path: Path, net: ProvisioningNet, dhcp: str) -> BootRole:
    config = tmp_path / "anvil.toml"
    config.write_text(f'[boot]\nlisten = "{SERVER}:8080"\ntftp_listen = "{SERVER}:69"\ndhcp = "{dhcp}"\n'
                      f'interface = "{net.boot_if}"\ndhcp_range = "{POOL[0]},{POOL[1]}"\n')
    return BootRole(state=tmp_path / "state", config=config, netns=net.boot_ns, env={"ANVIL_LOG_LEVEL": "INFO"})


@pytest.fixture
def state_store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'state' / 'anvil.db'}")
    try:
        yield s
    finally:
        s.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _pid(role: BootRole) -> int:
    return int((role.state / "run" / "dnsmasq.pid").read_text())


def _offer(net: ProvisioningNet, mac: str) -> str:
    # dnsmasq pings a pool address (about 3 s) before it offers it.
    replies = [r for r in net.probe(mac, "--first", wait=8) if r["type"] == "OFFER"]
    assert replies, f"no DHCP offer for {mac}"
    return str(replies[0]["yiaddr"])


def test_reservations_follow_bindings_by_sighup(tmp_path: Path, provisioning_net: ProvisioningNet,
                                                state_store: Store) -> None:
    net = provisioning_net
    store = state_store
    inv = Inventory(store, {}, {}, {})
    inv.add_blade("blade-78", (BLADE_MAC,))
    role = _role(tmp_path, net, "reservations").start()
    try:
        pid = _pid(role)
        hosts = role.state / "run" / "dnsmasq.hosts"
        assert hosts.read_text() == ""
        pool = ipaddress.IPv4Address(_offer(net, BLADE_MAC))
        assert ipaddress.IPv4Address(POOL[0]) <= pool <= ipaddress.IPv4Address(POOL[1])

        doc = profile_doc("web-78", IMAGE, macs=(PROFILE_MAC,))
        doc["spec"]["identity"]["nics"][0]["ipv4"] = f"{RESERVED}/24"
        inv.add_profile(doc)
        inv.bind("web-78", "blade-78")
        wait_for(lambda: RESERVED in hosts.read_text(), 10, "the hostsfile has the new reservation")
        assert hosts.read_text() == f"{PROFILE_MAC},{BLADE_MAC},{RESERVED},web-78\n"
        log = role.state / "run" / "dnsmasq.log"
        wait_for(lambda: log.read_text().count(f"read {hosts}") >= 2, 10, "dnsmasq re-read its hostsfile")
        assert _offer(net, BLADE_MAC) == RESERVED
        assert _offer(net, PROFILE_MAC) == RESERVED
        assert _pid(role) == pid and _alive(pid), "dnsmasq was reloaded, not restarted"

        with store.write() as s:
            binding = s.get(BindingRow, inv.bindings["web-78"])
            assert binding is not None
            binding.state = "released"
        wait_for(lambda: RESERVED not in hosts.read_text(), 10, "the released reservation is gone")
        assert _pid(role) == pid
    finally:
        status = role.stop()
    assert status == 0, role.log()
    wait_for(lambda: not _alive(pid), 5, "dnsmasq stopped with the boot role")


def test_a_blade_another_rack_controller_serves_gets_no_dhcp_answer(
        tmp_path: Path, provisioning_net: ProvisioningNet, state_store: Store) -> None:
    """Cabled to rack-b, a blade gets nothing from this boot role, not even a pool address; moved
    back, it gets one again (the hostsfile follows, dnsmasq re-reads it)."""
    from appliance.services.racks import RackService

    net = provisioning_net
    inv = Inventory(state_store, {}, {}, {})
    inv.add_blade("blade-78", (BLADE_MAC,))
    racks = RackService(state_store)
    racks.add("rack-b", ["10.79.0.0/24"])
    racks.set_blade_rack("blade-78", "rack-b")
    role = _role(tmp_path, net, "reservations").start()
    try:
        hosts = role.state / "run" / "dnsmasq.hosts"
        assert hosts.read_text() == f"{BLADE_MAC},ignore\n"
        assert [r for r in net.probe(BLADE_MAC, wait=8) if r["type"] == "OFFER"] == []
        assert _offer(net, "52:54:00:78:00:99")      # anybody else still gets a pool address
        racks.set_blade_rack("blade-78", None)
        wait_for(lambda: hosts.read_text() == "", 10, "the blade is no longer ignored")
        log = role.state / "run" / "dnsmasq.log"
        wait_for(lambda: log.read_text().count(f"read {hosts}") >= 2, 10, "dnsmasq re-read its hostsfile")
        assert _offer(net, BLADE_MAC)
    finally:
        role.stop()


def test_dnsmasq_is_restarted_when_it_dies_and_dies_with_the_appliance(
        tmp_path: Path, provisioning_net: ProvisioningNet) -> None:
    net = provisioning_net
    role = _role(tmp_path, net, "reservations").start()
    try:
        first = _pid(role)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: (role.state / "run" / "dnsmasq.pid").exists() and _pid(role) != first
                 and _alive(_pid(role)), 10, "dnsmasq started again")
        assert _offer(net, BLADE_MAC)
        second = _pid(role)
        # kill -9 of the appliance: no clean-up runs, yet its dnsmasq does not stay behind on port 67.
        os.kill(role.pid, signal.SIGKILL)
        assert role.stop() == -signal.SIGKILL
        try:
            wait_for(lambda: not _alive(second), 5, "dnsmasq died with the appliance")
        finally:
            if _alive(second):
                os.kill(second, signal.SIGKILL)
        role.start()
        assert _offer(net, BLADE_MAC)
    finally:
        role.stop()
    assert role.proc is not None and role.proc.returncode == 0, role.log()


def test_proxy_mode_answers_pxe_roms_and_ipxe_but_hands_out_no_address(
        tmp_path: Path, provisioning_net: ProvisioningNet) -> None:
    net = provisioning_net
    role = _role(tmp_path, net, "proxy").start()
    try:
        assert "dhcp-range=10.78.0.0,proxy" in (role.state / "run" / "dnsmasq.conf").read_text()
        assert net.probe(BLADE_MAC, wait=1.0) == []          # not a PXE client: the site's server answers it

        (bios,) = net.probe(BLADE_MAC, "--pxe")
        assert bios["yiaddr"] == "0.0.0.0" and bios["vendor_class"] == "PXEClient" and bios["has_pxe_options"]
        (uefi,) = net.probe(BLADE_MAC, "--pxe", "--arch", "7")
        assert (uefi["yiaddr"], uefi["siaddr"], uefi["file"]) == ("0.0.0.0", SERVER, "ipxe.efi")
        for arch in ("0", "7"):
            (ipxe,) = net.probe(BLADE_MAC, "--pxe", "--ipxe", "--arch", arch)
            assert ipxe["yiaddr"] == "0.0.0.0" and ipxe["siaddr"] == SERVER
            assert ipxe["file"] == f"http://{SERVER}:8080/boot/ipxe?mac=${{net0/mac}}&uuid=${{uuid}}"
    finally:
        status = role.stop()
    assert status == 0, role.log()
