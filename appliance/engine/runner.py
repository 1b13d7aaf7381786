"""The runner: claims jobs, runs their steps one at a time, resumes and rolls back.

For each step: commit "running" (attempts + 1), run it under a timeout, then
commit its result *and* ``step_index + 1`` in one transaction before the next
step starts. After a crash the in-flight step simply runs again (steps are
idempotent). Retryable errors back off on a bounded schedule; fatal ones undo
the steps already done, in reverse, ending in ``rolled_back`` (or ``failed``
when an undo fails, for an operator).

Database work runs on one worker thread (SQLite has one writer anyway), so the
event loop never waits on a lock.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import bindparam, insert, select, tuple_, update
from sqlalchemy.exc import OperationalError

from appliance.boot.tokens import BootKey
from appliance.domain.states import FINAL_JOB_STATES, JOB_TRANSITIONS, JobState, transition
from appliance.engine.leader import RENEW_EVERY, STANDBY_POLL, Leadership
from appliance.engine.model import EngineSettings, HardwarePort, JobKind, StepContext, StepRetry
from appliance.errors import AnvilError
from appliance.metrics import Metrics
from appliance.store import Store, changes
from appliance.store.repos import jobs as repo
from appliance.store.tables import JobEventRow, JobRow, JobStepRow

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: str
    kind: str
    state: JobState
    step_index: int
    params: dict[str, Any]
    data: dict[str, Any]
    step_states: tuple[str, ...]
    step_attempts: tuple[int, ...]


FAILURES = "_failures"   # job.data key: failed tries per step index
# What only the leader does beside driving jobs (the host pools' reconcile loop): run with the
# leader's stop event, cancelled with it; a loop must handle its own errors.
LeaderLoop = Callable[["Engine", asyncio.Event], Coroutine[Any, Any, None]]


class LeaseLost(Exception):
    """Another engine holds this job now; stop driving it."""


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError | StepRetry):
        return True
    return isinstance(exc, AnvilError) and exc.retryable


# (step index, step name, result, job data, events, hardware change records)
Done = tuple[int, str, dict[str, Any] | None, dict[str, Any], list[tuple[str, str]], list[dict[str, Any]]]
_ADVANCE_BATCH = 64     # jobs' step transitions per transaction (group commit)
_ADVANCE_TRIES = 3      # a batch the database aborted (deadlock victim) is tried this often
_LOOP_GRACE = 1.0       # s the leader's loops get to end on their own once its term is over

# The statements of _advance, built once: a hundred jobs at once make a thousand of each.
_J, _S = JobRow.__table__.c, JobStepRow.__table__.c
_JOB = select(_J.id, _J.kind, _J.state, _J.step_index, _J.step_count, _J.params, _J.data,
              _J.lease_owner).where(_J.id == bindparam("b_job"))
_STEP_DONE = (update(JobStepRow).where(_S.job_id == bindparam("b_job"), _S.idx == bindparam("b_idx"))
              .values(state="done", result=bindparam("b_result", type_=_S.result.type), error=None,
                      finished_at=bindparam("b_now", type_=_S.finished_at.type)))
_STEP_START = (update(JobStepRow).where(_S.job_id == bindparam("b_job"), _S.idx == bindparam("b_idx"))
               .values(attempts=_S.attempts + 1, state="running",
                       started_at=bindparam("b_now", type_=_S.started_at.type))
               .returning(_S.name, _S.attempts))
_JOB_RUN = (update(JobRow).where(_J.id == bindparam("b_job"))
            .values(data=bindparam("b_data", type_=_J.data.type), step_index=bindparam("b_index"), waiting_for=None,
                    state=bindparam("b_state"), updated_at=bindparam("b_now", type_=_J.updated_at.type)))
_JOB_END = (update(JobRow).where(_J.id == bindparam("b_job"))
            .values(data=bindparam("b_data", type_=_J.data.type), step_index=bindparam("b_index"), waiting_for=None,
                    state=bindparam("b_state"), updated_at=bindparam("b_now", type_=_J.updated_at.type),
                    finished_at=bindparam("b_now", type_=_J.finished_at.type), lease_owner=None,
                    lease_expires_at=None))
_EVENT = insert(JobEventRow)
# The batch's forms: its jobs in one read, the steps about to start in another, and each kind of
# write as one executemany (a hundred jobs moving at once were seven statements each).
_JOBS = select(_J.id, _J.kind, _J.state, _J.step_index, _J.step_count, _J.params, _J.data,
               _J.lease_owner).where(_J.id.in_(bindparam("b_jobs", expanding=True)))
_NEXT_STEPS = select(_S.job_id, _S.idx, _S.name, _S.attempts).where(
    tuple_(_S.job_id, _S.idx).in_(bindparam("b_pairs", expanding=True)))
_STEP_STARTS = (update(JobStepRow).where(_S.job_id == bindparam("b_job"), _S.idx == bindparam("b_idx"))
                .values(attempts=_S.attempts + 1, state="running",
                        started_at=bindparam("b_now", type_=_S.started_at.type)))
_STEPS = select(_S.state, _S.attempts).where(_S.job_id == bindparam("b_job")).order_by(_S.idx)


class Engine:
    def __init__(self, store: Store, hw: HardwarePort, kinds: Mapping[str, JobKind], *,
                 settings: EngineSettings | None = None, owner: str | None = None,
                 loops: Sequence[LeaderLoop] = (), metrics: Metrics | None = None) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.loops = tuple(loops)
        self.hw = hw
        self.kinds = dict(kinds)
        # Every step's "done" series and every kind's final states exist at 0 from the first scrape:
        # rate() and increase() see no change in a series whose first sample already counts a try,
        # so a step that first ran between two scrapes would be missing from a quantile of its rate.
        for kind in self.kinds.values():
            for step in kind.steps:
                self.metrics.steps.labels(kind.name, step.name, "done")
            for final in FINAL_JOB_STATES:
                self.metrics.jobs_finished.labels(kind.name, final.value)
        self.settings = settings or EngineSettings()
        if self.settings.boot_key is None:
            self.settings = replace(self.settings, boot_key=BootKey.ephemeral())
        self.leadership = Leadership(store, owner=owner)
        self.owner = self.leadership.owner
        self._executor = ThreadPoolExecutor(1 if store.is_sqlite else 8, thread_name_prefix="anvil-db")
        self._readers = ThreadPoolExecutor(4, thread_name_prefix="anvil-db-read")
        # Leadership work on a thread of its own: a renewal queued behind fifty jobs' writes would
        # miss its step-down deadline on a busy node and end the term for nothing.
        self._lease_thread = ThreadPoolExecutor(1, thread_name_prefix="anvil-lease")
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._advances: list[tuple[str, Done | None, asyncio.Future[Snapshot | BaseException]]] = []
        self._advancer: asyncio.Task[None] | None = None
        self._waiting: dict[str, str] = {}   # job id -> what it waits for, flushed by the heartbeat
        self._memos: dict[str, dict[str, Any]] = {}   # job id -> what its steps keep between them (in memory)
        self._wake = asyncio.Event()
        self.is_leader = False
        self.terms = 0   # terms this engine has led (a takeover is one more)

    # -- plumbing ----------------------------------------------------------
    async def db(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def read(self, fn: Callable[[], T]) -> T:
        """Read-only store work, on the reader threads."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the database thread (binds its arguments now, unlike a lambda)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args, **kwargs))

    async def lease(self, fn: Callable[[], T]) -> T:
        """Leadership work (acquire, renew, release) on its own thread."""
        return await asyncio.get_running_loop().run_in_executor(self._lease_thread, fn)

    def wake(self) -> None:
        """Look for new jobs now (called after a submit in this process)."""
        self._wake.set()

    # -- leadership and dispatch --------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Stand by until this engine leads, drive jobs until ``stop`` is set or the term ends,
        and stand by again after a lost term (the node goes on serving its API meanwhile)."""
        try:
            while not stop.is_set():
                log.info("engine %s: standing by (trying to lead every %g s)", self.owner, STANDBY_POLL)
                while not stop.is_set():
                    try:
                        if await self.lease(self.leadership.try_acquire):
                            break
                    except OperationalError as exc:   # the database is away: stand by, try again
                        log.warning("engine %s: cannot reach the database to lead: %s", self.owner, exc.orig)
                    await _wait(stop, STANDBY_POLL)
                if stop.is_set():
                    return
                try:
                    await self._lead(stop)
                except OperationalError as exc:   # the database went away mid-takeover: stand by again
                    log.warning("engine %s: term ended, the database is away: %s", self.owner, exc.orig)
        finally:
            await self.lease(self.leadership.release)
            self._lease_thread.shutdown(wait=False)
            self._executor.shutdown(wait=False)
            self._readers.shutdown(wait=False)

    async def _lead(self, stop: asyncio.Event) -> None:
        """One term: take over the unfinished jobs, drive them, and when the term ends (lost,
        not renewed in time, or one of the leader's loops failed) stop every task of it before
        returning. The loops get ``_LOOP_GRACE`` s to see the term's end; one still busy then
        (blocked on the database, a long monitor pass) is cancelled, so that a stepped-down
        node is back to standing by within seconds whatever it was doing."""
        term = asyncio.Event()
        self.is_leader = True
        self.terms += 1
        workers: list[asyncio.Task[None]] = []
        try:
            self.metrics.leadership.labels("acquired").inc()
            freed = 0
            for attempt in range(_ADVANCE_TRIES):
                try:
                    freed = await self.db(lambda: self._in_write(lambda s: repo.release_others(s, self.owner)))
                    break
                except OperationalError as exc:   # a deadlock victim: nothing was written, try again
                    if attempt + 1 == _ADVANCE_TRIES:
                        raise
                    log.warning("engine %s: taking over leases retried: %s", self.owner, exc.orig)
            log.info("engine leader %s (epoch %s); took over %d unfinished jobs", self.owner,
                     self.leadership.epoch, freed)
            workers = [asyncio.create_task(self._heartbeat(term), name="engine-heartbeat"),
                       asyncio.create_task(self._dispatch(term), name="engine-dispatch"),
                       *(asyncio.create_task(loop(self, term), name=f"engine-loop-{i}")
                         for i, loop in enumerate(self.loops))]
            await _until_any(stop, term, workers)
        finally:
            term.set()
            self.metrics.leadership.labels("released" if stop.is_set() else "lost").inc()
            self.is_leader = False
            log.info("engine %s: term (epoch %s) over: stopping %d loops and %d job tasks", self.owner,
                     self.leadership.epoch, len(workers), len(self._tasks))
            for task in list(self._tasks.values()):
                task.cancel()
            if workers:
                _done, busy = await asyncio.wait(workers, timeout=_LOOP_GRACE)
                for task in busy:
                    log.warning("engine %s: %s still busy %g s after the term ended; cancelled", self.owner,
                                task.get_name(), _LOOP_GRACE)
                    task.cancel()
            await asyncio.gather(*workers, *self._tasks.values(), return_exceptions=True)
            for task in workers:
                if not task.cancelled() and task.exception() is not None:
                    log.error("engine %s: %s failed; the term ends", self.owner, task.get_name(),
                              exc_info=task.exception())
            log.info("engine %s: loops and job tasks stopped", self.owner)
            if not stop.is_set():
                # A lost term: the advisory lock (PostgreSQL) goes too, so that this node contends
                # like any other standby.
                self.leadership.step_down()
                await self.lease(self.leadership.close)
                log.info("engine %s: stepped down; advisory lock released", self.owner)

    def _in_write(self, fn: Callable[[Any], T]) -> T:
        with self.store.write() as s:
            return fn(s)

    async def _heartbeat(self, term: asyncio.Event) -> None:
        """Renew the leadership every ``RENEW_EVERY`` s, and the jobs' leases after it. A renewal
        that is refused, or does not succeed before the step-down deadline (database away, a
        stalled node), ends the term: the jobs stop before the lease can run out for a successor.
        The jobs' leases are renewed beside it, not before the next beat: on the writer threads,
        behind fifty jobs' commits (a takeover), that can take seconds, and a leadership renewal
        waiting for it missed its deadline and ended the term for nothing."""
        jobs: asyncio.Task[None] | None = None
        late = 0.0   # how much later than asked the last wait ended (the event loop's lag)
        try:
            while not term.is_set():
                left = self.leadership.valid_until - time.monotonic()
                try:
                    async with asyncio.timeout(max(left, 0.0)):
                        ok = await self.lease(self.leadership.renew)
                except (TimeoutError, OperationalError) as exc:
                    ok = None
                    if isinstance(exc, OperationalError):
                        log.warning("engine %s: leadership renewal failed: %s", self.owner, exc.orig)
                    if time.monotonic() >= self.leadership.valid_until:
                        # Where the renewal is stuck, if it is: the one clue to a database that stalls
                        # a statement (a lock, a synchronous standby that went away) rather than failing it.
                        log.error("engine %s: leadership not renewed in %g s (%s; the event loop woke the "
                                  "renewal %.2f s late); stepping down%s", self.owner,
                                  self.leadership.step_down_after, exc.__class__.__name__, late,
                                  _stack_of("anvil-lease"))
                        term.set()
                        return
                if ok is False:
                    log.error("engine %s lost leadership; stepping down", self.owner)
                    term.set()
                    return
                if ok and (jobs is None or jobs.done()):
                    jobs = asyncio.create_task(self._renew_jobs(term), name="engine-job-leases")
                pause = RENEW_EVERY if ok else 0.2
                due = time.monotonic() + pause
                await _wait(term, pause)
                late = max(time.monotonic() - due, 0.0)
        finally:
            if jobs is not None and not jobs.done():
                jobs.cancel()
                await asyncio.gather(jobs, return_exceptions=True)

    async def _renew_jobs(self, term: asyncio.Event) -> None:
        """Extend the leases of the jobs this leader holds and record what they wait for."""
        waiting, self._waiting = self._waiting, {}
        try:
            await self.call(self._renew_and_show, waiting)
        except LeaseLost:
            log.error("engine %s: fenced off renewing its jobs; stepping down", self.owner)
            term.set()
        except OperationalError as exc:
            # A lock timeout or deadlock victim: the leases are still far from expiry, the
            # next beat renews them; one failed beat must not stop every job.
            log.warning("engine %s: lease renewal failed, retrying next beat: %s", self.owner, exc.orig)
            self._waiting = {**waiting, **self._waiting}
        except Exception:
            log.exception("engine %s: renewing its jobs failed; the term ends", self.owner)
            term.set()

    async def _dispatch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            if len(self._tasks) < self.settings.max_jobs:
                try:
                    ids = await self.read(lambda: self._read(
                        lambda s: repo.runnable_ids(s, self.owner, set(self._tasks),
                                                    self.settings.max_jobs - len(self._tasks))))
                    # Nothing runnable (most turns, five a second): no write, which would take
                    # the store's one writer from the requests and jobs that need it.
                    claimed = await self.call(self._claim, ids) if ids else []
                except OperationalError as exc:
                    # A deadlock victim, or the database away for a moment (a failover): the next
                    # round claims them; whether the term goes on is the heartbeat's to decide.
                    log.warning("engine %s: claim retried next round: %s", self.owner, exc.orig)
                    claimed = []
                for job_id in claimed:
                    self._tasks[job_id] = asyncio.create_task(self._drive_task(job_id), name=f"job-{job_id}")
            waiter = asyncio.create_task(self._wake.wait())
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({waiter, stopper}, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if waiter in done and not stop.is_set():
                # Claimed one by one, a hundred deploy requests' jobs were a hundred claim writes
                # (and as many turns): 100 fake-hardware deploys took 3.0-3.2 s and 2.8-3.1 s of
                # CPU; gathered, 2.2-2.6 s and 2.2-2.5 s (bench/ironic_compat.py, paired runs).
                await asyncio.sleep(self.settings.claim_gather)

    def _fence(self, conn: Any, job_id: str = "*") -> None:
        """Refuse the caller's commit unless this engine's term is still the current one."""
        if not self.leadership.holds(conn):
            raise LeaseLost(job_id)

    def _renew_and_show(self, waiting: dict[str, str]) -> None:
        with self.store.write() as s:
            self._fence(s.connection())
            repo.renew(s, self.owner, self.settings.lease_ttl)
            for job_id, text in sorted(waiting.items()):
                s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.lease_owner == self.owner,
                                               JobRow.state == JobState.RUNNING.value).values(waiting_for=text))

    def _claim(self, job_ids: list[str]) -> list[str]:
        with self.store.write() as s:
            self._fence(s.connection())
            return repo.claim_many(s, job_ids, self.owner, self.settings.lease_ttl)

    def _read(self, fn: Callable[[Any], T]) -> T:
        with self.store.read() as s:
            return fn(s)

    async def _drive_task(self, job_id: str) -> None:
        try:
            await self.drive(job_id)
        except LeaseLost:
            log.warning("job %s: lease lost", job_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s: runner error", job_id)
        finally:
            self._tasks.pop(job_id, None)
            self._memos.pop(job_id, None)

    # -- one job ----------------------------------------------------------------
    def _snapshot(self, job_id: str) -> Snapshot:
        with self.store.read() as s:
            job = repo.get(s, job_id)
            rows = repo.steps(s, job_id)
            return Snapshot(job.id, job.kind, JobState(job.state), job.step_index, dict(job.params),
                            dict(job.data), tuple(r.state for r in rows), tuple(r.attempts for r in rows))

    def _owned(self, s: Any, job_id: str) -> JobRow:
        self._fence(s.connection(), job_id)
        job = repo.get(s, job_id)
        if job.lease_owner != self.owner:
            raise LeaseLost(job_id)
        return job

    def _start_step(self, job_id: str, idx: int, name: str, rollback: bool = False) -> int:
        with self.store.write() as s:
            job = self._owned(s, job_id)
            if not rollback and JobState(job.state) is not JobState.RUNNING:
                repo.set_state(s, job, JobState.RUNNING)
            row = repo.steps(s, job_id)[idx]
            row.attempts += 1
            row.state = "undoing" if rollback else "running"
            row.started_at = repo.now()
            job.waiting_for = None
            what = "undo" if rollback else "step"
            repo.add_event(s, job_id, f"{what}-started", f"{what} {idx + 1}/{job.step_count} {name}",
                           {"step": name, "index": idx, "attempt": row.attempts})
            return row.attempts

    def _step_error(self, job_id: str, idx: int, name: str, error: str, *, retry_in: float | None) -> None:
        with self.store.write() as s:
            job = self._owned(s, job_id)
            row = repo.steps(s, job_id)[idx]
            row.error = error
            if retry_in is not None:
                job.waiting_for = f"retry of {name} in {retry_in:g} s"
                repo.add_event(s, job_id, "step-retry", f"{name}: {error}; retrying in {retry_in:g} s",
                               {"step": name, "index": idx})
            else:
                row.state = "failed"
                row.finished_at = repo.now()
                repo.add_event(s, job_id, "step-failed", f"{name}: {error}", {"step": name, "index": idx})

    def _begin_rollback(self, job_id: str, error: str, rollback: bool) -> None:
        with self.store.write() as s:
            job = self._owned(s, job_id)
            job.error = error
            if rollback:
                repo.set_state(s, job, JobState.ROLLING_BACK)
                repo.add_event(s, job_id, "rollback-started", f"rolling back: {error}")
            else:
                repo.set_state(s, job, JobState.FAILED)
                repo.add_event(s, job_id, "failed", f"failed: {error}")

    def _end(self, job_id: str, state: JobState, message: str, error: str | None = None) -> None:
        with self.store.write() as s:
            job = self._owned(s, job_id)
            if error is not None:
                job.error = error
            repo.set_state(s, job, state)
            repo.add_event(s, job_id, "finished", message, {"state": state.value})

    def _checkpoint(self, job_id: str, data: dict[str, Any]) -> None:
        with self.store.write() as s:
            job = self._owned(s, job_id)
            job.data = {**job.data, **data}

    def _context(self, snap: Snapshot, step: str) -> StepContext:
        data = dict(snap.data)
        ref = changes.JobStep(snap.id, snap.kind, step)

        async def db(fn: Callable[[], T]) -> T:
            # The step's writes are recorded as this job step's changes (appliance.store.changes).
            return await self.db(changes.within(ref, fn))

        async def progress(text: str) -> None:
            # Shown to operators, not needed for recovery: written with the next heartbeat.
            self._waiting[snap.id] = text[:255]

        async def checkpoint(values: dict[str, Any]) -> None:
            data.update(values)
            await self.db(lambda: self._checkpoint(snap.id, values))

        memo = self._memos.setdefault(snap.id, {})
        return StepContext(job_id=snap.id, kind=snap.kind, params=snap.params, data=data, store=self.store, memo=memo,
                           hw=self.hw, settings=self.settings, db=db, read=self.read, progress=progress,
                           checkpoint=checkpoint)

    def _advance(self, job_id: str, done: Done | None = None) -> Snapshot:
        """One transaction: record the finished step (if any), then start the next one, or end the
        job when none is left; return the job as it now is. A resumed or retried step starts again
        here too."""
        with self.store.write() as s:
            self._fence(s.connection(), job_id)
            return self._advance_in(s.connection(), job_id, done, s.info)

    def _advance_many(self, batch: list[tuple[str, Done | None]]) -> list[Snapshot | BaseException]:
        """Several jobs' :meth:`_advance` in one transaction (group commit: a hundred jobs moving at
        once share commits), each in a savepoint of its own, so one job's error (a lost lease)
        undoes only its own work; results in order."""
        # Rows are taken in job-id order, the order the heartbeat's renewal locks them in too:
        # in any other order two transactions can each hold a row the other wants.
        order = sorted(range(len(batch)), key=lambda i: batch[i][0])
        out: dict[int, Snapshot | BaseException] = {}
        with self.store.write() as s:
            conn = s.connection()
            if not self.leadership.holds(conn):
                # A stale leader (a successor began its term, or this one outlived its deadline):
                # nothing of the batch may be written.
                return [LeaseLost(job_id) for job_id, _ in batch]
            if len(batch) > 1 and len({job_id for job_id, _ in batch}) == len(batch):
                try:
                    with conn.begin_nested():
                        return self._advance_all(conn, s.info, batch)
                except OperationalError:
                    raise  # the database's own trouble (a deadlock victim): the batch is retried
                except Exception:  # undone: each job again in a savepoint of its own, to find which
                    log.warning("engine %s: batched step commit failed; one job at a time", self.owner,
                                exc_info=True)
            for i in order:
                job_id, done = batch[i]
                try:
                    with conn.begin_nested():
                        out[i] = self._advance_in(conn, job_id, done, s.info)
                except OperationalError:
                    raise  # the database's own trouble (a deadlock victim): the batch is retried
                except Exception as exc:  # handed back to that job's own caller
                    out[i] = exc
        return [out[i] for i in range(len(batch))]

    def _advance_all(self, conn: Any, info: dict[str, Any],
                     batch: list[tuple[str, Done | None]]) -> list[Snapshot | BaseException]:
        """:meth:`_advance_in` of every job of ``batch`` at once: the same rows and events, written
        by one statement per kind of write. A job whose lease is gone (or whose move is not a
        legal transition) gets its error and no write; any error while writing undoes the whole
        batch (the caller then tries each job alone)."""
        ids = sorted({job_id for job_id, _ in batch})
        jobs = {r.id: r for r in conn.execute(_JOBS, {"b_jobs": ids})}
        now = repo.now()
        out: list[Snapshot | BaseException] = []
        plans: list[tuple[Any, Done | None, dict[str, Any], int, JobState]] = []
        for job_id, done in batch:
            job = jobs.get(job_id)
            if job is None or job.lease_owner != self.owner:
                out.append(LeaseLost(job_id))
                continue
            data, index, state = dict(job.data or {}), job.step_index, JobState(job.state)
            if done is not None:
                data, index = {**done[3], **(done[2] or {})}, done[0] + 1
            try:
                if state in (JobState.PENDING, JobState.RUNNING, JobState.WAITING):
                    wanted = JobState.SUCCEEDED if index >= job.step_count else JobState.RUNNING
                    state = transition(JOB_TRANSITIONS, state, wanted, what=f"job {job_id}")
            except Exception as exc:   # handed back to that job's own caller, as _advance_in does
                out.append(exc)
                continue
            out.append(Snapshot(job.id, job.kind, state, index, dict(job.params or {}), data, (), ()))
            plans.append((job, done, data, index, state))
        plans.sort(key=lambda p: p[0].id)   # rows in job-id order, as the heartbeat's renewal takes them
        starts = [(p[0].id, p[3]) for p in plans if p[4] is JobState.RUNNING]
        attempts = ({(r.job_id, r.idx): (r.name, r.attempts + 1)
                     for r in conn.execute(_NEXT_STEPS, {"b_pairs": starts})} if starts else {})
        step_done: list[dict[str, Any]] = []
        job_run: list[dict[str, Any]] = []
        job_end: list[dict[str, Any]] = []
        step_start: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for job, done, data, index, state in plans:
            if done is not None:
                idx, name, result = done[0], done[1], done[2] or {}
                step_done.append({"b_job": job.id, "b_idx": idx, "b_result": result, "b_now": now})
                events += [{"job_id": job.id, "at": now, "kind": kind, "message": message, "data": None}
                           for kind, message in done[4]]
                if done[5]:
                    changes.write_queued(conn, info, changes.JobStep(job.id, job.kind, name), done[5],
                                         at=self.store.now())
                events.append({"job_id": job.id, "at": now, "kind": "step-done",
                               "message": f"step {idx + 1}/{job.step_count} {name} done",
                               "data": {"step": name, "index": idx, "result": result}})
            row = {"b_job": job.id, "b_data": data, "b_index": index, "b_state": state.value, "b_now": now}
            if state is JobState.SUCCEEDED:
                job_end.append(row)
                events.append({"job_id": job.id, "at": now, "kind": "finished", "message": f"{job.kind} succeeded",
                               "data": {"state": "succeeded"}})
            else:
                job_run.append(row)
            if state is JobState.RUNNING:
                name, attempt = attempts[(job.id, index)]
                step_start.append({"b_job": job.id, "b_idx": index, "b_now": now})
                events.append({"job_id": job.id, "at": now, "kind": "step-started",
                               "message": f"step {index + 1}/{job.step_count} {name}",
                               "data": {"step": name, "index": index, "attempt": attempt}})
        for stmt, rows in ((_STEP_DONE, step_done), (_JOB_RUN, job_run), (_JOB_END, job_end),
                           (_STEP_STARTS, step_start), (_EVENT, events)):
            if rows:
                conn.execute(stmt, rows)
        for i, o in enumerate(out):
            if isinstance(o, Snapshot) and o.state is JobState.ROLLING_BACK:
                rows = conn.execute(_STEPS, {"b_job": o.id}).all()
                out[i] = replace(o, step_states=tuple(r.state for r in rows),
                                 step_attempts=tuple(r.attempts for r in rows))
        return out

    async def advance(self, job_id: str, done: Done | None = None) -> Snapshot:
        """:meth:`_advance`, queued with the other jobs' and written with them (group commit)."""
        fut: asyncio.Future[Snapshot | BaseException] = asyncio.get_running_loop().create_future()
        self._advances.append((job_id, done, fut))
        if self._advancer is None or self._advancer.done():
            self._advancer = asyncio.create_task(self._drain_advances(), name="engine-advances")
        result = await fut
        if isinstance(result, BaseException):
            raise result
        return result

    async def _drain_advances(self) -> None:
        while self._advances:
            queued, self._advances = self._advances[:_ADVANCE_BATCH], self._advances[_ADVANCE_BATCH:]
            results: list[Snapshot | BaseException] = []
            for attempt in range(_ADVANCE_TRIES):
                try:
                    results = await self.call(self._advance_many, [(job, done) for job, done, _ in queued])
                    break
                except OperationalError as exc:
                    # The database chose this transaction as a deadlock victim (or timed out a
                    # lock): nothing of it was written, so the whole batch is simply tried again.
                    if attempt + 1 == _ADVANCE_TRIES:
                        results = [exc] * len(queued)
                    else:
                        log.warning("engine %s: group commit retried: %s", self.owner, exc.orig)
                except Exception as exc:  # the transaction itself failed: every job of the batch hears it
                    results = [exc] * len(queued)
                    break
            for (_, _, fut), result in zip(queued, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    def _advance_in(self, conn: Any, job_id: str, done: Done | None, info: dict[str, Any]) -> Snapshot:
        """:meth:`_advance` inside the caller's transaction. Core statements built once, not ORM
        objects: every step of every job passes through here (a hundred stamps at once are 1,100
        of these), and loading the job and its eleven steps as objects cost more than the step's
        own work. The engine acts for nobody, so nothing here is audited either way."""
        job = conn.execute(_JOB, {"b_job": job_id}).first()
        if job is None or job.lease_owner != self.owner:
            raise LeaseLost(job_id)
        now = repo.now()
        data, index, state = dict(job.data or {}), job.step_index, JobState(job.state)
        events: list[dict[str, Any]] = []
        if done is not None:
            idx, name, result = done[0], done[1], done[2] or {}
            conn.execute(_STEP_DONE, {"b_job": job_id, "b_idx": idx, "b_result": result, "b_now": now})
            data, index = {**done[3], **result}, idx + 1
            events += [{"kind": kind, "message": message, "data": None} for kind, message in done[4]]
            if done[5]:
                changes.write_queued(conn, info, changes.JobStep(job_id, job.kind, name), done[5],
                                     at=self.store.now())
            events.append({"kind": "step-done", "message": f"step {idx + 1}/{job.step_count} {name} done",
                           "data": {"step": name, "index": idx, "result": result}})
        if state in (JobState.PENDING, JobState.RUNNING, JobState.WAITING):
            if index >= job.step_count:
                state = transition(JOB_TRANSITIONS, state, JobState.SUCCEEDED, what=f"job {job_id}")
                conn.execute(_JOB_END, {"b_job": job_id, "b_data": data, "b_index": index,
                                        "b_state": state.value, "b_now": now})
                events.append({"kind": "finished", "message": f"{job.kind} succeeded",
                               "data": {"state": "succeeded"}})
            else:
                state = transition(JOB_TRANSITIONS, state, JobState.RUNNING, what=f"job {job_id}")
                conn.execute(_JOB_RUN, {"b_job": job_id, "b_data": data, "b_index": index,
                                        "b_state": state.value, "b_now": now})
                step = conn.execute(_STEP_START, {"b_job": job_id, "b_idx": index, "b_now": now}).first()
                assert step is not None
                events.append({"kind": "step-started", "message": f"step {index + 1}/{job.step_count} {step.name}",
                               "data": {"step": step.name, "index": index, "attempt": step.attempts}})
        else:
            conn.execute(_JOB_RUN, {"b_job": job_id, "b_data": data, "b_index": index, "b_state": state.value,
                                    "b_now": now})
        if events:
            conn.execute(_EVENT, [{"job_id": job_id, "at": now, **e} for e in events])
        # Only a rollback reads the steps' states (which to undo): no read for every forward step.
        rows = conn.execute(_STEPS, {"b_job": job_id}).all() if state is JobState.ROLLING_BACK else []
        return Snapshot(job.id, job.kind, state, index, dict(job.params or {}), data,
                        tuple(r.state for r in rows), tuple(r.attempts for r in rows))

    def _step_failure(self, job_id: str, idx: int, name: str, error: str, *, retryable: bool,
                      budget: int) -> float | None:
        """Record a failed try of step ``idx``; return the back-off before the next try, or None when
        the step has failed for good. Tries are counted as failures, not as starts, so the restarts
        of a killed appliance never use up a step's retries."""
        with self.store.write() as s:
            job = self._owned(s, job_id)
            failures = dict(job.data.get(FAILURES, {}))
            count = int(failures.get(str(idx), 0)) + 1
            failures[str(idx)] = count
            job.data = {**job.data, FAILURES: failures}
            row = repo.steps(s, job_id)[idx]
            row.error = error
            if retryable and count < budget:
                delay = self.settings.retry_backoff[min(count, len(self.settings.retry_backoff)) - 1]
                job.waiting_for = f"retry of {name} in {delay:g} s"
                repo.add_event(s, job_id, "step-retry", f"{name}: {error}; retrying in {delay:g} s",
                               {"step": name, "index": idx, "failures": count})
                return delay
            row.state, row.finished_at = "failed", repo.now()
            repo.add_event(s, job_id, "step-failed", f"{name}: {error}", {"step": name, "index": idx})
            return None

    async def drive(self, job_id: str) -> None:
        """Run ``job_id`` to a final state (this engine must hold its lease)."""
        snap = await self.advance(job_id)
        while True:
            if snap.state in FINAL_JOB_STATES:
                self.metrics.jobs_finished.labels(snap.kind, snap.state.value).inc()
                return
            kind = self.kinds[snap.kind]
            if snap.state is JobState.ROLLING_BACK:
                final = await self._rollback(snap, kind)
                self.metrics.jobs_finished.labels(snap.kind, final.value).inc()
                return
            idx = snap.step_index
            step = kind.steps[idx]
            ctx = self._context(snap, step.name)
            timer = self.metrics.steps
            began = time.perf_counter()
            try:
                async with asyncio.timeout(step.timeout):
                    result = await step.run(ctx)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every error is recorded; the kind of error decides what follows
                took = time.perf_counter() - began
                error = _describe(exc, step.timeout)
                if not isinstance(exc, AnvilError | TimeoutError):
                    log.exception("job %s step %s: unexpected error", job_id, step.name)
                delay = await self.call(self._step_failure, job_id, idx, step.name, error,
                                        retryable=_retryable(exc), budget=step.attempts)
                timer.labels(snap.kind, step.name, "failed" if delay is None else "retry").observe(took)
                if delay is not None:
                    await asyncio.sleep(delay)
                    snap = await self.advance(job_id)
                    continue
                await self.call(self._begin_rollback, job_id, f"{step.name}: {error}", kind.rollback)
                snap = await self.call(self._snapshot, job_id)
                continue
            timer.labels(snap.kind, step.name, "done").observe(time.perf_counter() - began)
            snap = await self.advance(job_id, (idx, step.name, result, ctx.data, ctx.events, ctx.changes))

    async def _rollback(self, snap: Snapshot, kind: JobKind) -> JobState:
        """Undo the steps done, newest first; the job's final state."""
        last = min(snap.step_index, len(kind.steps) - 1)
        for idx in range(last, -1, -1):
            step = kind.steps[idx]
            if snap.step_attempts[idx] == 0 or snap.step_states[idx] in ("undone", "pending"):
                continue
            if step.undo is None:
                continue
            for attempt in range(1, step.attempts + 1):
                await self.call(self._start_step, snap.id, idx, step.name, rollback=True)
                ctx = self._context(snap, f"undo {step.name}")
                began = time.perf_counter()
                try:
                    async with asyncio.timeout(step.timeout):
                        await step.undo(ctx)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.metrics.steps.labels(snap.kind, step.name, "undo_failed").observe(
                        time.perf_counter() - began)
                    error = _describe(exc, step.timeout)
                    if _retryable(exc) and attempt < step.attempts:
                        delay = self.settings.retry_backoff[min(attempt, len(self.settings.retry_backoff)) - 1]
                        await self.call(self._step_error, snap.id, idx, step.name, error, retry_in=delay)
                        await asyncio.sleep(delay)
                        continue
                    msg = f"undo of {step.name} failed: {error}; an operator must finish it"
                    await self.call(self._end, snap.id, JobState.FAILED, msg, error=msg)
                    return JobState.FAILED
                self.metrics.steps.labels(snap.kind, step.name, "undone").observe(time.perf_counter() - began)
                await self.call(self._mark_undone, snap.id, idx, step.name, ctx.data, ctx.changes)
                break
        await self.call(self._end, snap.id, JobState.ROLLED_BACK, f"{snap.kind} rolled back")
        return JobState.ROLLED_BACK

    def _mark_undone(self, job_id: str, idx: int, name: str, data: dict[str, Any],
                     queued: list[dict[str, Any]]) -> None:
        with self.store.write() as s:
            job = self._owned(s, job_id)
            if queued:
                changes.write_queued(s.connection(), s.info, changes.JobStep(job_id, job.kind, f"undo {name}"),
                                     queued, at=self.store.now())
            row = repo.steps(s, job_id)[idx]
            row.state, row.finished_at = "undone", repo.now()
            job.data = {**job.data, **data}
            repo.add_event(s, job_id, "undo-done", f"undo {name} done", {"step": name, "index": idx})


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"did not finish within {timeout:g} s"
    if isinstance(exc, AnvilError):
        return str(exc)
    return f"internal error: {exc.__class__.__name__}: {exc}"


async def _until_any(stop: asyncio.Event, term: asyncio.Event, tasks: Sequence[asyncio.Task[None]]) -> None:
    """Return when ``stop`` or ``term`` is set or one of ``tasks`` has ended (a leader's loop
    ends only when the term does, or by failing)."""
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(term.wait())]
    try:
        await asyncio.wait([*waiters, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def _stack_of(prefix: str) -> str:
    """The current stack of this process's thread named ``prefix``…, for a log line ("" if idle or none)."""
    frames = sys._current_frames()
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if thread.name.startswith(prefix) and frame is not None:
            stack = traceback.format_stack(frame)
            if any("in renew" in f or "in try_acquire" in f for f in stack):
                # The leadership call and where it waits, without the driver's frames in between.
                ours = [f for f in stack if "/appliance/" in f]
                return f"; {thread.name} is at:\n{''.join(ours[-4:])}  ...\n{''.join(stack[-3:])}"
    return ""


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass


__all__ = ["Engine", "EngineSettings"]
