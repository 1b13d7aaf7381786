"""Virtual identities over Redfish NetworkDeviceFunctions (our extension of sushy-tools)."""

from __future__ import annotations

import pytest

from appliance.drivers.errors import BadSettings
from appliance.drivers.protocols import FcBoot, IscsiBoot, VirtualIdentities
from appliance.drivers.redfish import RedfishDriver
from appliance.lab import redfish_emulator

from .conftest import Rack

pytestmark = pytest.mark.timeout(60)

PROFILE = VirtualIdentities(
    macs=("02:a0:00:00:00:01", "02:a0:00:00:00:02"),
    iscsi=IscsiBoot("iqn.2026-11.io.anvil:web-01", "iqn.2026-11.io.anvil.san:web-01", "10.0.0.5:3260", 0),
    fc=(FcBoot("20:00:00:25:b5:00:00:01", "20:00:00:25:b5:00:01:01"),),
)


def _ndf(rack: Rack, uuid: str, fid: str) -> dict:
    emu = rack.emulator
    ni = redfish_emulator.get_json(emu, f"/redfish/v1/Systems/{uuid}/NetworkInterfaces")
    iface = redfish_emulator.get_json(emu, ni["Members"][0]["@odata.id"])
    return redfish_emulator.get_json(emu, f"{iface['NetworkDeviceFunctions']['@odata.id']}/{fid}")


async def test_apply_read_clear_round_trip(redfish_rack: Rack, rf: RedfishDriver) -> None:
    bmc, expected = redfish_rack.take()
    await rf.apply(bmc, PROFILE)
    assert await rf.read(bmc) == PROFILE
    # What the BMC holds, read around the driver: virtual beside permanent.
    eth0 = _ndf(redfish_rack, expected["uuid"], "eth0")
    assert eth0["Ethernet"] == {**eth0["Ethernet"], "MACAddress": "02:a0:00:00:00:01",
                                "PermanentMACAddress": expected["macs"][0]}
    assert eth0["iSCSIBoot"]["InitiatorName"] == "iqn.2026-11.io.anvil:web-01"
    assert _ndf(redfish_rack, expected["uuid"], "fc0")["FibreChannel"]["WWPN"] == "20:00:00:25:b5:00:00:01"
    # Burned-in facts are unchanged by virtual identities.
    facts = await rf.facts(bmc)
    assert [n.mac for n in facts.nics] == expected["macs"]
    assert [h.wwpn for h in facts.hbas] == expected["wwpns"]

    await rf.clear(bmc)
    assert (await rf.read(bmc)).empty
    eth0 = _ndf(redfish_rack, expected["uuid"], "eth0")
    assert eth0["Ethernet"]["MACAddress"] == expected["macs"][0]
    assert eth0["iSCSIBoot"]["InitiatorName"] == ""
    fc0 = _ndf(redfish_rack, expected["uuid"], "fc0")["FibreChannel"]
    assert (fc0["WWPN"], fc0["WWNN"]) == (fc0["PermanentWWPN"], fc0["PermanentWWNN"])


async def test_apply_converges_to_exactly_the_given_identities(redfish_rack: Rack, rf: RedfishDriver) -> None:
    bmc, expected = redfish_rack.take()
    await rf.apply(bmc, PROFILE)
    smaller = VirtualIdentities(macs=("02:a0:00:00:00:09",))
    await rf.apply(bmc, smaller)
    await rf.apply(bmc, smaller)   # idempotent
    assert await rf.read(bmc) == smaller
    assert _ndf(redfish_rack, expected["uuid"], "eth1")["Ethernet"]["MACAddress"] == expected["macs"][1]


async def test_more_macs_than_functions_is_bad_settings(redfish_rack: Rack, rf: RedfishDriver) -> None:
    bmc, _ = redfish_rack.take()
    with pytest.raises(BadSettings):
        await rf.apply(bmc, VirtualIdentities(macs=tuple(f"02:a0:00:00:01:{i:02x}" for i in range(3))))
    assert (await rf.read(bmc)).empty
