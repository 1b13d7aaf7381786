"""anvil capacity, usage and changes from the command line, against the local store."""

from __future__ import annotations

import getpass
import json

from tests.cli.conftest import Anvil

BMC = "redfish+http://127.0.0.1:8000/redfish/v1/Systems/00000000-0000-0000-0000-000000000001"


def test_an_enrolment_and_maintenance_show_in_changes_capacity_and_an_empty_usage(anvil: Anvil) -> None:
    anvil("blade", "enroll", "blade01", "--bmc", BMC, "--username", "admin", "--password-stdin",
          "--nic", "eth0=52:54:00:00:01:01", "--cpus", "16", "--memory-gib", "128", "--chassis", "c1", "--slot", "1",
          input="pw\n")
    anvil("blade", "maintenance", "blade01", "on", "--reason", "fan")

    lines = anvil("changes", "--resource", "blade/blade01", "-o", "jsonl").out.splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["action"], (r["after"] or {}).get("state")) for r in records] == [("create", "spare"),
                                                                                ("update", "maintenance")]
    assert {r["who"] for r in records} == {f"local:{getpass.getuser()}"}
    assert "password" not in lines[0]
    table = anvil("changes").out
    assert "blade/blade01" in table and "spare → maintenance" in table

    cap = json.loads(anvil("capacity", "-o", "json").out)
    assert cap["blades"] == {"total": 1, "spare": 0, "committed": 0, "inUse": 0, "failed": 0, "maintenance": 1}
    assert cap["cpus"]["maintenance"] == 16 and [c["name"] for c in cap["chassis"]] == ["c1"]
    shown = anvil("capacity").out
    assert "MAINTENANCE" in shown and "pool     spares" in shown

    csv = anvil("usage", "--from", "2026-01-01", "--to", "2027-01-01", "-o", "csv").out
    assert csv == "scope,tenant,profile,from,to,blade_seconds,blade_hours\n"
    assert json.loads(anvil("usage", "--from", "2026-01-01", "--to", "2027-01-01", "-o", "json").out)["profiles"] == []


def test_bad_times_and_kinds_are_refused_naming_the_option(anvil: Anvil) -> None:
    for args, where in ((("usage", "--from", "soon", "--to", "2027-01-01"), "--from"),
                        (("usage", "--from", "2027-01-02", "--to", "2027-01-01"), "to"),
                        (("changes", "--since", "2026-13-01"), "--since"),
                        (("changes", "--resource", "rack/r1"), "--resource")):
        res = anvil(*args, check=False)
        assert res.code != 0 and res.err.startswith("anvil: error: ") and where in res.err, (args, res.err)
