"""N+1 failover against the emulated rack: real sushy-tools BMCs and snmpsim switch, the
production engine, monitor and boot service in this process (appliance.lab.inproc).

A blade "dies" by being powered off straight on its emulated BMC, behind the appliance's
back; its BMC "stops answering" by its emulator process being stopped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import func, select

from appliance.domain.health import DetectorPolicy
from appliance.drivers.protocols import Secret
from appliance.lab import procs
from appliance.lab.inproc import InprocRig, fast_engine
from appliance.monitor.runner import MonitorSettings
from appliance.monitor.webhook import verify_signature
from appliance.services.failover import FailoverInfo, FailoverService
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.store.repos.jobs import ACTIVE
from appliance.store.tables import BindingRow, BladeRow, JobRow, JobStepRow, ProfileRow
from tests.support import world_io

pytestmark = [pytest.mark.slow]

SECRET = "webhook-secret-for-the-rack-test"
MONITOR = MonitorSettings(interval=1.0, probe_timeout=3.0, policy=DetectorPolicy(fail_after=2, recover_after=1))

PROFILE = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: ops}}
spec:
  requirements: {{minCpus: 8, nics: 2}}
  identity:
    nics:
      - {{name: eth0, mac: "02:f0:00:00:{n:02x}:01", vlans: {{native: 100}}, pxe: true}}
      - {{name: eth1, mac: "02:f0:00:00:{n:02x}:02", vlans: {{native: 101}}}}
  boot: {{mode: uefi, source: {{type: image, kernel: lab/vmlinuz, initrd: lab/initrd.img}}}}
  failover: {{domain: prod, priority: {priority}, policy: n+1}}
"""


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver on loopback that keeps only correctly signed events."""
    got: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_signature(SECRET, body, request.headers):
            return web.Response(status=401)
        got.append(json.loads(body))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = procs.free_tcp_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", got
    finally:
        await runner.cleanup()


def stamp_all(rig: InprocRig, count: int) -> list[str]:
    profiles, jobs = ProfileService(rig.store), JobService(rig.store)
    names = []
    for i in range(1, count + 1):
        name = f"app-{i:02d}"
        profiles.import_document(PROFILE.format(name=name, n=i, priority=i))
        jobs.submit_assign(name, tenant="ops")
        names.append(name)
    return names


def placement(rig: InprocRig) -> dict[str, str]:
    """profile → blade of its live binding."""
    with rig.store.read() as s:
        return dict(s.execute(select(ProfileRow.name, BladeRow.name)
                              .join(BindingRow, BindingRow.profile_id == ProfileRow.id)
                              .join(BladeRow, BladeRow.id == BindingRow.blade_id)
                              .where(BindingRow.state == "live")).all())


def all_active(rig: InprocRig, names: list[str]) -> bool:
    """Each profile active and its stamp job over: a profile reads active from its last step, a
    moment before its job's final commit (a failover submitted in between is refused)."""
    with rig.store.read() as s:
        states = dict(s.execute(select(ProfileRow.name, ProfileRow.state)).all())
        busy = set(s.scalars(select(ProfileRow.name).join(JobRow, JobRow.profile_id == ProfileRow.id)
                             .where(JobRow.state.in_(ACTIVE))))
    return all(states.get(n) == "active" and n not in busy for n in names)


def failovers(rig: InprocRig) -> dict[str, FailoverInfo]:
    return {f.profile: f for f in FailoverService(rig.store).list_failovers(domain="prod", limit=100)}


async def nothing_ran_twice(rig: InprocRig) -> None:
    """From the BMCs' own power history (and the switch's port writes) joined with the bindings'
    times: no profile ran on two powered-on, reachable blades at once, and no blade ran two
    profiles without a power-off between. (The store's unique indexes forbid two *live*
    bindings whatever happens, so counting them proves nothing.)"""
    problems = await asyncio.to_thread(world_io.inproc_violations, rig)
    assert not problems, problems


def event_time(info: FailoverInfo, event: str) -> datetime:
    return datetime.fromisoformat(next(e["at"] for e in info.timeline if e["event"] == event))


@pytest.mark.timeout(300)
async def test_five_failures_three_spares_priority_moves_first_rest_waits_then_moves(tmp_path: Path) -> None:
    async with receiver() as (url, events), InprocRig(tmp_path, chassis=[25], enroll=23, engine=fast_engine(),
                                                     monitor=MONITOR) as rig:
        FailoverService(rig.store, rig.box).create_domain("prod", webhook_url=url, webhook_secret=Secret(SECRET))
        names = stamp_all(rig, 20)
        await rig.until("20 profiles active", lambda: all_active(rig, names), 120)
        before = placement(rig)
        # Priority = profile number: the failing ones are 20, 18, 16 (move) and 3, 2 (wait).
        victims = {n: before[n] for n in ("app-20", "app-18", "app-16", "app-03", "app-02")}
        await asyncio.sleep(2.5)   # the monitor has seen every blade healthy
        for blade in victims.values():
            rig.crash(blade)

        def moved_and_waiting() -> dict[str, FailoverInfo] | None:
            f = failovers(rig)
            done = [p for p in ("app-20", "app-18", "app-16") if f.get(p) and f[p].state == "succeeded"]
            waiting = [p for p in ("app-03", "app-02") if f.get(p) and f[p].state == "waiting"]
            return f if len(done) == 3 and len(waiting) == 2 else None

        try:
            f = await rig.until("3 moved, 2 waiting", moved_and_waiting, 90)
        except TimeoutError:
            seen = {p: (i.state, i.reason, i.to_blade) for p, i in failovers(rig).items()}
            raise AssertionError(f"failovers: {seen}") from None
        for p in ("app-03", "app-02"):
            assert (f[p].reason or "").startswith("waiting for a spare"), f[p].reason
        after = placement(rig)
        for p in ("app-20", "app-18", "app-16"):
            assert after[p] != victims[p] and after[p] not in victims.values()
            assert [e["event"] for e in f[p].timeline][:3] == ["detected", "fenced", "spare-chosen"]
            assert {"powered-on", "booted", "active"} <= {e["event"] for e in f[p].timeline}
        assert "app-03" not in after and "app-02" not in after
        await nothing_ran_twice(rig)

        rig.enroll(2)   # two new spares: the waiting ones move, in order
        f = await rig.until("the waiting two moved", lambda: (lambda g: g if all(
            g[p].state == "succeeded" for p in ("app-03", "app-02")) else None)(failovers(rig)), 90)
        after = placement(rig)
        assert set(after) == set(names)
        await nothing_ran_twice(rig)
        with rig.store.read() as s:
            states = dict(s.execute(select(BladeRow.name, BladeRow.state)).all())
        assert all(states[b] == "failed" for b in victims.values()), {b: states[b] for b in victims.values()}
        for p, blade in victims.items():
            assert rig.raw_power(blade) == "Off"
            assert rig.raw_power(after[p]) == "On"
        kinds = [(e["event"], e["data"]["profile"]) for e in events]
        for p in victims:
            for event in ("failure.detected", "failover.started", "failover.finished"):
                assert (event, f"ops/{p}") in kinds, (event, p, kinds)


@pytest.mark.timeout(240)
async def test_no_failover_when_neither_bmc_nor_switch_can_fence(tmp_path: Path) -> None:
    """Split brain guard: the failed blade's BMC does not answer and its switch ports cannot be
    shut, so nothing is started elsewhere; the profile needs an operator."""
    async with InprocRig(tmp_path, chassis=[2, 1], engine=fast_engine(fence_timeout=3.0),
                         monitor=MONITOR) as rig:
        FailoverService(rig.store, rig.box).create_domain("prod")
        ProfileService(rig.store).import_document(PROFILE.format(name="db", n=1, priority=5))
        JobService(rig.store).submit_assign("db", tenant="ops", blade="b003")   # alone in chassis 2
        await rig.until("db active", lambda: all_active(rig, ["db"]), 60)
        await asyncio.sleep(2.5)
        rig.kill_switch()
        rig.kill_bmc("b003")
        f = await rig.until("needs operator", lambda: (lambda g: g if g.get("db") and g["db"].state ==
                                                        "needs-operator" else None)(failovers(rig)), 60)
        await asyncio.sleep(3)   # and it stays so: no spare is touched
        with rig.store.read() as s:
            prof = s.scalar(select(ProfileRow).where(ProfileRow.name == "db"))
            assert prof is not None and prof.state == "needs-operator"
            live = s.scalar(select(func.count()).select_from(BindingRow).where(BindingRow.state == "live"))
        assert live == 1            # still (only) the old, unconfirmed one
        assert rig.raw_power("b001") == "Off" and rig.raw_power("b002") == "Off"
        assert "fence-unconfirmed" in [e["event"] for e in f["db"].timeline]
        assert "power:" in (f["db"].reason or "") and "isolation:" in (f["db"].reason or "")


@pytest.mark.timeout(240)
async def test_spare_is_not_powered_on_before_the_fence_is_confirmed(tmp_path: Path) -> None:
    """The failed blade's BMC reads back off only 3 s after the fence's power-off: the
    spare's power-on must come after that confirmation. (A failover run by hand, as
    `anvil failover run` does, while the old blade is still on.)"""
    async with InprocRig(tmp_path, chassis=[2, 1], delays={2: (3.0, 3.0)}, engine=fast_engine()) as rig:
        FailoverService(rig.store, rig.box).create_domain("prod")
        ProfileService(rig.store).import_document(PROFILE.format(name="db", n=1, priority=5))
        JobService(rig.store).submit_assign("db", tenant="ops", blade="b003")
        await rig.until("db active", lambda: all_active(rig, ["db"]), 60)
        assert rig.raw_power("b003") == "On"
        JobService(rig.store).submit_failover("db", tenant="ops", reason="run by hand")
        rig.engine.wake() if rig.engine else None
        f = await rig.until("failover done", lambda: (lambda g: g if g.get("db") and g["db"].state ==
                                                      "succeeded" else None)(failovers(rig)), 90)
        info = f["db"]
        fenced, detected = event_time(info, "fenced"), event_time(info, "detected")
        assert (fenced - detected).total_seconds() >= 3.0
        with rig.store.read() as s:
            started = s.scalar(select(JobStepRow.started_at).where(JobStepRow.job_id == info.job_id,
                                                                    JobStepRow.name == "power-on"))
        assert started is not None
        started_aware = started if started.tzinfo else started.replace(tzinfo=fenced.tzinfo)
        assert started_aware >= fenced, (started_aware, fenced)
        assert info.to_blade in ("b001", "b002") and info.fence == "power"
        assert rig.raw_power("b003") == "Off" and rig.raw_power(info.to_blade) == "On"
        await nothing_ran_twice(rig)


@pytest.mark.timeout(240)
async def test_drill_moves_a_profile_out_and_back_and_leaves_the_blades_in_service(tmp_path: Path) -> None:
    async with InprocRig(tmp_path, chassis=[3], engine=fast_engine()) as rig:
        FailoverService(rig.store, rig.box).create_domain("prod")
        ProfileService(rig.store).import_document(PROFILE.format(name="web", n=1, priority=1))
        jobs = JobService(rig.store)
        jobs.submit_assign("web", tenant="ops", blade="b002")
        await rig.until("web active", lambda: all_active(rig, ["web"]), 60)
        for leg, to in (("out", None), ("back", "b002")):
            failover_id, _ = jobs.submit_failover("web", tenant="ops", drill=True, to_blade=to, reason=f"drill {leg}")
            done = await rig.until(f"drill {leg}", lambda i=failover_id: (lambda f: f if f.final else None)(
                FailoverService(rig.store).get_failover(i)), 90)
            assert done.state == "succeeded", (done.state, done.reason)
            assert done.to_blade != done.from_blade
        assert placement(rig) == {"web": "b002"}
        with rig.store.read() as s:
            states = dict(s.execute(select(BladeRow.name, BladeRow.state)).all())
        assert states == {"b001": "spare", "b002": "active", "b003": "spare"}
        await nothing_ran_twice(rig)


@pytest.mark.timeout(240)
async def test_a_drill_moves_only_to_a_blade_of_the_domains_pool_that_fits(tmp_path: Path) -> None:
    from appliance.services.blade_pools import BladePoolService

    async with InprocRig(tmp_path, chassis=[4], engine=fast_engine()) as rig:
        with rig.store.write() as s:       # b001 too small for the profile; b003 outside the domain's pool
            for row in s.scalars(select(BladeRow)):
                row.memory_gib = 64 if row.name == "b001" else 256
        BladePoolService(rig.store).create("big")
        BladePoolService(rig.store).add("big", ("b001", "b002", "b004"))
        FailoverService(rig.store, rig.box).create_domain("prod", spare_pool="big")
        doc = PROFILE.format(name="web", n=1, priority=1).replace("minCpus: 8,", "minCpus: 8, minMemoryGiB: 128,")
        ProfileService(rig.store).import_document(doc)
        jobs = JobService(rig.store)
        jobs.submit_assign("web", tenant="ops", blade="b002")
        await rig.until("web active", lambda: all_active(rig, ["web"]), 60)
        failover_id, _ = jobs.submit_failover("web", tenant="ops", drill=True, reason="drill out")
        done = await rig.until("drill out", lambda: (lambda f: f if f.final else None)(
            FailoverService(rig.store).get_failover(failover_id)), 90)
        assert (done.state, done.from_blade, done.to_blade) == ("succeeded", "b002", "b004"), done.reason
        await nothing_ran_twice(rig)


@pytest.mark.timeout(240)
async def test_restart_policy_power_cycles_the_same_blade_first(tmp_path: Path) -> None:
    async with InprocRig(tmp_path, chassis=[2], engine=fast_engine(), monitor=MONITOR) as rig:
        FailoverService(rig.store, rig.box).create_domain("prod")
        doc = PROFILE.format(name="app", n=1, priority=1).replace("policy: n+1", "policy: restart")
        ProfileService(rig.store).import_document(doc)
        JobService(rig.store).submit_assign("app", tenant="ops", blade="b001")
        await rig.until("app active", lambda: all_active(rig, ["app"]), 60)
        await asyncio.sleep(2.5)
        rig.crash("b001")
        f = await rig.until("restarted", lambda: (lambda g: g if g.get("app") and g["app"].final else None)(
            failovers(rig)), 90)
        info = f["app"]
        assert info.state == "succeeded", (info.state, info.reason)
        assert [e["event"] for e in info.timeline] == ["detected", "restarting", "restarted", "active"]
        assert placement(rig) == {"app": "b001"} and rig.raw_power("b001") == "On"
        assert rig.raw_power("b002") == "Off"
        await nothing_ran_twice(rig)
