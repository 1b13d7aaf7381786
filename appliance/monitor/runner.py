"""The monitor: polls every blade's BMC, watches the booted systems' heartbeats, declares
failures through the damped detector (domain/health.py) and starts failovers.

One pass (:meth:`Monitor.poll_once`) reads the inventory, probes each blade (power and
health, bounded concurrency, a deadline per probe), adds the heartbeat verdict of the
profile it runs, records the samples in one transaction and feeds the detectors. A blade
running an active profile of a failover domain whose detector holds it failed gets a
failover job (``JobService.submit_failover``) at the first failing sample that finds the
profile free (the store keeps one open failover per profile); the rest is the engine's.

A blade counts as failing when its BMC does not answer, when it reads powered off or
critical while it runs a profile, when that profile's agent stopped heartbeating, or, for
an OS without the agent, when its service port (``[monitor] tcp_probe_port``) stops
accepting connections at the profile's first IPv4 address.

Heartbeats are also swept every ``heartbeat_sweep`` seconds, between the polls: a protected
profile whose agent has been quiet longer than ``heartbeat_timeout`` gets its blade probed at
once, ``fail_after`` times a second apart, as a BMC event would — so a hung OS whose BMC
still reads On is found in seconds, not at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from appliance.boot.tokens import HEARTBEAT
from appliance.config import Settings
from appliance.domain import bios as dbios
from appliance.domain.health import Detector, DetectorPolicy, Sample, observe
from appliance.domain.health import Health as Reported
from appliance.drivers.protocols import BiosDriver, Bmc, HealthState, PowerState
from appliance.engine.model import HardwarePort
from appliance.errors import AnvilError, Conflict
from appliance.metrics import Metrics
from appliance.monitor.events import EventSubscriptions
from appliance.monitor.notify import Notifier
from appliance.monitor.webhook import BIOS_DRIFT, FAILURE_DETECTED
from appliance.services.failover import FailoverService, HealthSample
from appliance.services.jobs import JobService
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeRow, BootTokenRow, ProfileRow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    interval: float = 30.0           # seconds between passes (DESIGN §5: all blades every 30 s)
    concurrency: int = 64            # probes at once
    probe_timeout: float = 5.0       # per blade and pass
    heartbeat_timeout: float = 6.5   # the lab agent beats every 2 s: three lost beats and a margin
    heartbeat_sweep: float = 1.0     # how often stale heartbeats are looked for, apart from the polls
    tcp_probe_port: int = 0          # for profiles whose OS sends no heartbeat: connect here (0: off)
    event_base_url: str = ""         # where BMCs post events to this appliance ("": no subscriptions)
    event_confirm_interval: float = 0.2  # between the polls an event triggers
    policy: DetectorPolicy = field(default_factory=DetectorPolicy)


def _first_ipv4(document: Any) -> str | None:
    nics = (((document or {}).get("spec") or {}).get("identity") or {}).get("nics") or []
    for nic in nics:
        if isinstance(nic, dict) and nic.get("ipv4"):
            return str(nic["ipv4"]).split("/", 1)[0]
    return None


def monitor_settings(settings: Settings, api_url: str = "") -> MonitorSettings:
    """``api_url``: the API's own URL, the default destination of BMC events unless it
    listens on a wildcard address (which no BMC can be told to post to)."""
    m = settings.monitor
    base = ""
    if m.events:
        host = api_url.split("://", 1)[-1].rpartition(":")[0].strip("[]")
        base = m.event_destination or (api_url if host not in ("", "0.0.0.0", "::") else "")
    return MonitorSettings(interval=m.interval, concurrency=m.concurrency, probe_timeout=m.probe_timeout,
                           heartbeat_timeout=m.heartbeat_timeout, tcp_probe_port=m.tcp_probe_port,
                           event_base_url=base.rstrip("/"), event_confirm_interval=m.event_confirm_interval,
                           policy=DetectorPolicy(fail_after=m.fail_after, recover_after=m.recover_after))


BREATHE_EVERY = 0.005   # s of work a long loop does before giving the event loop a turn


@dataclass(frozen=True, slots=True)
class Watched:
    """A blade as one pass sees it: what runs on it, and whether that is protected."""

    blade: str
    state: str
    profile: str | None = None       # tenant/name of the live binding's profile
    profile_state: str | None = None
    protected: bool = False          # the profile names a failover domain with a policy other than none
    domain: str | None = None
    heartbeat_age: float | None = None  # seconds since the agent's last beat (None: it sends none)
    address: str | None = None       # the profile's first IPv4 address, for the TCP probe
    bios: tuple[tuple[str, str], ...] = ()   # the profile's BIOS settings, checked for drift


@dataclass(frozen=True, slots=True)
class Verdict:
    blade: str
    ok: bool
    power: str | None
    health: str | None
    detail: str
    drift: str = ""   # BIOS attributes that differ from the profile's (not a failure: reported)


class Monitor:
    def __init__(self, store: Store, hw: HardwarePort, *, settings: MonitorSettings | None = None,
                 clock: Callable[[], float] = time.monotonic, metrics: Metrics | None = None) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.hw = hw
        self.settings = settings or MonitorSettings()
        self.clock = clock
        self.detectors: dict[str, Detector] = {}
        self._refused: dict[str, str] = {}   # blade → why its last failover request was refused
        self.failovers = FailoverService(store)
        self.jobs = JobService(store)
        self.started: list[tuple[str, str]] = []   # (profile, blade) failovers this monitor started
        base = self.settings.event_base_url
        self.events = EventSubscriptions(store, hw, base) if base else None
        self._confirming: dict[str, asyncio.Task[None]] = {}
        self._breathed = 0.0
        self._turn: asyncio.Future[None] | None = None   # the event loop's turn under way, if any
        self._work_clock: Callable[[], float] = time.monotonic   # times work between turns (tests: a fake)
        self.drifts: dict[str, str] = {}   # blade → the BIOS drift last reported

    async def _breathe(self) -> None:
        """Give the event loop a turn once ``BREATHE_EVERY`` of work went by without one: loops
        over 10,000 blades must not hold up API requests.

        The turn is shared by every task of the pass: while one is under way, each probe worker
        that gets here waits for it. A plain ``sleep(0)`` per worker let the 64 workers (probes
        of a fast BMC never wait) each work ``BREATHE_EVERY`` in a row before the loop's other
        tasks ran again: 64 x 5 ms, a 300-700 ms stall of every request once a pass."""
        turn = self._turn
        if turn is not None and not turn.done():
            await turn
            return
        if self._work_clock() - self._breathed >= BREATHE_EVERY:
            loop = asyncio.get_running_loop()
            # Done only after everything ready now has run (I/O polled first): requests included.
            self._turn = turn = loop.create_future()
            loop.call_soon(turn.set_result, None)
            await turn
            self._breathed = self._work_clock()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; a failed pass is logged and the next one runs on time."""
        sweeper = asyncio.create_task(self._sweep_heartbeats(stop), name="heartbeat sweep")
        try:
            await self._poll_until(stop)
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    async def _poll_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            began = self.clock()
            timed = time.perf_counter()
            try:
                await self.poll_once()
            except Exception:  # the monitor must outlive any one bad pass
                log.exception("monitor pass failed")
                self.metrics.monitor_pass_errors.inc()
            self.metrics.monitor_pass.observe(time.perf_counter() - timed)
            wait = max(0.0, self.settings.interval - (self.clock() - began))
            try:
                async with asyncio.timeout(wait):
                    await stop.wait()
            except TimeoutError:
                pass
        for task in list(self._confirming.values()):
            task.cancel()
        for task in list(self._confirming.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def poll_once(self) -> list[Verdict]:
        watched = await asyncio.to_thread(self._inventory)
        # Every BMC's details read and decrypted off the event loop, in bulk, first: grouping the
        # blades by event service and probing 10,000 of them would otherwise read and decrypt
        # 10,000 rows on the loop (seconds of stall per pass).
        await asyncio.to_thread(self.hw.prefetch, [w.blade for w in watched])
        if self.events is not None:
            try:
                await self.events.refresh(w.blade for w in watched)
            except Exception:  # subscriptions are a shortcut; polling goes on without them
                log.exception("refreshing BMC event subscriptions failed")
        # ``concurrency`` workers share one iterator, rather than one task per blade: creating
        # 10,000 tasks at once held the event loop for seconds. Each worker also lets the loop
        # run between probes that finish without waiting (a fast or fake BMC).
        results: list[Verdict | None] = [None] * len(watched)
        todo = iter(enumerate(watched))

        async def worker() -> None:
            for i, w in todo:
                results[i] = await self._probe(w)
                await self._breathe()

        await asyncio.gather(*(worker() for _ in range(min(self.settings.concurrency, len(watched)))))
        verdicts = [v for v in results if v is not None]
        await self._judge(watched, verdicts, "poll")
        return verdicts

    # ---- events ----------------------------------------------------------------------------

    def on_event(self, endpoint: str, origins: list[str]) -> list[str]:
        """A BMC event arrived (authenticated): poll the blades it names now. Returns them."""
        if self.events is None:
            return []
        blades = self.events.blades_for(endpoint, origins)
        for blade in blades:
            if blade not in self._confirming:
                task = asyncio.get_running_loop().create_task(self._confirm(blade), name=f"confirm {blade}")
                self._confirming[blade] = task
                task.add_done_callback(functools.partial(self._confirmed, blade))
        return blades

    def _confirmed(self, blade: str, _task: asyncio.Task[None]) -> None:
        self._confirming.pop(blade, None)

    async def _sweep_heartbeats(self, stop: asyncio.Event) -> None:
        """Every ``heartbeat_sweep`` s: blades of protected, active profiles whose agent went quiet
        are confirmed at once (probes a second apart), whatever the poll interval."""
        while not stop.is_set():
            try:
                async with asyncio.timeout(self.settings.heartbeat_sweep):
                    await stop.wait()
                return
            except TimeoutError:
                pass
            try:
                quiet = await asyncio.to_thread(self._quiet_blades)
            except Exception:  # the sweep is a shortcut; the polls go on without it
                log.exception("heartbeat sweep failed")
                continue
            for blade in quiet:
                if blade not in self._confirming:
                    task = asyncio.get_running_loop().create_task(
                        self._confirm(blade, source="heartbeat", interval=1.0), name=f"confirm {blade}")
                    self._confirming[blade] = task
                    task.add_done_callback(functools.partial(self._confirmed, blade))

    def _quiet_blades(self) -> list[str]:
        """Blades running an active, protected profile whose agent sent its last beat longer than
        ``heartbeat_timeout`` ago (profiles whose OS sends none are the polls' business). One
        query that returns only the quiet ones: it runs every second at 10,000 blades."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.heartbeat_timeout)
        last = (select(BootTokenRow.binding_id,
                       func.max(func.coalesce(BootTokenRow.last_seen_at, BootTokenRow.created_at)).label("at"))
                .where(BootTokenRow.kind == HEARTBEAT, BootTokenRow.voided_at.is_(None))
                .group_by(BootTokenRow.binding_id).subquery())
        with self.store.read() as s:
            rows = s.execute(select(BladeRow.name, ProfileRow.document)
                             .join(BindingRow, BindingRow.blade_id == BladeRow.id)
                             .join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
                             .join(last, last.c.binding_id == BindingRow.id)
                             .where(BindingRow.state == "live", ProfileRow.state == "active",
                                    last.c.at < cutoff)).all()
        out = []
        for name, document in rows:
            spec = ((document or {}).get("spec") or {}).get("failover") or {}
            if spec.get("domain") and spec.get("policy", "n+1") != "none":
                out.append(name)
        return out

    async def _confirm(self, blade: str, *, source: str = "event", interval: float | None = None) -> None:
        """Poll ``blade`` up to ``fail_after`` times, ``interval`` s apart (default
        ``event_confirm_interval``), while it looks failed and runs a protected profile: the
        detector decides as for any poll."""
        pause = self.settings.event_confirm_interval if interval is None else interval
        try:
            for attempt in range(self.settings.policy.fail_after):
                if attempt:
                    await asyncio.sleep(pause)
                watched = await asyncio.to_thread(self._inventory, blade)
                if not watched:
                    return
                verdict = await self._probe(watched[0])
                declared = await self._judge(watched, [verdict], source)
                w = watched[0]
                if verdict.ok or declared or not (w.protected and w.profile_state == "active"):
                    return
        except Exception:  # an event must never take the monitor down
            log.exception("confirming a %s of %s failed", source, blade)

    async def _judge(self, watched: list[Watched], verdicts: list[Verdict], source: str) -> list[str]:
        """Feed the detectors, record the samples, start the failovers just declared."""
        now = self.clock()
        declared: list[Watched] = []
        for w, v in zip(watched, verdicts, strict=True):
            await self._breathe()
            seen = observe(self.detectors.get(w.blade, Detector()), Sample(now, v.ok), self.settings.policy)
            self.detectors[w.blade] = seen.detector
            # Every failing sample of a failed blade that runs a protected profile asks for a
            # failover, not only the one that declared it: the declaration may have found the
            # profile busy (a planned move, a release) and the blade may since run it again
            # (failback) without the detector having seen it healthy. The store refuses a
            # second open failover of a profile, so asking again is safe.
            if (not v.ok and seen.detector.reported is Reported.FAILED and w.protected
                    and w.profile_state == "active"):
                declared.append(w)
        by_blade = {v.blade: v for v in verdicts}
        await asyncio.to_thread(self._record, verdicts, source)
        notifier = self.hw.notifier()
        self._report_drift(watched, verdicts, notifier)
        for w in declared:
            started = await asyncio.to_thread(self._start_failover, w, by_blade[w.blade].detail)
            if started is not None and notifier is not None and w.domain:
                notifier.notify(w.domain, FAILURE_DETECTED, {"failover": started, "profile": w.profile,
                                                             "blade": w.blade, "reason": by_blade[w.blade].detail})
        return [w.blade for w in declared]

    def _report_drift(self, watched: list[Watched], verdicts: list[Verdict], notifier: Notifier | None) -> None:
        """Each new BIOS drift once (log, and the profile's failover-domain webhook); the sample's
        detail carries it on every pass, which is what the console shows."""
        for w, v in zip(watched, verdicts, strict=True):
            if v.drift == self.drifts.get(w.blade, ""):
                continue
            if not v.drift:
                self.drifts.pop(w.blade, None)
                continue
            self.drifts[w.blade] = v.drift
            log.warning("blade %s: %s", w.blade, v.drift, extra={"blade": w.blade, "profile": w.profile})
            if notifier is not None and w.domain:
                notifier.notify(w.domain, BIOS_DRIFT, {"profile": w.profile, "blade": w.blade, "drift": v.drift})

    # ---- one pass ------------------------------------------------------------------------

    def _inventory(self, only: str | None = None) -> list[Watched]:
        with self.store.read() as s:
            query = select(BladeRow.id, BladeRow.name, BladeRow.state)
            blades = s.execute(query if only is None else query.where(BladeRow.name == only)).all()
            bound = {r.blade_id: r for r in s.execute(
                select(BindingRow.id, BindingRow.blade_id, ProfileRow.tenant, ProfileRow.name, ProfileRow.state,
                       ProfileRow.document)
                .join(ProfileRow, ProfileRow.id == BindingRow.profile_id).where(BindingRow.state == "live"))}
            beats = dict(s.execute(
                select(BootTokenRow.binding_id,
                       func.max(func.coalesce(BootTokenRow.last_seen_at, BootTokenRow.created_at)))
                .where(BootTokenRow.kind == HEARTBEAT, BootTokenRow.voided_at.is_(None))
                .group_by(BootTokenRow.binding_id)).all())
        now = datetime.now(UTC)
        out = []
        for blade_id, name, state in blades:
            b = bound.get(blade_id)
            if b is None:
                out.append(Watched(name, state))
                continue
            spec = ((b.document or {}).get("spec") or {}).get("failover") or {}
            last = beats.get(b.id)
            age = None
            if last is not None:
                last = last if last.tzinfo else last.replace(tzinfo=UTC)
                age = max(0.0, (now - last) / timedelta(seconds=1))
            bios = dbios.wanted(((b.document or {}).get("spec") or {}).get("bios") or {})
            out.append(Watched(name, state, f"{b.tenant}/{b.name}", b.state,
                               bool(spec.get("domain")) and spec.get("policy", "n+1") != "none",
                               str(spec.get("domain") or "") or None, age, _first_ipv4(b.document),
                               tuple((str(k), str(v)) for k, v in bios.items())))
        return out

    async def _probe(self, w: Watched) -> Verdict:
        running = w.profile is not None and w.profile_state == "active"
        try:
            driver, bmc = self.hw.bmc(w.blade)
            async with asyncio.timeout(self.settings.probe_timeout):
                power = await driver.get_power(bmc)
                health = await driver.health(bmc)
        except (AnvilError, TimeoutError) as exc:
            reason = str(exc) or f"no answer within {self.settings.probe_timeout:g} s"
            return Verdict(w.blade, False, None, None, f"BMC unreachable: {reason}")
        problems = []
        if running and power is not PowerState.ON:
            problems.append(f"powered {power.value} while running {w.profile}")
        if health.state is HealthState.CRITICAL:
            problems.append(f"health critical: {health.reason or 'no detail'}")
        if running and w.heartbeat_age is not None and w.heartbeat_age > self.settings.heartbeat_timeout:
            problems.append(f"no heartbeat from {w.profile} for {w.heartbeat_age:.0f} s")
        elif running and w.heartbeat_age is None and self.settings.tcp_probe_port and w.address:
            problem = await self._tcp_probe(w.address, self.settings.tcp_probe_port)
            if problem:
                problems.append(problem)
        drift = await self._bios_drift(w, driver, bmc) if running and w.bios else ""
        detail = "; ".join(problems) or "ok"
        return Verdict(w.blade, not problems, power.value, health.state.value,
                       f"{detail}; {drift}" if drift else detail, drift)

    async def _bios_drift(self, w: Watched, driver: object, bmc: Bmc) -> str:
        """The profile's BIOS attributes the blade no longer holds ("" when none, or unknown)."""
        if not isinstance(driver, BiosDriver):
            return ""
        try:
            async with asyncio.timeout(self.settings.probe_timeout):
                current = (await driver.bios(bmc)).current
        except (AnvilError, TimeoutError) as exc:   # drift is a report, never a health failure
            log.info("BIOS of %s not read for drift: %s", w.blade, exc, extra={"blade": w.blade})
            return ""
        wrong = dbios.differences(dict(w.bios), current)
        if not wrong:
            return ""
        return "BIOS drift: " + ", ".join(f"{k}={found} (profile {w.profile}: {want})"
                                          for k, (want, found) in sorted(wrong.items()))

    async def _tcp_probe(self, host: str, port: int) -> str | None:
        """The heartbeat's alternative for an OS without our agent: its service port answers."""
        try:
            async with asyncio.timeout(self.settings.probe_timeout):
                _reader, writer = await asyncio.open_connection(host, port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        except (OSError, TimeoutError) as exc:
            return f"TCP probe of {host}:{port} failed: {exc or 'no answer'}"
        return None

    def _record(self, verdicts: list[Verdict], source: str = "poll") -> None:
        at = datetime.now(UTC)
        samples = [(v.blade, HealthSample(ok=v.ok, source=source, at=at, power=v.power, health=v.health,
                                          detail=v.detail[:500]))
                   for v in verdicts]
        self.failovers.record_health_many(samples)

    def _start_failover(self, w: Watched, detail: str) -> int | None:
        assert w.profile is not None
        tenant, _, name = w.profile.partition("/")
        try:
            failover_id, job = self.jobs.submit_failover(name, tenant=tenant, reason=f"{w.blade}: {detail}",
                                                         from_blade=w.blade)
        except Conflict as exc:   # already failing over, or another job holds the profile
            self.metrics.failovers.labels("refused").inc()
            said = str(exc)
            if self._refused.get(w.blade) != said:   # once per reason, not once per poll
                self._refused[w.blade] = said
                log.info("no failover started for %s: %s", w.profile, said)
            return None
        self._refused.pop(w.blade, None)
        self.metrics.failovers.labels("started").inc()
        self.started.append((w.profile, w.blade))
        log.warning("failover #%s of %s started (job %s): %s", failover_id, w.profile, job.id, detail,
                    extra={"blade": w.blade, "profile": w.profile})
        return failover_id

    def snapshot(self) -> dict[str, Any]:
        return {blade: d.reported.value for blade, d in self.detectors.items()}
