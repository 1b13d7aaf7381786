"""A profile whose site lease is held by another site is never stamped here."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from appliance.errors import Conflict
from appliance.services.jobs import JobService
from appliance.store import Store
from appliance.store.tables import BindingRow, ProfileRow
from tests.unit.engine.fakes import FakeHardware, add_profile, make_engine, rack, run_until_idle


def lease(store: Store, name: str, site: str | None) -> None:
    with store.write() as s:
        s.execute(update(ProfileRow).where(ProfileRow.name == name).values(site_lease=site))


def test_assign_refuses_a_profile_held_by_another_site(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    lease(store, "web-01", "site-a")
    with pytest.raises(Conflict, match="profile web-01 is held by site site-a"):
        JobService(store).submit_assign("web-01", tenant="acme", blade="b01")


async def test_the_engine_refuses_it_when_the_lease_moved_after_the_job_was_submitted(
        store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    job = JobService(store).submit_assign("web-01", tenant="acme", blade="b01")
    lease(store, "web-01", "site-a")
    await run_until_idle(make_engine(store, FakeHardware()))
    info = JobService(store).get(job.id)
    assert info.state in ("failed", "rolled_back")
    assert "held by site site-a" in (info.error or "")
    with store.read() as s:
        assert s.query(BindingRow).count() == 0


async def test_a_profile_held_here_stamps(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    lease(store, "web-01", "site-a")
    lease(store, "web-01", None)    # DR activation took the lease
    job = JobService(store).submit_assign("web-01", tenant="acme", blade="b01")
    await run_until_idle(make_engine(store, FakeHardware()))
    assert JobService(store).get(job.id).state == "succeeded"
