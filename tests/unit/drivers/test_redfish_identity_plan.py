"""Pure NetworkDeviceFunction mapping, on recorded-shape JSON."""

from __future__ import annotations

import pytest

from appliance.drivers.protocols import FcBoot, IscsiBoot, VirtualIdentities
from appliance.drivers.redfish import identity as ident


def eth(fid: str, perm: str, mac: str | None = None, initiator: str = "") -> ident.Ndf:
    return ident.Ndf(f"/f/{fid}", {
        "Id": fid, "NetDevFuncType": "Ethernet",
        "Ethernet": {"PermanentMACAddress": perm, "MACAddress": mac or perm},
        "iSCSIBoot": {"InitiatorName": initiator, "PrimaryTargetName": "", "PrimaryTargetIPAddress": "",
                      "PrimaryTargetTCPPort": 3260, "PrimaryLUN": 0},
    })


def fc(fid: str, pn: str, nn: str) -> ident.Ndf:
    return ident.Ndf(f"/f/{fid}", {"Id": fid, "NetDevFuncType": "FibreChannel",
                                   "FibreChannel": {"PermanentWWPN": pn, "PermanentWWNN": nn, "WWPN": pn, "WWNN": nn}})


NDFS = [eth("eth0", "52:54:00:00:00:01"), eth("eth1", "52:54:00:00:00:02"),
        fc("fc0", "20:00:00:00:00:00:00:01", "20:00:00:00:00:00:00:ff")]


def test_nothing_virtual_reads_empty_and_plans_nothing() -> None:
    assert ident.read(NDFS).empty
    assert ident.plan(NDFS, VirtualIdentities()) == []


def test_plan_patches_only_what_differs() -> None:
    ids = VirtualIdentities(macs=("02-A0-00-00-00-01",),
                            iscsi=IscsiBoot("iqn.x:i", "iqn.x:t", "10.0.0.5:3260", 2),
                            fc=(FcBoot("20:00:00:25:b5:00:00:01", "20:00:00:25:b5:00:01:01"),))
    patches = dict(ident.plan(NDFS, ids))
    assert patches["/f/eth0"]["Ethernet"] == {"MACAddress": "02:a0:00:00:00:01"}
    assert patches["/f/eth0"]["iSCSIBoot"]["PrimaryTargetIPAddress"] == "10.0.0.5"
    assert "/f/eth1" not in patches
    assert patches["/f/fc0"] == {"FibreChannel": {"WWPN": "20:00:00:25:b5:00:00:01", "WWNN": "20:00:00:25:b5:00:01:01"}}


def test_read_keeps_macs_up_to_the_last_virtual_one() -> None:
    ndfs = [eth("eth0", "52:54:00:00:00:01"), eth("eth1", "52:54:00:00:00:02", "02:00:00:00:00:02")]
    assert ident.read(ndfs).macs == ("52:54:00:00:00:01", "02:00:00:00:00:02")


def test_too_many_identities_do_not_fit() -> None:
    with pytest.raises(ident.PlanError):
        ident.plan(NDFS, VirtualIdentities(macs=("02:00:00:00:00:01",) * 3))
    with pytest.raises(ident.PlanError):
        ident.plan(NDFS[:2], VirtualIdentities(fc=(FcBoot("a", "b"),)))
