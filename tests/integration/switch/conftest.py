"""Real switch peers for the switch driver tests, each started by its test and stopped by PID.

- ``snmp_switch``: snmpsim on 127.0.0.1:<free UDP port> (v2c community and a v3 user).
- ``ovs_lab``: ovsdb-server + ovs-vswitchd (userspace datapath) in a fresh network
  namespace, with host namespaces A, B (VLAN 10) and C (VLAN 20). Needs root and OVS.

Names and ports are random per test, so the suite is safe under pytest-xdist.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.lab.snmp_switch import SnmpSwitch, V3User

SNMP_VLANS = (1, 10, 20, 30, 100, 101, 200, 4094)


@pytest.fixture
def snmp_switch(tmp_path: Path) -> Iterator[SnmpSwitch]:
    sw = SnmpSwitch(tmp_path / "snmpsim", ports=24, vlans=SNMP_VLANS, community="lab-rw", v3=V3User())
    sw.start()
    try:
        yield sw
    finally:
        sw.stop()


def _ovs_missing() -> str | None:
    from appliance.lab.ovs_switch import missing_tools

    if shutil.which("ping") is None:
        return "ping is not installed (apt-get install iputils-ping)"
    return missing_tools()


@pytest.fixture
def ovs_lab(tmp_path: Path) -> Iterator[object]:
    from appliance.lab.ovs_switch import Host, OvsSwitch

    reason = _ovs_missing()
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    lab = OvsSwitch(tmp_path / "ovs", hosts=(Host("a", "10.99.0.1/24", 10), Host("b", "10.99.0.2/24", 10),
                                             Host("c", "10.99.0.3/24", 20), Host("t", None, None, trunks=(10, 20))))
    lab.up()
    try:
        yield lab
    finally:
        lab.down()
