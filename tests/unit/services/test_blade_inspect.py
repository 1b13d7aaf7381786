"""Inspection facts into the inventory: NICs by burned-in MAC, cabling kept, the blade never clashes
with itself, another blade's MAC does, and a refused inspection writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.drivers.protocols import BladeFacts, HbaFact, NicFact, Secret
from appliance.errors import Conflict, ValidationError
from appliance.secrets import SecretBox
from appliance.services.blades import BladeInfo, BladeService, Enrollment, NicSpec
from appliance.services.switches import SwitchService
from appliance.store import Store
from appliance.store.tables import BladeNicRow, BladeRow


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return SecretBox(tmp_path / "secrets.key")


@pytest.fixture
def svc(store: Store, box: SecretBox) -> BladeService:
    SwitchService(store, box).enroll("tor", "snmp://10.0.0.2:161", password=Secret("public"))
    return BladeService(store, box)


def _enroll(svc: BladeService, name: str, *nics: NicSpec) -> None:
    svc.enroll(Enrollment(name=name, bmc="redfish+https://10.0.0.9/redfish/v1/Systems/1", username="admin",
                          password=Secret("pw"), nics=nics))


def _rows(store: Store, name: str) -> list[tuple[int, int, str, str, str | None]]:
    """(id, position, name, mac, port) of the blade's NIC rows."""
    with store.read() as s:
        rows = s.execute(select(BladeNicRow.id, BladeNicRow.position, BladeNicRow.name, BladeNicRow.mac,
                                BladeNicRow.port).join(BladeRow, BladeRow.id == BladeNicRow.blade_id)
                         .where(BladeRow.name == name).order_by(BladeNicRow.position)).all()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def _nics(info: BladeInfo) -> list[tuple[str, str, str | None, str | None]]:
    return [(n.name, n.mac, n.switch, n.port) for n in info.nics]


RACK = BladeFacts(
    cpus=2, threads=16, memory_gib=96, model="3500", serial="437XR1138R2",
    nics=(NicFact("12446A3B0411", "12:44:6a:3b:04:11", 1000, "12:44:6a:3b:04:11"),
          NicFact("12446A3B8890", "12:44:6a:3b:88:90", 1000, "aa:bb:cc:dd:ee:00")),
    hbas=(HbaFact("fc0", "20:00:00:25:b5:01:01:01", "20:00:00:25:b5:01:02:01"),))


def test_nics_are_recorded_by_burned_in_mac_and_cabling_follows_the_current_one(store: Store,
                                                                                 svc: BladeService) -> None:
    # The operator typed what the OS shows: NIC 2's current (virtual) MAC.
    _enroll(svc, "rack1", NicSpec("eth0", "12:44:6a:3b:04:11", "tor", "1"),
            NicSpec("eth1", "aa:bb:cc:dd:ee:00", "tor", "2"))
    info = svc.apply_facts("rack1", RACK)
    assert _nics(info) == [("eth0", "12:44:6a:3b:04:11", "tor", "1"), ("eth1", "12:44:6a:3b:88:90", "tor", "2")]
    assert info.facts["currentMacs"] == {"12:44:6a:3b:88:90": "aa:bb:cc:dd:ee:00"}
    # Placement counts logical CPUs: a 2-socket, 16-thread server has 16 CPUs (sockets are a fact).
    assert (info.cpus, info.memory_gib, info.facts["threads"], info.facts["sockets"]) == (16, 96, 16, 2)
    assert info.facts["hbas"][0]["wwpn"] == "20:00:00:25:b5:01:01:01"


def test_inspecting_again_changes_no_nic(store: Store, svc: BladeService) -> None:
    _enroll(svc, "rack1", NicSpec("eth0", "12:44:6a:3b:04:11", "tor", "1"))
    first = svc.apply_facts("rack1", RACK)
    rows = _rows(store, "rack1")
    again = svc.apply_facts("rack1", RACK)
    assert _rows(store, "rack1") == rows        # same row ids: updated in place, not re-created
    assert again.public() == first.public()


def test_a_nic_that_moved_is_rewritten_with_its_cabling(store: Store, svc: BladeService) -> None:
    _enroll(svc, "rack1", NicSpec("eth0", "12:44:6a:3b:04:11", "tor", "1"),
            NicSpec("eth1", "12:44:6a:3b:88:90", "tor", "2"), NicSpec("eth2", "12:44:6a:3b:99:99", "tor", "3"))
    swapped = BladeFacts(nics=(RACK.nics[1], RACK.nics[0]))
    info = svc.apply_facts("rack1", swapped)
    # Order is the BMC's; each NIC keeps its name and port; the NIC the BMC no longer lists is gone.
    assert _nics(info) == [("eth1", "12:44:6a:3b:88:90", "tor", "2"), ("eth0", "12:44:6a:3b:04:11", "tor", "1")]
    assert [(r[1], r[3]) for r in _rows(store, "rack1")] == [(0, "12:44:6a:3b:88:90"), (1, "12:44:6a:3b:04:11")]


def test_the_blades_own_duplicate_mac_is_one_nic(store: Store, svc: BladeService) -> None:
    _enroll(svc, "rack1")
    twice = BladeFacts(nics=(RACK.nics[0], NicFact("VLAN1", "12:44:6a:3b:04:11"), RACK.nics[1]))
    info = svc.apply_facts("rack1", twice)
    assert [(n.name, n.mac) for n in info.nics] == [("12446A3B0411", "12:44:6a:3b:04:11"),
                                                   ("12446A3B8890", "12:44:6a:3b:88:90")]


def test_a_mac_on_another_blade_is_a_conflict_naming_it_and_nothing_is_written(store: Store,
                                                                                svc: BladeService) -> None:
    _enroll(svc, "other", NicSpec("eth0", "12:44:6a:3b:88:90"))
    _enroll(svc, "rack1", NicSpec("eth0", "12:44:6a:3b:04:11", "tor", "1"))
    before = svc.get("rack1").public()
    with pytest.raises(Conflict, match=r"inspected NIC '12446A3B8890' has MAC 12:44:6a:3b:88:90, which is enrolled "
                                       r"on blade 'other'"):
        svc.apply_facts("rack1", RACK)
    assert svc.get("rack1").public() == before                    # no CPUs, no facts, NICs as they were


def test_an_unusable_mac_is_refused_naming_the_nic(store: Store, svc: BladeService) -> None:
    _enroll(svc, "rack1", NicSpec("eth0", "12:44:6a:3b:04:11"))
    before = svc.get("rack1").public()
    bad = BladeFacts(cpus=4, nics=(RACK.nics[0], NicFact("junk", "fb:aa:1d:4e:d0:7a")))
    with pytest.raises(ValidationError) as err:
        svc.apply_facts("rack1", bad)
    assert [(i.path, "'junk'" in i.reason and "multicast" in i.reason) for i in err.value.issues] == [
        ("nics[1].mac", True)]
    assert svc.get("rack1").public() == before


def test_no_nics_seen_leaves_the_nics_and_current_macs_go_when_none_differ(store: Store, svc: BladeService) -> None:
    _enroll(svc, "rack1", NicSpec("eth0", "12:44:6a:3b:04:11", "tor", "1"))
    svc.apply_facts("rack1", RACK)
    info = svc.apply_facts("rack1", BladeFacts(cpus=2))           # IPMI: no NIC list
    assert [n.mac for n in info.nics] == ["12:44:6a:3b:04:11", "12:44:6a:3b:88:90"]
    assert "currentMacs" in info.facts
    plain = BladeFacts(nics=(RACK.nics[0], NicFact("12446A3B8890", "12:44:6a:3b:88:90", None, "12:44:6a:3b:88:90")))
    assert "currentMacs" not in svc.apply_facts("rack1", plain).facts
