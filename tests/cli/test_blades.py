"""Blade enrolment from the command line; the BMC password never shows."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.cli.conftest import Anvil
from tests.support.recorded_redfish import recorded_bmc

PASSWORD = "Sup3r-S3cret-BMC-pw!"
BMC = "redfish+http://127.0.0.1:8000/redfish/v1/Systems/00000000-0000-0000-0000-000000000001"


def _enroll(anvil: Anvil, name: str = "blade01", *extra: str) -> None:
    anvil("-v", "blade", "enroll", name, "--bmc", BMC, "--username", "admin", "--password-stdin",
          "--nic", "eth0=52:54:00:00:01:01", "--nic", "eth1=52:54:00:00:01:02", "--cpus", "16",
          "--memory-gib", "128", "--chassis", "c1", "--slot", "1", *extra, input=PASSWORD + "\n")


def test_enrolled_blade_is_listed_and_shown_with_password_masked(anvil: Anvil, state_dir: Path) -> None:
    res = anvil("-v", "blade", "enroll", "blade01", "--bmc", BMC, "--username", "admin", "--password-stdin",
                "--nic", "eth0=52:54:00:00:01:01", input=PASSWORD + "\n")
    assert "enrolled blade blade01 (redfish, 1 NICs)" in res.out
    outputs = [res.out, res.err]
    for fmt in ("table", "json", "yaml"):
        listed = anvil("-v", "blade", "list", "-o", fmt)
        shown = anvil("-v", "blade", "show", "blade01", "-o", fmt)
        outputs += [listed.out, listed.err, shown.out, shown.err]
    data = json.loads(anvil("blade", "show", "blade01", "-o", "json").out)
    assert data["password"] == "***"
    assert data["nics"] == [{"name": "eth0", "mac": "52:54:00:00:01:01", "switch": None, "port": None}]
    assert yaml.safe_load(anvil("blade", "list", "-o", "yaml").out)[0]["state"] == "spare"
    assert all(PASSWORD not in text for text in outputs)
    # Nor in the database files (SQLite main file and its WAL), nor anywhere in the state directory.
    for path in state_dir.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_password_from_environment(anvil: Anvil) -> None:
    anvil("blade", "enroll", "b2", "--bmc", "ipmi://127.0.0.1:6230", "--username", "admin",
          env={"ANVIL_BMC_PASSWORD": PASSWORD})
    assert json.loads(anvil("blade", "show", "b2", "-o", "json").out)["driver"] == "ipmi"


def test_password_is_never_an_argument(anvil: Anvil) -> None:
    res = anvil("blade", "enroll", "b3", "--bmc", "ipmi://127.0.0.1:6230", "--username", "admin",
                "--password", "x", check=False)
    assert res.code != 0
    res = anvil("blade", "enroll", "b3", "--bmc", "ipmi://127.0.0.1:6230", "--username", "admin", check=False)
    assert res.code != 0 and "--password-stdin or ANVIL_BMC_PASSWORD" in res.err


def test_key_file_is_private(anvil: Anvil, state_dir: Path) -> None:
    _enroll(anvil)
    assert (state_dir / "secrets.key").stat().st_mode & 0o777 == 0o600


def test_bad_enrolments_name_the_field_and_change_nothing(anvil: Anvil) -> None:
    cases = [
        (["--bmc", "http://x/redfish/v1/Systems/1"], "bmc: "),
        (["--bmc", "redfish+https://bmc1/redfish/v1/"], "must name a system"),
        (["--bmc", "ipmi://127.0.0.1:6230", "--nic", "eth0=01:00:5e:00:00:01"], "nics[0].mac: "),
        (["--bmc", "ipmi://127.0.0.1:6230", "--nic", "eth0=52:54:00:00:09:01@sw1:5"], "switch 'sw1' is not enrolled"),
        (["--bmc", "ipmi://admin:pw@127.0.0.1:6230"], "credentials do not belong"),
    ]
    for args, message in cases:
        res = anvil("blade", "enroll", "bad", "--username", "u", "--password-stdin", *args, input="pw\n",
                    check=False)
        assert res.code != 0, args
        assert message in res.err, (args, res.err)
        assert len(res.err.strip().splitlines()) == 1
    assert json.loads(anvil("blade", "list", "-o", "json").out) == []


def test_duplicate_blade_and_mac_conflict(anvil: Anvil) -> None:
    _enroll(anvil)
    res = anvil("blade", "enroll", "blade01", "--bmc", BMC, "--username", "a", "--password-stdin", input="p\n",
                check=False)
    assert res.code == 1 and "already enrolled" in res.err
    res = anvil("blade", "enroll", "blade02", "--bmc", BMC, "--username", "a", "--password-stdin",
                "--nic", "eth0=52:54:00:00:01:01", input="p\n", check=False)
    assert res.code == 1 and "MAC or switch port is already used" in res.err
    assert [b["name"] for b in json.loads(anvil("blade", "list", "-o", "json").out)] == ["blade01"]


def test_delete_blade(anvil: Anvil) -> None:
    _enroll(anvil)
    anvil("blade", "delete", "blade01")
    res = anvil("blade", "show", "blade01", check=False)
    assert res.code == 1 and "blade 'blade01' not found" in res.err


# ---- `anvil blade inspect` against recorded Redfish services (tests/fixtures/redfish) ----------------


def _nic_rows(state_dir: Path, blade: str) -> list[tuple[int, int, str, str]]:
    from sqlalchemy import select

    from appliance.store import open_store
    from appliance.store.tables import BladeNicRow, BladeRow

    store = open_store(f"sqlite:///{state_dir / 'anvil.db'}", migrate=False)
    try:
        with store.read() as s:
            rows = s.execute(select(BladeNicRow.id, BladeNicRow.position, BladeNicRow.name, BladeNicRow.mac)
                             .join(BladeRow, BladeRow.id == BladeNicRow.blade_id).where(BladeRow.name == blade)
                             .order_by(BladeNicRow.position)).all()
        return [(r[0], r[1], r[2], r[3]) for r in rows]
    finally:
        store.close()


def test_inspect_of_a_rack_server_keeps_its_cabling_and_inspecting_again_changes_nothing(
        anvil: Anvil, state_dir: Path) -> None:
    """DMTF's public-rackmount1: a VLAN sub-interface and the BMC's host interface beside two NICs,
    one of which uses a MAC other than its burned-in one (issue 21: inspect said the blade's own MAC
    was "already enrolled on another blade" and recorded nothing)."""
    with recorded_bmc("dmtf-public-rackmount1") as bmc:
        anvil("switch", "enroll", "tor", "--address", "snmp://127.0.0.1:1161", "--password-stdin", input="public\n")
        # Cabled at enrolment by the MACs the operator saw: eth1 by the one it uses now.
        anvil("blade", "enroll", "rack1", "--bmc", bmc.address("/redfish/v1/Systems/437XR1138R2"),
              "--username", "admin", "--password-stdin", "--nic", "eth0=12:44:6A:3B:04:11@tor:1",
              "--nic", "eth1=aa:bb:cc:dd:ee:00@tor:2", input="password\n")
        shown = json.loads(anvil("blade", "inspect", "rack1", "-o", "json").out)
        assert shown["nics"] == [
            {"name": "eth0", "mac": "12:44:6a:3b:04:11", "switch": "tor", "port": "1"},
            {"name": "eth1", "mac": "12:44:6a:3b:88:90", "switch": "tor", "port": "2"}]
        assert (shown["cpus"], shown["memoryGiB"], shown["facts"]["threads"]) == (16, 96, 16)
        assert shown["facts"]["currentMacs"] == {"12:44:6a:3b:88:90": "aa:bb:cc:dd:ee:00"}
        assert shown["facts"]["systemUuid"] == "38947555-7742-3448-3784-823347823834"
        rows = _nic_rows(state_dir, "rack1")

        again = anvil("blade", "inspect", "rack1")
        assert again.out.strip() == "inspected blade rack1: 16 CPUs, 96 GiB, 2 NICs, 0 HBAs"
        assert json.loads(anvil("blade", "show", "rack1", "-o", "json").out) == shown
        assert _nic_rows(state_dir, "rack1") == rows       # the same rows: updated in place, not re-created
        assert bmc.writes == []


def test_inspect_refuses_a_mac_another_blade_holds_and_names_that_blade(anvil: Anvil) -> None:
    """DMTF's public-bladed-partitions: partitions 1 and 2 report the same NIC MAC."""
    with recorded_bmc("dmtf-public-bladed-partitions") as bmc:
        for name, system in (("part1", "ComposedPartition1"), ("part2", "ComposedPartition2")):
            anvil("blade", "enroll", name, "--bmc", bmc.address(f"/redfish/v1/Systems/{system}"),
                  "--username", "admin", "--password-stdin", input="password\n")
        before = anvil("blade", "show", "part2", "-o", "json").out
        anvil("blade", "inspect", "part1")
        res = anvil("blade", "inspect", "part2", check=False)
        assert res.code == 1
        assert ("blade 'part2': inspected NIC '2' has MAC aa:bb:cc:dd:ee:ff, which is enrolled on blade 'part1'; "
                "nothing was recorded") in res.err
        assert anvil("blade", "show", "part2", "-o", "json").out == before
