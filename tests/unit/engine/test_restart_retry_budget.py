"""A step that was only interrupted by restarts keeps its whole retry budget (STYLE: "nothing is treated
as failed"). Today ``job_steps.attempts`` counts every start, crashes included, and the runner compares it
with ``Step.attempts``: a step resumed 4 times after kill -9 treats its first retryable error as fatal."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update

from appliance.drivers.errors import BmcUnreachable
from appliance.services.jobs import JobService
from appliance.store import Store
from appliance.store.tables import JobStepRow
from tests.unit.engine.fakes import FakeHardware, add_profile, make_engine, rack, run_until_idle


async def test_a_step_resumed_after_crashes_still_retries_a_transient_error(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    hw = FakeHardware()
    hw.bmcs.fail("fake://b01", "set_next_boot", BmcUnreachable("b01", "fake", "set_next_boot", "timeout"), times=1)
    job = JobService(store).submit_assign("web-01", tenant="acme", blade="b01")
    # As left by four appliance processes killed while running set-boot (each start counts one attempt).
    with store.write() as s:
        s.execute(update(JobStepRow).where(JobStepRow.job_id == job.id, JobStepRow.name == "set-boot")
                  .values(attempts=4, state="running"))
    await run_until_idle(make_engine(store, hw))
    info = JobService(store).get(job.id)
    assert info.state == "succeeded", info.error
