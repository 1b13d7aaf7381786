"""A port's UUID carries its NIC's MAC and depends on its node (appliance.services.baremetal_ports)."""

from __future__ import annotations

import uuid

from appliance.services.baremetal_ports import mac_of, port_uuid

NODE = "3eb2bf23-117b-4298-9402-4673edea51c6"


def test_a_port_uuid_is_a_version_1_uuid_whose_node_field_is_the_mac() -> None:
    u = port_uuid(NODE, "52:54:00:aa:00:01")
    assert uuid.UUID(u).version == 1 and uuid.UUID(u).variant == uuid.RFC_4122
    assert u.endswith("525400aa0001") and mac_of(u) == "52:54:00:aa:00:01"


def test_the_same_mac_on_another_node_is_another_port() -> None:
    other = "9c0c43e3-28d7-4b2e-9a25-aa0000000001"
    assert port_uuid(NODE, "52:54:00:aa:00:01") != port_uuid(other, "52:54:00:aa:00:01")
    assert port_uuid(NODE, "52:54:00:aa:00:01") == port_uuid(NODE, "52:54:00:aa:00:01")


def test_text_that_is_not_a_port_uuid_has_no_mac() -> None:
    assert mac_of("not-a-uuid") is None
    assert mac_of(NODE) is None     # a version-4 UUID (a node's)
