"""CLI lists at a glance: binding, power and health columns, 120 columns at most by default
(the BMC's URL in -o wide and show), NICs of `blade show` as a table, search, filter and sort."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from appliance.services.failover import FailoverService, HealthSample
from appliance.store import open_store
from appliance.store.tables import BindingRow, BladeRow, ProfileRow
from tests.cli.conftest import Anvil

LONG_BMC = ("redfish+https://bmc-of-a-blade-with-a-long-name.rack-07.datacenter-east.example.net:8443"
            "/redfish/v1/Systems/4c4c4544-0042-3510-8052-b4c04f384d32")
WEB = """apiVersion: anvil/v1
kind: ServerProfile
metadata: {name: web-with-a-rather-long-profile-name-01, tenant: a-tenant-with-a-long-name}
spec:
  identity:
    nics:
      - {name: eth0, mac: "02:a0:00:00:00:01"}
"""


def _bind_and_sample(state_dir: Path) -> None:
    store = open_store(f"sqlite:///{state_dir / 'anvil.db'}", migrate=False)
    try:
        with store.write() as s:
            pid = s.scalar(select(ProfileRow.id))
            row = s.scalar(select(BladeRow).where(BladeRow.name == "blade-02"))
            assert pid is not None and row is not None
            s.add(BindingRow(profile_id=pid, blade_id=row.id, generation=1, state="live"))
            row.state = "active"
        FailoverService(store).record_health("blade-02", HealthSample(
            ok=True, power="on", health="ok", at=datetime.now(UTC) - timedelta(seconds=75)))
    finally:
        store.close()


def test_blade_and_profile_lists_fit_120_columns_and_show_binding_power_and_health(anvil: Anvil, state_dir: Path,
                                                                                   tmp_path: Path) -> None:
    for i in (1, 2):
        anvil("blade", "enroll", f"blade-0{i}", "--bmc", LONG_BMC.replace("rack-07", f"rack-0{i}"), "--username",
              "admin", "--password-stdin", "--nic", f"eth0=52:54:00:00:0{i}:01", "--nic",
              f"eth1=52:54:00:00:0{i}:02", "--cpus", "16", "--memory-gib", "64", "--chassis", f"c{3 - i}",
              "--slot", "1", input="pw\n")
    (tmp_path / "web.yaml").write_text(WEB)
    anvil("profile", "import", str(tmp_path / "web.yaml"))
    _bind_and_sample(state_dir)

    table = anvil("blade", "list").out.splitlines()
    assert table[0].split() == ["NAME", "STATE", "PROFILE", "POWER", "HEALTH", "(AGE)", "CHASSIS", "SLOT", "CPUS",
                                "MEM", "GiB"]
    assert all(len(line) <= 120 for line in table), "\n".join(table)
    assert "redfish+https" not in "\n".join(table)
    row = table[2].split()
    assert row[:2] == ["blade-02", "active"] and row[3:6] == ["on", "ok", "(1m)"]
    # The widest column is cut to fit, and says so; -o wide and JSON carry it whole.
    assert row[2].startswith("a-tenant-with-a-long-name/web-with-a-rather") and row[2].endswith("…")
    assert table[1].split()[:5] == ["blade-01", "spare", "-", "-", "-"]

    wide = anvil("blade", "list", "-o", "wide").out
    assert LONG_BMC.replace("rack-07", "rack-02") in wide and "DRIVER" in wide
    assert "a-tenant-with-a-long-name/web-with-a-rather-long-profile-name-01" in wide
    by_chassis = anvil("blade", "list", "--sort", "chassis").out.splitlines()
    assert [line.split()[0] for line in by_chassis[1:]] == ["blade-02", "blade-01"]
    found = anvil("blade", "list", "--search", "long-profile", "-o", "json").out
    assert [b["name"] for b in json.loads(found)] == ["blade-02"]
    spare = anvil("blade", "list", "--filter", "state=spare", "-o", "json").out
    assert [b["name"] for b in json.loads(spare)] == ["blade-01"]
    bad = anvil("blade", "list", "--filter", "colour=red", check=False)
    assert bad.code == 2 and "KEY one of state, chassis, profile, tenant" in bad.err

    shown = anvil("blade", "show", "blade-02").out.splitlines()
    assert any(line.startswith("health ") and "ok, sampled 1m ago" in line for line in shown)
    nic_table = shown[shown.index("") + 1:]
    assert nic_table[0].split() == ["NAME", "MAC", "SWITCH", "PORT"]
    assert nic_table[1].split() == ["eth0", "52:54:00:00:02:01", "-", "-"]

    profiles = anvil("profile", "list").out.splitlines()
    assert profiles[0].split()[:5] == ["NAME", "TENANT", "KIND", "STATE", "BLADE"]
    assert "blade-02" in profiles[1] and all(len(line) <= 120 for line in profiles)


def test_job_and_audit_lists_explain_themselves(anvil: Anvil, state_dir: Path, tmp_path: Path) -> None:
    from appliance.services.jobs import JobService
    from appliance.services.users import UserService
    from appliance.store.audit import Actor, acting_as
    from appliance.store.tables import JobRow

    anvil("blade", "enroll", "rf-02", "--bmc", "fake://rf-02", "--username", "u", "--password-stdin",
          "--nic", "eth0=52:54:00:00:02:01", input="pw\n")
    (tmp_path / "web.yaml").write_text(WEB.replace("web-with-a-rather-long-profile-name-01", "web-01")
                                       .replace("a-tenant-with-a-long-name", "acme"))
    anvil("profile", "import", str(tmp_path / "web.yaml"))
    store = open_store(f"sqlite:///{state_dir / 'anvil.db'}", migrate=False)
    try:
        UserService(store).add("alice", "alice-pass-1", role="operator", tenant="acme")
        with acting_as(Actor("user:alice", "console 10.0.0.9")):
            job = JobService(store).submit_assign("web-01", tenant="acme", blade="rf-02", created_by="user:alice")
        with store.write() as s:
            row = s.get(JobRow, job.id)
            assert row is not None
            row.state, row.error, row.data = "rolled_back", "set-vlans: VLAN(s) 300 not configured on the switch", \
                {"blade": "rf-02"}
            row.finished_at = row.created_at + timedelta(seconds=2.5)
    finally:
        store.close()
    lines = anvil("job", "list").out.splitlines()
    assert lines[0].split() == ["JOB", "KIND", "PROFILE", "STATE", "BLADE", "TOOK", "BY", "REASON", "/", "NOW"]
    assert lines[1].split()[:7] == [job.id[:8], "stamp", "acme/web-01", "rolled_back", "rf-02", "2.5s",
                                    "user:alice"]
    assert "set-vlans: VLAN(s) 300 not configured on the switch" in lines[1] and len(lines[1]) <= 120
    assert anvil("job", "list", "--blade", "rf-01").out.count("\n") == 1     # the header only
    shown = anvil("job", "show", job.id[:8]).out
    assert f"job {job.id}: stamp profile acme/web-01 — rolled_back" in shown
    audit = anvil("audit", "list", "--resource", "job").out.splitlines()
    assert audit[0].split() == ["ID", "WHEN", "SUMMARY", "ORIGIN"]
    assert f"operator alice assigned acme/web-01 to blade rf-02, job {job.id[:8]}" in audit[1]
