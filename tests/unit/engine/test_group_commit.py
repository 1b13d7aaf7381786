"""The engine's group commit: the step transitions of many jobs written together. A hundred
jobs moving at once were seven statements each under the one SQLite writer lock (1.4 s of a
100-node deploy's 4.9 s); the batch writes the same rows with one statement per kind of write."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update

from appliance.engine.runner import Engine, LeaseLost, Snapshot
from appliance.services.jobs import JobService
from appliance.store import Store, changes
from appliance.store.tables import ChangeRow, JobEventRow, JobRow, JobStepRow
from tests.unit.engine.fakes import FakeHardware, add_profile, make_engine, rack, run_until_idle


def _jobs(store: Store, tmp_path: Path, n: int) -> tuple[Engine, list[str]]:
    rack(store, tmp_path, blades=n)
    ids = []
    for i in range(1, n + 1):
        add_profile(store, f"web-{i:02d}", i)
        ids.append(JobService(store).submit_assign(f"web-{i:02d}", tenant="acme", blade=f"b{i:02d}").id)
    engine = make_engine(store, FakeHardware(), owner="node-a")
    assert engine.leadership.try_acquire()
    assert sorted(engine._claim(ids)) == sorted(ids)
    return engine, ids


def _rows(store: Store, job_id: str) -> tuple[Any, ...]:
    with store.read() as s:
        job = s.execute(select(JobRow.state, JobRow.step_index, JobRow.data, JobRow.finished_at.is_(None))
                        .where(JobRow.id == job_id)).one()
        steps = s.execute(select(JobStepRow.state, JobStepRow.attempts, JobStepRow.result)
                          .where(JobStepRow.job_id == job_id).order_by(JobStepRow.idx)).all()
        events = s.execute(select(JobEventRow.kind, JobEventRow.message, JobEventRow.data)
                           .where(JobEventRow.job_id == job_id).order_by(JobEventRow.id)).all()
        # the submitted event names the profile: the same text apart from that
        return tuple(job), [tuple(r) for r in steps], [tuple(r) for r in events if r.kind != "submitted"]


def _done(snap: Snapshot, result: dict[str, Any]) -> tuple[Any, ...]:
    return (snap.step_index, f"step{snap.step_index}", result, snap.data, [("info", "a note")], [])


def test_a_batch_writes_what_one_job_at_a_time_writes(store: Store, tmp_path: Path) -> None:
    engine, ids = _jobs(store, tmp_path, 4)
    alone, batched = ids[0], ids[1:]
    snaps = dict(zip(batched, engine._advance_many([(j, None) for j in batched]), strict=True))
    one = engine._advance(alone)
    for _ in range(2):   # two steps done, the third started
        results = engine._advance_many([(j, _done(snaps[j], {"n": snaps[j].step_index})) for j in batched])  # type: ignore[misc]
        snaps = {j: r for j, r in zip(batched, results, strict=True) if isinstance(r, Snapshot)}
        one = engine._advance(alone, _done(one, {"n": one.step_index}))  # type: ignore[arg-type]
    assert {s.step_index for s in snaps.values()} == {one.step_index} == {2}
    assert all(s.data == one.data for s in snaps.values())
    for j in batched:
        assert _rows(store, j) == _rows(store, alone)


def test_statements_of_a_batch_do_not_grow_with_its_jobs(store: Store, tmp_path: Path) -> None:
    engine, ids = _jobs(store, tmp_path, 6)
    counted: list[str] = []

    def count(*args: Any) -> None:
        counted.append(str(args[2]))

    engine._advance_many([(j, None) for j in ids])
    snaps = [engine._snapshot(j) for j in ids]
    event.listen(store.engine, "before_cursor_execute", count)
    try:
        engine._advance_many([(s.id, _done(s, {})) for s in snaps[:2]])  # type: ignore[misc]
        two = len(counted)
        counted.clear()
        engine._advance_many([(s.id, _done(s, {})) for s in snaps[2:]])  # type: ignore[misc]
        four = len(counted)
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert four == two, f"2 jobs: {two} statements, 4 jobs: {four}"


def test_a_lost_lease_in_a_batch_stops_only_that_job(store: Store, tmp_path: Path) -> None:
    engine, ids = _jobs(store, tmp_path, 3)
    with store.write() as s:
        s.execute(update(JobRow).where(JobRow.id == ids[1]).values(lease_owner="node-b"))
    before = _rows(store, ids[1])
    results = engine._advance_many([(j, None) for j in ids])
    assert isinstance(results[1], LeaseLost)
    assert [r.step_index for r in results if isinstance(r, Snapshot)] == [0, 0]
    assert _rows(store, ids[1]) == before


def test_a_write_that_fails_for_one_job_undoes_only_that_job(store: Store, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    engine, ids = _jobs(store, tmp_path, 3)
    snaps = [r for r in engine._advance_many([(j, None) for j in ids]) if isinstance(r, Snapshot)]
    before = _rows(store, ids[2])
    queued = [{"resource": changes.VLAN, "name": "sw1:1", "action": "set", "after": {}, "tenant": "acme"}]
    write_queued = changes.write_queued

    def failing(conn: Any, info: Any, ref: changes.JobStep, rows: Any, *, at: Any) -> None:
        if ref.job_id == ids[2]:
            raise RuntimeError("the change record cannot be written")
        write_queued(conn, info, ref, rows, at=at)

    monkeypatch.setattr(changes, "write_queued", failing)
    results = engine._advance_many(
        [(s.id, (0, "step0", {}, s.data, [], queued)) for s in snaps])  # type: ignore[misc]
    assert [type(r).__name__ for r in results] == ["Snapshot", "Snapshot", "RuntimeError"]
    assert [r.step_index for r in results[:2] if isinstance(r, Snapshot)] == [1, 1]
    assert _rows(store, ids[2]) == before


def test_a_jobs_submitter_is_read_once_for_all_its_change_records(store: Store, tmp_path: Path) -> None:
    """bind, set-vlans and activate each record changes in the submitter's name: looked up once per
    job, not in every one of those transactions (under SQLite, inside the one writer lock)."""
    rack(store, tmp_path, blades=1)
    add_profile(store, "web-01", 1)
    job = JobService(store).submit_assign("web-01", tenant="acme", blade="b01", created_by="user:ann")
    engine = make_engine(store, FakeHardware(), owner="node-a")
    looked_up: list[str] = []

    def count(*args: Any) -> None:
        if str(args[2]).startswith("SELECT jobs.created_by"):
            looked_up.append(str(args[2]))

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        asyncio.run(run_until_idle(engine))
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    with store.read() as s:
        assert s.scalar(select(JobRow.state).where(JobRow.id == job.id)) == "succeeded"
        who = set(s.scalars(select(ChangeRow.who).where(ChangeRow.job_id == job.id)))
    assert who == {"user:ann"}
    assert len(looked_up) == 1, looked_up
