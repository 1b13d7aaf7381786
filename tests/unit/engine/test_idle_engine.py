"""An idle leader looks for jobs five times a second with a read, and writes only when it finds
one: a claim with nothing to claim took the store's one writer from the requests and jobs that
needed it (and a little of the process's one CPU), five times a second for nothing.

The dispatcher's turns are the same on either store: these run on SQLite only."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.engine.runner import Engine
from appliance.engine.steps import KINDS
from appliance.services.jobs import JobService
from appliance.store import Store
from tests.unit.engine.fakes import FAST, FakeHardware, add_profile, make_engine, rack


@pytest.fixture
def store(sqlite_store: Store) -> Store:
    return sqlite_store


def counted_claims(engine: Engine) -> list[list[str]]:
    """The ids of each claim ``engine`` writes from now on."""
    claims: list[list[str]] = []
    real = engine._claim

    def counted(ids: list[str]) -> list[str]:
        claims.append(list(ids))
        return real(ids)

    engine._claim = counted  # type: ignore[method-assign,assignment]
    return claims


async def until_leader(engine: Engine) -> None:
    for _ in range(100):   # leader within 5 s
        if engine.is_leader:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the engine did not become the leader within 5 s")


async def test_an_idle_leader_claims_nothing_and_still_takes_a_new_job_at_once(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path)
    add_profile(store, "web-01", 1)
    engine = make_engine(store, FakeHardware())
    claims = counted_claims(engine)
    stop = asyncio.Event()
    running = asyncio.create_task(engine.run(stop))
    try:
        await until_leader(engine)
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
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


async def test_a_burst_of_submits_is_claimed_in_a_few_writes_not_one_each(store: Store, tmp_path: Path) -> None:
    """A hundred deploy requests arrive one writer-thread turn apart, each waking the engine; the
    dispatcher gathers them for ``claim_gather`` (30 ms by default; 0.5 s here, so that a loaded
    machine's slower submits still land in one window) instead of claiming each alone (a claim
    write and a turn per job: 0.6 s more CPU for 100 fake-hardware deploys)."""
    rack(store, tmp_path, blades=20)
    for i in range(1, 21):
        add_profile(store, f"web-{i:02d}", i)
    engine = Engine(store, FakeHardware(), KINDS, settings=replace(FAST, claim_gather=0.5))
    claims = counted_claims(engine)
    loop = asyncio.get_running_loop()

    def burst() -> list[str]:
        ids = []
        for i in range(1, 21):
            ids.append(JobService(store).submit_assign(f"web-{i:02d}", tenant="acme", blade=f"b{i:02d}").id)
            loop.call_soon_threadsafe(engine.wake)
        return ids

    stop = asyncio.Event()
    running = asyncio.create_task(engine.run(stop))
    try:
        await until_leader(engine)
        ids = await asyncio.to_thread(burst)
        for _ in range(100):
            if sum(len(c) for c in claims) >= len(ids):
                break
            await asyncio.sleep(0.05)
        assert sorted(i for c in claims for i in c) == sorted(ids)
        assert len(claims) <= 5, f"{len(claims)} claims for a burst of {len(ids)} submits: {claims}"
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
