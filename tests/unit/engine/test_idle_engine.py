"""An idle leader looks for jobs five times a second with a read, and writes only when it finds
one: a claim with nothing to claim took the store's one writer from the requests and jobs that
needed it (and a little of the process's one CPU), five times a second for nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from appliance.services.jobs import JobService
from appliance.store import Store
from tests.unit.engine.fakes import FakeHardware, add_profile, make_engine, rack


async def test_an_idle_leader_claims_nothing_and_still_takes_a_new_job_at_once(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    engine = make_engine(store, FakeHardware())
    claims: list[list[str]] = []
    real = engine._claim

    def counted(ids: list[str]) -> Any:
        claims.append(list(ids))
        return real(ids)

    engine._claim = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    running = asyncio.create_task(engine.run(stop))
    try:
        for _ in range(100):   # leader within 5 s
            if engine.is_leader:
                break
            await asyncio.sleep(0.05)
        assert engine.is_leader
        await asyncio.sleep(1.2)   # six turns of the dispatcher
        assert claims == [], "an idle turn wrote a claim"

        job = JobService(store).submit_assign("web-01", tenant="acme", blade="b02")
        engine.wake()
        t0 = time.monotonic()
        for _ in range(100):
            if claims:
                break
            await asyncio.sleep(0.02)
        assert claims == [[job.id]] and time.monotonic() - t0 < 2.0
        assert JobService(store).get(job.id).state != "pending"
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
