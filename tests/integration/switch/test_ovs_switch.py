"""The OVS switch driver against a real ovs-vswitchd (userspace datapath) in namespaces: pings prove it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from appliance.drivers.errors import BadSettings, BmcUnreachable
from appliance.drivers.ovs import OvsSwitchDriver
from appliance.drivers.protocols import PortConfig, SwitchRef
from appliance.lab.ovs_switch import OvsSwitch

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def driver() -> AsyncIterator[OvsSwitchDriver]:
    drv = OvsSwitchDriver()
    yield drv
    await drv.close()


def ref(lab: OvsSwitch) -> SwitchRef:
    return SwitchRef(name="ovs1", address=lab.address, timeout=5.0)


async def test_access_vlans_separate_hosts_and_retagging_joins_them(
        ovs_lab: OvsSwitch, driver: OvsSwitchDriver) -> None:
    sw = ref(ovs_lab)
    assert await driver.get_port(sw, ovs_lab.port("c")) == PortConfig(native=20)
    assert ovs_lab.ping("a", "b")
    assert not ovs_lab.ping("a", "c", tries=1)
    await driver.set_port(sw, ovs_lab.port("c"), PortConfig(native=10))
    assert await driver.get_port(sw, ovs_lab.port("c")) == PortConfig(native=10)
    assert ovs_lab.ping("a", "c")


async def test_port_down_fences_and_up_restores(ovs_lab: OvsSwitch, driver: OvsSwitchDriver) -> None:
    sw, port_b = ref(ovs_lab), ovs_lab.port("b")
    assert ovs_lab.ping("a", "b")
    await driver.set_port(sw, port_b, PortConfig(native=10, up=False))
    assert await driver.get_port(sw, port_b) == PortConfig(native=10, up=False)
    assert not ovs_lab.ping("a", "b", tries=1)
    await driver.set_port(sw, port_b, PortConfig(native=10, up=False))  # converged: nothing to do
    await driver.set_port(sw, port_b, PortConfig(native=10, up=True))
    assert (await driver.get_port(sw, port_b)).up
    assert ovs_lab.ping("a", "b")


async def test_trunk_and_native_untagged_read_back(ovs_lab: OvsSwitch, driver: OvsSwitchDriver) -> None:
    sw, port_t = ref(ovs_lab), ovs_lab.port("t")
    assert await driver.get_port(sw, port_t) == PortConfig(native=None, tagged=frozenset({10, 20}))
    want = PortConfig(native=30, tagged=frozenset({10, 20, 200}))
    await driver.set_port(sw, port_t, want)
    assert await driver.get_port(sw, port_t) == want
    assert "native-untagged" in ovs_lab.vsctl("get", "port", port_t, "vlan_mode")
    await driver.set_port(sw, port_t, PortConfig(tagged=frozenset({20})))
    assert await driver.get_port(sw, port_t) == PortConfig(tagged=frozenset({20}))
    # Other ports are untouched.
    assert await driver.get_port(sw, ovs_lab.port("a")) == PortConfig(native=10)
    assert await driver.list_ports(sw) == tuple(sorted(ovs_lab.port(h) for h in "abct"))


async def test_unknown_port_and_no_vlan_are_bad_settings(ovs_lab: OvsSwitch, driver: OvsSwitchDriver) -> None:
    sw = ref(ovs_lab)
    with pytest.raises(BadSettings, match="no port p-zz"):
        await driver.get_port(sw, "p-zz")
    with pytest.raises(BadSettings, match="park it on a VLAN"):
        await driver.set_port(sw, ovs_lab.port("a"), PortConfig())


async def test_missing_database_is_unreachable_within_the_timeout(driver: OvsSwitchDriver, tmp_path: object) -> None:
    sw = SwitchRef(name="ovs-gone", address=f"ovs:unix:{tmp_path}/nothing.sock?bridge=br0", timeout=1.0)
    start = time.monotonic()
    with pytest.raises(BmcUnreachable):
        await driver.get_port(sw, "p-a")
    assert time.monotonic() - start < 3.0
