"""Blade enrolment from the command line; the BMC password never shows."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.cli.conftest import Anvil

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
