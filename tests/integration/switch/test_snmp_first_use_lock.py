"""Concurrent set_port calls on one switch are serialised from the driver's very first use.

Bug: ``SnmpSwitchDriver._eng()`` resets ``self._locks`` when it creates the SNMP engine, which
happens *inside* the first ``set_port`` after it took the per-switch lock; a second ``set_port``
then gets a fresh lock and both read-modify-write the shared VLAN PortLists at once (a lost
update, read back as "VLAN n PortLists differ from what was written"). Every restart of the
appliance hits it when several resumed jobs set ports at once (tests/integration/engine/test_chaos.py).
"""

from __future__ import annotations

import asyncio

from appliance.drivers.protocols import PortConfig, Secret, SwitchRef
from appliance.drivers.snmp import SnmpSwitchDriver
from appliance.lab.snmp_switch import SnmpSwitch


async def test_first_concurrent_set_ports_of_a_fresh_driver_do_not_lose_updates(snmp_switch: SnmpSwitch) -> None:
    ref = SwitchRef(name="sw1", address=snmp_switch.address, password=Secret(snmp_switch.community), timeout=5.0)
    driver = SnmpSwitchDriver()
    try:
        want = {str(p): PortConfig(native=100, tagged=frozenset({200}), up=True) for p in range(1, 7)}
        await asyncio.gather(*(driver.set_port(ref, p, w) for p, w in want.items()))
        assert {p: await driver.get_port(ref, p) for p in want} == want
    finally:
        await driver.close()
