"""Switch driver addresses and the OVS Port-row mapping (pure, no switch needed)."""

from __future__ import annotations

import pytest

from appliance.drivers import linuxbridge, ovs, snmp
from appliance.drivers.errors import BadSettings
from appliance.drivers.ovs.driver import from_row, parse_port_desc, to_row
from appliance.drivers.protocols import PortConfig, SwitchRef


def ref(address: str) -> SwitchRef:
    return SwitchRef(name="sw", address=address)


def test_snmp_address_defaults_and_options() -> None:
    t = snmp.parse_address(ref("snmp://10.0.0.2"))
    assert (t.host, t.port, t.context, t.auth, t.priv, t.ifindex) == ("10.0.0.2", 161, "", "sha", "aes", "port")
    t = snmp.parse_address(ref("snmp://sw1:1161?context=c1&auth=SHA256&priv=aes256&ifindex=bridge"))
    assert (t.host, t.port, t.context, t.auth, t.priv, t.ifindex) == ("sw1", 1161, "c1", "sha256", "aes256", "bridge")


@pytest.mark.parametrize("address", ["http://x", "snmp://", "snmp://x?foo=1", "snmp://x?auth=md4", "snmp://x:99999"])
def test_snmp_bad_addresses(address: str) -> None:
    with pytest.raises(BadSettings):
        snmp.parse_address(ref(address))


def test_ovs_address_derives_the_mgmt_socket_beside_the_db() -> None:
    t = ovs.parse_address(ref("ovs:unix:/run/lab/db.sock?bridge=br0"))
    assert (t.db, t.bridge, t.mgmt) == ("unix:/run/lab/db.sock", "br0", "unix:/run/lab/br0.mgmt")
    t = ovs.parse_address(ref("ovs:tcp:10.0.0.9:6640?bridge=br1&mgmt=tcp:10.0.0.9:6653"))
    assert (t.db, t.mgmt) == ("tcp:10.0.0.9:6640", "tcp:10.0.0.9:6653")
    with pytest.raises(BadSettings, match="mgmt"):
        ovs.parse_address(ref("ovs:tcp:10.0.0.9:6640?bridge=br1"))
    with pytest.raises(BadSettings):
        ovs.parse_address(ref("ovs:unix:/run/db.sock"))


@pytest.mark.parametrize(("want", "row"), [
    (PortConfig(native=10), ([10], [], "access")),
    (PortConfig(native=10, tagged=frozenset({20, 30})), ([10], [20, 30], "native-untagged")),
    (PortConfig(tagged=frozenset({30, 20})), ([], [20, 30], "trunk")),
])
def test_ovs_rows_round_trip(want: PortConfig, row: tuple[list[int], list[int], str]) -> None:
    assert to_row(ref("ovs:unix:/x?bridge=b"), want) == row
    assert from_row(*row) == (want.native, want.tagged)


def test_ovs_row_readings() -> None:
    assert from_row(20, [], []) == (20, frozenset())                 # tag alone = access
    assert from_row([], [], []) == (None, frozenset(range(1, 4095)))  # no tag, no trunks = every VLAN
    assert from_row(5, [7], "native-tagged") == (None, frozenset({5, 7}))
    with pytest.raises(BadSettings):
        to_row(ref("ovs:unix:/x?bridge=b"), PortConfig())
    with pytest.raises(BadSettings, match="both native and tagged"):
        to_row(ref("ovs:unix:/x?bridge=b"), PortConfig(native=5, tagged=frozenset({5})))


def test_ofctl_port_desc_parsing() -> None:
    text = """OFPST_PORT_DESC reply (xid=0x4):
 1(p-a): addr:6a:2d:ee:cf:fb:c5
     config:     0
     state:      0
 2(p-b): addr:1e:b3:df:d8:ea:bd
     config:     PORT_DOWN
     state:      LINK_DOWN
 LOCAL(br0): addr:9e:30:16:df:b5:4d
     config:     PORT_DOWN
"""
    assert parse_port_desc(text) == {"p-a": True, "p-b": False, "br0": False}


def test_linuxbridge_addresses() -> None:
    t = linuxbridge.parse_address(ref("linuxbridge://netns/anvil-lab?bridge=br0"))
    assert (t.netns, t.bridge, t.ignore_vlans) == ("anvil-lab", "br0", False)
    t = linuxbridge.parse_address(ref("linuxbridge:///?bridge=br0&vlans=ignore"))
    assert (t.netns, t.ignore_vlans) == (None, True)
    for bad in ("linuxbridge://netns/a/b?bridge=x", "linuxbridge://netns/lab", "linuxbridge://x/y?bridge=b"):
        with pytest.raises(BadSettings):
            linuxbridge.parse_address(ref(bad))
