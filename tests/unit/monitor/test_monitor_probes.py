"""The monitor's verdicts with in-process fake BMCs: power, and the TCP probe that stands in
for the heartbeat of an OS without the lab agent (a real listener on loopback)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from appliance.domain.health import DetectorPolicy
from appliance.drivers.protocols import Health, HealthState, PowerAction
from appliance.lab.procs import free_tcp_port
from appliance.monitor.runner import Monitor, MonitorSettings
from appliance.services.failover import FailoverService
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.store import Store
from appliance.store.tables import BladeRow, FailoverRow, JobRow
from tests.unit.engine.fakes import FakeHardware, make_engine, rack, run_until_idle

PROFILE = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {name: svc, tenant: acme}
spec:
  identity:
    nics:
      - {name: eth0, mac: "02:a0:00:00:09:01", ipv4: 127.0.0.1/8, pxe: true}
  boot: {mode: uefi, source: {type: local}}
"""


async def test_tcp_probe_and_power_decide_the_verdict(store: Store, tmp_path: Path) -> None:
    rack(store, tmp_path, blades=2)
    ProfileService(store).import_document(PROFILE)
    hw = FakeHardware()
    JobService(store).submit_assign("svc", tenant="acme", blade="b01")
    await run_until_idle(make_engine(store, hw))
    port = free_tcp_port()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    monitor = Monitor(store, hw, settings=MonitorSettings(interval=1, probe_timeout=1, tcp_probe_port=port,
                                                          policy=DetectorPolicy(fail_after=1, recover_after=1)))
    try:
        verdicts = {v.blade: v for v in await monitor.poll_once()}
        assert verdicts["b01"].ok and verdicts["b01"].detail == "ok"
        assert verdicts["b02"].ok                      # a spare: nothing runs there to probe
    finally:
        server.close()
        await server.wait_closed()
    verdicts = {v.blade: v for v in await monitor.poll_once()}
    assert not verdicts["b01"].ok and f"TCP probe of 127.0.0.1:{port} failed" in verdicts["b01"].detail

    driver, bmc = hw.bmc("b01")
    await driver.set_power(bmc, PowerAction.OFF)
    verdicts = {v.blade: v for v in await monitor.poll_once()}
    assert "powered off while running acme/svc" in verdicts["b01"].detail
    assert monitor.snapshot()["b01"] == "failed"


async def test_critical_health_of_a_running_blade_is_a_failure(store: Store, tmp_path: Path) -> None:
    """What the IPMI driver makes of an SEL fault (or Redfish of Status.Health) fails the blade
    even though its power and heartbeat look fine."""
    rack(store, tmp_path, blades=2)
    ProfileService(store).import_document(PROFILE)
    hw = FakeHardware()
    JobService(store).submit_assign("svc", tenant="acme", blade="b01")
    await run_until_idle(make_engine(store, hw))
    monitor = Monitor(store, hw, settings=MonitorSettings(interval=1, probe_timeout=1,
                                                          policy=DetectorPolicy(fail_after=1, recover_after=1)))
    assert {v.blade: v.ok for v in await monitor.poll_once()} == {"b01": True, "b02": True}
    reason = "SEL: memory uncorrectable ECC (sensor 0x03, record 0x0001)"
    hw.bmcs.blade("fake://b01").health = Health(HealthState.CRITICAL, reason)
    hw.bmcs.blade("fake://b02").health = Health(HealthState.WARNING, "SEL: power supply failure")
    verdicts = {v.blade: v for v in await monitor.poll_once()}
    assert not verdicts["b01"].ok and verdicts["b01"].detail == f"health critical: {reason}"
    assert verdicts["b02"].ok and verdicts["b02"].health == "warning"    # a warning is shown, not acted on
    assert monitor.snapshot()["b01"] == "failed"


PROTECTED = PROFILE.replace("  boot:", "  failover: {domain: prod, priority: 1, policy: n+1}\n  boot:")


async def test_a_failed_blade_asks_again_for_its_failover_once_the_profile_is_free(store: Store,
                                                                                   tmp_path: Path) -> None:
    """The failure is declared while the profile is busy (here: a failover opened by hand that
    is then abandoned); the blade stays dead, so the next failing sample starts the failover,
    although the detector has held the blade failed all along (CI once lost a failover so:
    declared during a planned move, the profile failed back, the blade died again)."""
    rack(store, tmp_path, blades=3)
    FailoverService(store).create_domain("prod")
    ProfileService(store).import_document(PROTECTED)
    hw = FakeHardware()
    jobs = JobService(store)
    jobs.submit_assign("svc", tenant="acme", blade="b01")
    await run_until_idle(make_engine(store, hw))
    monitor = Monitor(store, hw, settings=MonitorSettings(interval=1, probe_timeout=1,
                                                          policy=DetectorPolicy(fail_after=1, recover_after=1)))
    await monitor.poll_once()
    by_hand, _ = jobs.submit_failover("svc", tenant="acme", reason="planned move")   # not run yet
    driver, bmc = hw.bmcs, hw.bmc("b01")[1]
    await driver.set_power(bmc, PowerAction.OFF)
    await monitor.poll_once()
    assert monitor.snapshot()["b01"] == "failed" and monitor.started == []          # refused: busy
    with store.write() as s:                                                          # abandoned
        s.execute(update(FailoverRow).where(FailoverRow.id == by_hand).values(state="failed"))
        s.execute(update(JobRow).where(JobRow.kind == "failover").values(state="cancelled"))
    await monitor.poll_once()
    assert monitor.started == [("acme/svc", "b01")]
    await monitor.poll_once()                                                         # one is open: no more
    assert monitor.started == [("acme/svc", "b01")]


QUIET_PROTECTED = PROFILE.replace("metadata: {name: svc, tenant: acme}", "metadata: {name: hb, tenant: acme}") \
    .replace("02:a0:00:00:09:01", "02:a0:00:00:09:02") + "  failover: {domain: prod, priority: 1, policy: n+1}\n"


async def test_a_quiet_agent_is_found_between_polls(store: Store, tmp_path: Path) -> None:
    """A hung OS: its BMC reads On and healthy, only its agent's heartbeats stop. 8f9e50f noticed
    that at the next poll (30 s by default) once 35 s had passed; the sweep looks every second."""
    from datetime import UTC, datetime, timedelta

    from appliance.boot.tokens import HEARTBEAT
    from appliance.store.tables import BindingRow, BootTokenRow

    rack(store, tmp_path, blades=2)
    FailoverService(store).create_domain("prod")
    ProfileService(store).import_document(QUIET_PROTECTED)
    hw = FakeHardware()
    JobService(store).submit_assign("hb", tenant="acme", blade="b01")
    await run_until_idle(make_engine(store, hw))
    with store.write() as s:      # the agent called back, beat, then went quiet 10 s ago
        binding = s.scalars(select(BindingRow).where(BindingRow.state == "live")).one()
        quiet = datetime.now(UTC) - timedelta(seconds=10)
        s.add(BootTokenRow(binding_id=binding.id, generation=binding.generation, kind=HEARTBEAT,
                           token_hash="f" * 64, created_at=quiet, last_seen_at=quiet))
    monitor = Monitor(store, hw, settings=MonitorSettings(interval=3600, probe_timeout=1, heartbeat_timeout=6.5,
                                                          heartbeat_sweep=0.2,
                                                          policy=DetectorPolicy(fail_after=2, recover_after=1)))
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    try:
        for _ in range(100):       # the first poll at start sees one stale sample; the sweep confirms
            if monitor.started:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert monitor.started == [("acme/hb", "b01")]
    with store.read() as s:
        failover = s.scalars(select(FailoverRow)).one()
    assert "no heartbeat from acme/hb" in (failover.reason or "")


async def test_a_pass_over_fast_bmcs_lets_the_event_loop_run_between_short_stretches(store: Store) -> None:
    """Probes of a BMC that answers without waiting (the fake driver) never suspend, so the pass
    breathes: every BREATHE_EVERY of work, the loop's other tasks (API requests) get a turn.
    Each of the 64 workers used to take its own BREATHE_EVERY in a row before they did: at
    10,000 blades a 300-700 ms stall of every request once a pass."""
    names = [f"fb{i:03d}" for i in range(400)]
    with store.write() as s:
        s.execute(insert(BladeRow), [{"name": n, "bmc_address": f"fake://{n}", "driver": "fake", "username": "u",
                                      "password_enc": "x", "verify_tls": True, "state": "spare", "facts": {}}
                                     for n in names])
    monitor = Monitor(store, FakeHardware(), settings=MonitorSettings(concurrency=64))
    ticks = [0.0]

    def work_clock() -> float:   # each probe's check of the clock: 1 ms of work
        ticks[0] += 0.001
        return ticks[0]

    monitor._work_clock = work_clock
    probes = 0
    real = monitor._probe

    async def probe(w: Any) -> Any:
        nonlocal probes
        probes += 1
        return await real(w)

    monitor._probe = probe   # type: ignore[method-assign]
    done = False
    stretches: list[int] = []

    async def other_task() -> None:   # an API request's share of the loop
        seen = 0
        while not done:
            await asyncio.sleep(0)
            stretches.append(probes - seen)
            seen = probes

    spy = asyncio.create_task(other_task())
    verdicts = await monitor.poll_once()
    done = True
    await spy
    assert len(verdicts) == 400 and probes == 400
    # at most BREATHE_EVERY (5 ms: 5 probes here) by one worker, then one probe by each other worker
    assert max(stretches) <= 5 + 63, sorted(stretches)[-5:]
