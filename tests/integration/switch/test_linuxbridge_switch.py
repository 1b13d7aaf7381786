"""The linux-bridge driver against a real bridge in a namespace the test creates."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator

import pytest

from appliance.drivers.errors import BadSettings, BmcUnreachable, Unsupported
from appliance.drivers.linuxbridge import LinuxBridgeDriver
from appliance.drivers.protocols import PortConfig, SwitchRef
from appliance.lab import netns

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def bridge_ns() -> Iterator[str]:
    if shutil.which("ip") is None:
        pytest.skip("iproute2 `ip` is not installed")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    ns = netns.unique_prefix("lb") + "sw"
    netns.add(ns)
    try:
        netns.run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge"])
        for tap in ("tap1", "tap2"):
            netns.run(["ip", "-n", ns, "link", "add", tap, "type", "veth", "peer", "name", f"{tap}-vm"])
            netns.run(["ip", "-n", ns, "link", "set", tap, "master", "br0", "up"])
        yield ns
    finally:
        netns.delete(ns)


@pytest.fixture
async def driver() -> AsyncIterator[LinuxBridgeDriver]:
    drv = LinuxBridgeDriver()
    yield drv
    await drv.close()


async def test_tap_shut_and_reopened_through_link_state(bridge_ns: str, driver: LinuxBridgeDriver) -> None:
    sw = SwitchRef(name="lab", address=f"linuxbridge://netns/{bridge_ns}?bridge=br0")
    assert await driver.list_ports(sw) == ("tap1", "tap2")
    await driver.set_port(sw, "tap1", PortConfig(native=100, up=False))   # native VLAN: accepted, not enforced
    assert await driver.get_port(sw, "tap1") == PortConfig(up=False)
    assert (await driver.get_port(sw, "tap2")).up
    await driver.set_port(sw, "tap1", PortConfig(native=100, up=True))
    assert await driver.get_port(sw, "tap1") == PortConfig(up=True)


async def test_tagged_vlans_unsupported_unless_ignored(bridge_ns: str, driver: LinuxBridgeDriver) -> None:
    sw = SwitchRef(name="lab", address=f"linuxbridge://netns/{bridge_ns}?bridge=br0")
    with pytest.raises(Unsupported, match="cannot tag"):
        await driver.set_port(sw, "tap1", PortConfig(native=100, tagged=frozenset({200})))
    lax = SwitchRef(name="lab", address=f"linuxbridge://netns/{bridge_ns}?bridge=br0&vlans=ignore")
    await driver.set_port(lax, "tap1", PortConfig(native=100, tagged=frozenset({200}), up=False))
    assert not (await driver.get_port(lax, "tap1")).up


async def test_unknown_port_bridge_or_namespace(bridge_ns: str, driver: LinuxBridgeDriver) -> None:
    with pytest.raises(BadSettings, match="not a port"):
        await driver.get_port(SwitchRef(name="lab", address=f"linuxbridge://netns/{bridge_ns}?bridge=br0"), "eth9")
    with pytest.raises(BadSettings, match="no bridge br9"):
        await driver.get_port(SwitchRef(name="lab", address=f"linuxbridge://netns/{bridge_ns}?bridge=br9"), "tap1")
    with pytest.raises(BmcUnreachable, match="no network namespace"):
        await driver.list_ports(SwitchRef(name="lab", address="linuxbridge://netns/anvil-nope-x?bridge=br0"))
    assert not netns.exists("anvil-nope-x")
