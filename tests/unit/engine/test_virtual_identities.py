"""What the stamp hands a driver that holds virtual identities: the profile's MACs, and for a
VM host's domain also its system UUID and each NIC's VLANs (none for a pool reference)."""

from __future__ import annotations

from appliance.domain.profile import from_dict
from appliance.drivers.protocols import NicVlans
from appliance.engine.steps.stamp import virtual_identities


def _profile(uuid: str) -> dict[str, object]:
    return {"apiVersion": "anvil/v1", "kind": "ServerProfile", "metadata": {"name": "vm-01", "tenant": "acme"},
            "spec": {"identity": {"uuid": uuid, "nics": [
                {"name": "eth0", "mac": "02:a0:00:00:00:01", "vlans": {"native": 100, "tagged": [200]}},
                {"name": "eth1", "mac": "02:a0:00:00:00:02"}]}, "boot": {"source": {"type": "local"}}}}


def test_the_uuid_and_vlans_go_with_the_macs() -> None:
    ids = virtual_identities(from_dict(_profile("4c4c4544-0042-3510-8052-b4c04f384d32")))
    assert ids.macs == ("02:a0:00:00:00:01", "02:a0:00:00:00:02")
    assert ids.uuid == "4c4c4544-0042-3510-8052-b4c04f384d32"
    assert ids.vlans == (NicVlans(native=100, tagged=(200,)), NicVlans())
