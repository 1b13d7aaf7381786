"""Allocation from several processes never hands out an identity twice."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
from sqlalchemy import func, select

from appliance.domain.identities import IdentityKind
from appliance.services.pools import PoolService
from appliance.store import open_store
from appliance.store.tables import IdentityRow


def _allocate_many(url: str, count: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    from appliance.store.repos import identities as ids

    store = open_store(url, migrate=False)
    got = []
    try:
        for _ in range(count):
            with store.write() as s:
                got.append(ids.allocate(s, "macs", IdentityKind.MAC, profile_id=None, path=None))
    finally:
        store.close()
        queue.put(got)


def _run(url: str, procs: int, each: int) -> list[str]:
    store = open_store(url)
    PoolService(store).create("macs", "mac", "02:00:00:00:00:00", "02:00:00:ff:ff:ff")
    store.close()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_allocate_many, args=(url, each, queue)) for _ in range(procs)]
    for w in workers:
        w.start()
    results = [queue.get(timeout=240) for _ in workers]
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    return [v for r in results for v in r]


@pytest.mark.postgres
def test_four_processes_times_500_on_postgresql_give_2000_distinct(pg_url: str) -> None:
    got = _run(pg_url, 4, 500)
    assert len(got) == 2000
    assert len(set(got)) == 2000
    store = open_store(pg_url, migrate=False)
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(IdentityRow)) == 2000
    store.close()


def test_four_processes_on_sqlite_give_distinct_identities(tmp_path: Path) -> None:
    got = _run(f"sqlite:///{tmp_path / 'a.db'}", 4, 100)
    assert len(set(got)) == len(got) == 400
