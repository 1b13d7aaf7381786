"""Jobs say who started them, how long they took and why they failed, and are found by state,
kind, profile and blade (and by the short id lists show); audit entries say what happened."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.drivers.protocols import Secret
from appliance.errors import NotFound
from appliance.secrets import SecretBox, ensure_key
from appliance.services.audit import AuditService
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.services.scope import Scope
from appliance.services.users import UserService
from appliance.store import Store
from appliance.store.audit import Actor, acting_as
from appliance.store.tables import JobRow
from tests.support.profiles import one_nic_profile


@pytest.fixture
def seeded(store: Store, tmp_path: Path) -> Store:
    ensure_key(tmp_path / "k")
    for i in (1, 2):
        BladeService(store, SecretBox(tmp_path / "k")).enroll(Enrollment(
            name=f"rf-0{i}", bmc=f"fake://rf-0{i}", username="u", password=Secret("p"),
            nics=(NicSpec("eth0", f"aa:00:00:00:00:0{i}"),)))
    for n, (name, tenant) in enumerate((("web-01", "acme"), ("db-01", "globex")), 1):
        ProfileService(store).import_document(one_nic_profile(name, tenant, n))
    UserService(store).add("alice", "alice-pass-1", role="operator", tenant="acme")
    return store


def test_jobs_carry_who_how_long_and_why_and_filter_by_kind_profile_and_blade(seeded: Store) -> None:
    jobs = JobService(seeded)
    with acting_as(Actor("user:alice", "console 10.0.0.9")):
        stamp = jobs.submit_assign("web-01", tenant="acme", blade="rf-02", created_by="user:alice")
    other = jobs.submit_assign("db-01", tenant="globex", created_by="local:root")
    with seeded.write() as s:
        row = s.get(JobRow, stamp.id)
        assert row is not None
        row.state, row.error, row.data = "rolled_back", "set-vlans: VLAN(s) 300 not configured", {"blade": "rf-02"}
        row.finished_at = row.created_at
    got = jobs.get(stamp.id).public()
    assert (got["createdBy"], got["error"], got["durationSeconds"]) == (
        "user:alice", "set-vlans: VLAN(s) 300 not configured", 0.0)
    assert [j.id for j in jobs.list(kind="stamp", blade="rf-02")] == [stamp.id]
    assert [j.id for j in jobs.list(profile="acme/web-01")] == [stamp.id]
    assert [j.id for j in jobs.list(profile="db-01")] == [other.id]
    assert [j.id for j in jobs.list(state="rolled_back")] == [stamp.id]
    assert jobs.list(kind="failover") == []
    # The short id of lists finds the job, within what the caller sees.
    assert jobs.get(stamp.id[:8]).id == stamp.id
    with pytest.raises(NotFound):
        jobs.get(other.id[:8], scope=Scope("acme", "user:1"))
    with pytest.raises(NotFound):
        jobs.get("0000000")       # too short to be a prefix


def test_audit_entries_say_what_happened_and_who_in_words(seeded: Store) -> None:
    with acting_as(Actor("user:alice", "console 10.0.0.9")):
        job = JobService(seeded).submit_assign("web-01", tenant="acme", blade="rf-02", created_by="user:alice")
    entries, _ = AuditService(seeded).list()
    assert entries[0]["summary"] == f"operator alice assigned acme/web-01 to blade rf-02, job {job.id[:8]}"
    with seeded.read() as s:
        assert s.scalar(select(JobRow.created_by).where(JobRow.id == job.id)) == "user:alice"
