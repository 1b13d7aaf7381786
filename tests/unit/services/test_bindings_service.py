"""Forgetting the bindings of blades whose hardware is gone (``anvil lab down --force``):
only the named blades, their profiles, jobs and failovers; audited; idempotent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from appliance.domain.failover import FailoverState
from appliance.domain.states import JobState
from appliance.secrets import SecretBox
from appliance.services.audit import AuditFilter, AuditService
from appliance.services.bindings import Forgotten, forget_blades
from appliance.services.blades import BladeService
from appliance.services.failover import FailoverService
from appliance.services.profiles import ProfileService
from appliance.store import Store
from appliance.store.audit import Actor, acting_as
from appliance.store.repos import jobs as jobs_repo
from appliance.store.tables import BindingRow, BladeRow, FailoverDomainRow, JobRow, ProfileRow
from tests.unit.services.test_failover_service import bind, blade, profile

REASON = "the lab was taken down with `anvil lab down --force`"


def _state(store: Store) -> dict[str, object]:
    with store.read() as s:
        return {
            "blades": {b.name: b.state for b in s.scalars(select(BladeRow))},
            "profiles": {p.name: p.state for p in s.scalars(select(ProfileRow))},
            "live": sorted((p, b) for p, b in s.execute(
                select(ProfileRow.name, BladeRow.name).join(BindingRow, BindingRow.profile_id == ProfileRow.id)
                .join(BladeRow, BladeRow.id == BindingRow.blade_id).where(BindingRow.state == "live"))),
            "jobs": {j.subject: (j.state, j.error) for j in s.scalars(select(JobRow))},
        }


def test_forgetting_lab_blades_unassigns_their_profiles_and_ends_their_work_but_nothing_else(
        store: Store, tmp_path: Path) -> None:
    box = SecretBox(tmp_path / "secrets.key")
    for i, name in enumerate(("rf-01", "rf-02", "rf-03", "other-01"), 1):
        blade(store, box, name, i)
    for i, name in enumerate(("web-01", "web-02", "db-01"), 1):
        profile(store, name, i)
    bind(store, "web-01", "rf-01")       # active on a lab blade, with a failover in progress
    bind(store, "web-02", "rf-02")       # stamping on a lab blade when the session crashed
    bind(store, "db-01", "other-01")     # another rack's blade: never touched
    with store.write() as s:
        s.add(FailoverDomainRow(name="prod-web"))
        for prof, state in (("web-02", "stamping"), ("db-01", "active")):
            p = s.scalar(select(ProfileRow).where(ProfileRow.name == prof))
            assert p is not None
            p.state = state
            job = jobs_repo.create(s, kind="stamp", subject=f"profile acme/{prof}", profile_id=p.id, tenant="acme",
                                   params={}, step_names=["bind", "power-on"])
            jobs_repo.set_state(s, job, JobState.RUNNING)
            job.lease_owner, job.lease_expires_at = "killed:1", datetime.now(UTC) - timedelta(seconds=5)
        s.scalar(select(BladeRow).where(BladeRow.name == "rf-02")).state = "stamping"  # type: ignore[union-attr]
    FailoverService(store).open_failover(tenant="acme", profile="web-01", reason="BMC unreachable")
    FailoverService(store).open_failover(tenant="acme", profile="db-01", reason="BMC unreachable")

    with acting_as(Actor("local:alice", "cli")):
        got = forget_blades(store, ["rf-01", "rf-02", "rf-03", "ghost"], reason=REASON)
    fo_web = next(f for f in FailoverService(store).list_failovers() if f.profile == "web-01")
    fo_db = next(f for f in FailoverService(store).list_failovers() if f.profile == "db-01")
    web02_job = _job_id(store, "profile acme/web-02")
    assert got == [Forgotten("rf-01", "acme/web-01", (), (fo_web.id,)),
                   Forgotten("rf-02", "acme/web-02", (web02_job,), ())]
    after = _state(store)
    assert after["live"] == [("db-01", "other-01")]
    assert after["blades"] == {"rf-01": "spare", "rf-02": "spare", "rf-03": "spare", "other-01": "active"}
    assert after["profiles"] == {"web-01": "unassigned", "web-02": "unassigned", "db-01": "active"}
    assert after["jobs"] == {"profile acme/web-02": ("failed", REASON), "profile acme/db-01": ("running", None)}
    assert FailoverState(fo_web.state) is FailoverState.FAILED and fo_web.reason == REASON
    assert FailoverState(fo_db.state) is FailoverState.DETECTED
    # The profiles keep their identities, as after a release, and the blades can now go.
    held = {v for _p, _k, v in ProfileService(store).get("ServerProfile", "acme", "web-01").identities}
    assert "02:a0:00:00:00:01" in held
    for name in ("rf-01", "rf-02", "rf-03"):
        BladeService(store, box).delete(name)
    entries = AuditService(store).list(AuditFilter(resource="profile"))[0]
    assert any(e["who"] == "local:alice" and e["name"].endswith("web-01")
               and (e["after"] or {}).get("state") == "unassigned" for e in entries)
    # Once more: nothing left to forget, nothing changes.
    again = _state(store)
    assert forget_blades(store, ["rf-01", "rf-02"], reason=REASON) == []
    assert _state(store) == again


def _job_id(store: Store, subject: str) -> str:
    with store.read() as s:
        job_id = s.scalar(select(JobRow.id).where(JobRow.subject == subject))
    assert job_id is not None
    return job_id
