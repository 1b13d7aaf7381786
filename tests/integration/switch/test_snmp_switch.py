"""The SNMP switch driver against snmpsim (Q-BRIDGE-MIB, IF-MIB), read back over SNMP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.drivers.errors import BadSettings, BmcAuthFailed, BmcFailure, BmcUnreachable
from appliance.drivers.protocols import PortConfig, Secret, SwitchRef
from appliance.drivers.snmp import SnmpSwitchDriver
from appliance.lab.snmp_switch import SnmpSwitch

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def driver() -> AsyncIterator[SnmpSwitchDriver]:
    drv = SnmpSwitchDriver()
    yield drv
    await drv.close()


def v2c(sw: SnmpSwitch, community: str | None = None, timeout: float = 10.0) -> SwitchRef:
    return SwitchRef(name="sw1", address=sw.address, password=Secret(community or sw.community), timeout=timeout)


def v3(sw: SnmpSwitch, auth_key: str | None = None) -> SwitchRef:
    assert sw.v3 is not None
    return SwitchRef(name="sw1", address=f"{sw.address}?context={sw.community}&auth=sha&priv=aes",
                     username=sw.v3.name, password=Secret(auth_key or sw.v3.auth_key),
                     privacy=Secret(sw.v3.priv_key), timeout=10.0)


async def test_ports_start_untagged_in_vlan_1_and_up(snmp_switch: SnmpSwitch, driver: SnmpSwitchDriver) -> None:
    ref = v2c(snmp_switch)
    assert await driver.list_ports(ref) == tuple(str(p) for p in range(1, 25))
    assert await driver.get_port(ref, "5") == PortConfig(native=1, tagged=frozenset(), up=True)


async def test_native_and_tagged_vlans_read_back_and_leave_other_ports_alone(
        snmp_switch: SnmpSwitch, driver: SnmpSwitchDriver) -> None:
    ref = v2c(snmp_switch)
    before = {p: await driver.get_port(ref, p) for p in ("4", "6", "9", "24")}
    want = PortConfig(native=100, tagged=frozenset({200, 10}), up=True)
    await driver.set_port(ref, "5", want)
    assert await driver.get_port(ref, "5") == want
    for port, cfg in before.items():
        assert await driver.get_port(ref, port) == cfg
    await driver.set_port(ref, "5", want)  # converging: a second call changes nothing and succeeds
    assert await driver.get_port(ref, "5") == want
    # Port 9 (second octet) joins VLAN 100 too; port 5's bits survive the read-modify-write.
    await driver.set_port(ref, "9", PortConfig(native=100))
    assert await driver.get_port(ref, "5") == want
    assert await driver.get_port(ref, "9") == PortConfig(native=100)
    # Back to a single access VLAN: the tagged memberships go away.
    await driver.set_port(ref, "5", PortConfig(native=30))
    assert await driver.get_port(ref, "5") == PortConfig(native=30)


async def test_tagged_only_port_has_no_native_vlan(snmp_switch: SnmpSwitch, driver: SnmpSwitchDriver) -> None:
    ref = v2c(snmp_switch)
    await driver.set_port(ref, "24", PortConfig(native=None, tagged=frozenset({10, 20, 30})))
    assert await driver.get_port(ref, "24") == PortConfig(native=None, tagged=frozenset({10, 20, 30}))


async def test_port_shut_and_reenabled_through_if_admin_status(
        snmp_switch: SnmpSwitch, driver: SnmpSwitchDriver) -> None:
    ref = v2c(snmp_switch)
    await driver.set_port(ref, "7", PortConfig(native=4094, up=False))
    assert await driver.get_port(ref, "7") == PortConfig(native=4094, up=False)
    assert (await driver.get_port(ref, "8")).up
    await driver.set_port(ref, "7", PortConfig(native=20, up=True))
    assert await driver.get_port(ref, "7") == PortConfig(native=20, up=True)


async def test_vlan_missing_on_switch_is_bad_settings_naming_it(
        snmp_switch: SnmpSwitch, driver: SnmpSwitchDriver) -> None:
    ref = v2c(snmp_switch)
    with pytest.raises(BadSettings, match="VLAN\\(s\\) 40, 55 not configured"):
        await driver.set_port(ref, "3", PortConfig(native=40, tagged=frozenset({55, 10})))
    assert await driver.get_port(ref, "3") == PortConfig(native=1)  # nothing was changed


async def test_unknown_port_is_bad_settings(snmp_switch: SnmpSwitch, driver: SnmpSwitchDriver) -> None:
    with pytest.raises(BadSettings, match="does not exist"):
        await driver.get_port(v2c(snmp_switch), "99")
    with pytest.raises(BadSettings, match="bridge port numbers"):
        await driver.get_port(v2c(snmp_switch), "eth0")


async def test_wrong_community_is_unreachable_within_the_timeout(
        snmp_switch: SnmpSwitch, driver: SnmpSwitchDriver) -> None:
    await driver.get_port(v2c(snmp_switch), "1")  # pysnmp's one-off MIB loading (~0.7 s CPU) is paid here
    start = time.monotonic()
    with pytest.raises(BmcUnreachable, match="no SNMP reply"):
        await driver.get_port(v2c(snmp_switch, community="wrong", timeout=1.0), "1")
    assert 0.9 < time.monotonic() - start < 1.8


async def test_v3_auth_priv_sets_and_reads_back(snmp_switch: SnmpSwitch, driver: SnmpSwitchDriver) -> None:
    ref = v3(snmp_switch)
    await driver.set_port(ref, "12", PortConfig(native=101, tagged=frozenset({200}), up=False))
    assert await driver.get_port(ref, "12") == PortConfig(native=101, tagged=frozenset({200}), up=False)
    assert await driver.get_port(v2c(snmp_switch), "12") == PortConfig(native=101, tagged=frozenset({200}), up=False)


async def test_v3_wrong_auth_key_is_auth_failed(snmp_switch: SnmpSwitch) -> None:
    drv = SnmpSwitchDriver()
    try:
        with pytest.raises(BmcAuthFailed):
            await drv.get_port(v3(snmp_switch, auth_key="not-the-key"), "1")
    finally:
        await drv.close()


async def test_ifindex_mapping_from_bridge_mib(tmp_path: Path, driver: SnmpSwitchDriver) -> None:
    with SnmpSwitch(tmp_path / "sim", ports=8, vlans=(1, 10), community="c", ifindex_offset=1000) as sw:
        mapped = SwitchRef(name="sw2", address=f"{sw.address}?ifindex=bridge", password=Secret("c"), timeout=10.0)
        await driver.set_port(mapped, "3", PortConfig(native=10, up=False))
        assert await driver.get_port(mapped, "3") == PortConfig(native=10, up=False)
        assert (await driver.get_port(mapped, "4")).up
        with pytest.raises(BadSettings, match=r"ifAdminStatus\.3"):  # ifIndex 3 does not exist there
            await driver.get_port(SwitchRef(name="sw2", address=sw.address, password=Secret("c")), "3")


async def test_agent_commit_failure_is_a_retryable_bmc_failure(tmp_path: Path, driver: SnmpSwitchDriver) -> None:
    with SnmpSwitch(tmp_path / "sim", ports=8, vlans=(1, 10, 20), community="c", fail_vlans=(20,)) as sw:
        ref = SwitchRef(name="sw3", address=sw.address, password=Secret("c"), timeout=10.0)
        await driver.set_port(ref, "2", PortConfig(native=10))
        with pytest.raises(BmcFailure, match="commitFailed") as err:
            await driver.set_port(ref, "2", PortConfig(native=20))
        assert err.value.retryable


async def test_the_switch_keeps_its_own_history_of_port_writes(snmp_switch: SnmpSwitch,
                                                               driver: SnmpSwitchDriver) -> None:
    """Each admin state and PVID SET the emulator stored, timestamped on its side (tests check
    what the switch was told, not what the store says); a SET it refused is not in it."""
    ref = v2c(snmp_switch)
    t0 = time.time()
    await driver.set_port(ref, "5", PortConfig(native=10, tagged=frozenset(), up=True))
    await driver.set_port(ref, "5", PortConfig(native=10, tagged=frozenset(), up=False))
    t1 = time.time()
    history = snmp_switch.port_history()
    changes = history[5]
    assert [c.up for c in changes if c.up is not None] == [False]
    assert [c.pvid for c in changes if c.pvid is not None] == [10]
    assert all(t0 <= c.at <= t1 for c in changes)
    assert [c.at for c in changes] == sorted(c.at for c in changes)
    assert all(not h for port, h in history.items() if port != 5)
    snmp_switch.stop()   # the log outlives the emulator and its private run directory
    assert snmp_switch.set_log.parent == snmp_switch.workdir
    assert snmp_switch.port_history()[5] == changes
