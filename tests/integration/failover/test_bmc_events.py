"""Redfish event subscriptions against the emulated rack: the monitor subscribes on the
sushy-tools emulators' EventService, a blade that dies is failed over long before the
next poll, and events are only ever a reason to poll (forged ones change nothing).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select, update

from appliance.domain.health import DetectorPolicy
from appliance.lab.inproc import InprocRig, fast_engine
from appliance.monitor.runner import MonitorSettings
from appliance.services.failover import FailoverService
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.store.tables import BmcEventSubscriptionRow
from tests.integration.failover.test_failover_rack import PROFILE, all_active, failovers, placement

pytestmark = [pytest.mark.slow]

# A poll every 60 s: anything the monitor sees within seconds, it saw through an event.
SLOW_POLL = MonitorSettings(interval=60.0, probe_timeout=3.0, event_confirm_interval=0.2,
                            policy=DetectorPolicy(fail_after=2, recover_after=1))


def subscriptions(rig: InprocRig) -> list[BmcEventSubscriptionRow]:
    with rig.store.read() as s:
        rows = list(s.scalars(select(BmcEventSubscriptionRow)))
        s.expunge_all()
    return rows


def post(url: str, body: bytes, token: str | None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def event(origin: str) -> bytes:
    return json.dumps({"Events": [{"EventType": "Alert", "MessageId": "ResourceEvent.1.0.ResourceStatusChangedWarning",
                                   "OriginOfCondition": {"@odata.id": origin}}]}).encode()


@pytest.mark.timeout(240)
async def test_a_dead_blade_fails_over_on_its_bmc_event_long_before_the_next_poll(tmp_path: Path) -> None:
    async with InprocRig(tmp_path, chassis=[3], engine=fast_engine(), monitor=SLOW_POLL, events=True) as rig:
        FailoverService(rig.store, rig.box).create_domain("prod")
        subs = await rig.until("subscribed", lambda: [r for r in subscriptions(rig) if r.uri] or None, 30)
        assert len(subs) == 1, "one subscription per event service, not one per blade"
        assert subs[0].destination.startswith(f"{rig.boot_url}/events/redfish/")
        assert len(subs[0].token_hash) == 64
        ProfileService(rig.store).import_document(PROFILE.format(name="db", n=1, priority=5))
        JobService(rig.store).submit_assign("db", tenant="ops", blade="b002")
        await rig.until("db active", lambda: all_active(rig, ["db"]), 60)
        # Stamping powered b002 on: its event was confirmed by a poll that found it well.
        history = FailoverService(rig.store).health_history("b002")
        assert any(h.source == "event" and h.ok for h in history), history

        began = time.monotonic()
        rig.crash("b002")
        found = await rig.until("failover detected", lambda: failovers(rig).get("db"), 20, every=0.1)
        detected_after = time.monotonic() - began
        print(f"\nRedfish event to failover detected: {detected_after:.2f} s (poll interval 60 s)")
        assert detected_after < 10, detected_after
        assert found.from_blade == "b002"
        done = await rig.until("failover done", lambda: (lambda f: f if f.final else None)(
            failovers(rig)["db"]), 60)
        assert done.state == "succeeded", (done.state, done.reason)
        assert placement(rig)["db"] != "b002"
        bad = [h for h in FailoverService(rig.store).health_history("b002") if h.source == "event" and not h.ok]
        assert bad and "powered off" in bad[0].detail, bad


@pytest.mark.timeout(240)
async def test_forged_or_malformed_events_change_nothing(tmp_path: Path) -> None:
    async with InprocRig(tmp_path, chassis=[2], engine=fast_engine(), monitor=SLOW_POLL, events=True) as rig:
        FailoverService(rig.store, rig.box).create_domain("prod")
        sub = (await rig.until("subscribed", lambda: [r for r in subscriptions(rig) if r.uri] or None, 30))[0]
        ProfileService(rig.store).import_document(PROFILE.format(name="db", n=1, priority=5))
        JobService(rig.store).submit_assign("db", tenant="ops", blade="b001")
        await rig.until("db active", lambda: all_active(rig, ["db"]), 60)
        system = f"/redfish/v1/Systems/{rig.blade('b001').system['uuid']}"
        before = len(FailoverService(rig.store).health_history("b001"))

        for url, token in ((sub.destination, None), (sub.destination, "not-the-token"),
                           (sub.destination.rsplit("/", 1)[0] + "/999", "not-the-token"),
                           (sub.destination.rsplit("/", 1)[0] + "/x", "t")):
            status, text = await asyncio.to_thread(post, url, event(system), token)
            assert status == 401, (url, status, text)
            assert "token" in text

        # Give the subscription a token the test knows (the BMC's own is write-only).
        with rig.store.write() as s:
            s.execute(update(BmcEventSubscriptionRow).where(BmcEventSubscriptionRow.id == sub.id)
                      .values(token_hash=hashlib.sha256(b"known").hexdigest()))
        for body, why in ((b"{not json", "not a Redfish event"), (b'{"Events": 3}', "'Events'"),
                          (b'{"Events": [1]}', "Events[0]")):
            status, text = await asyncio.to_thread(post, sub.destination, body, "known")
            assert status == 400 and why in text, (body, status, text)
        status, _ = await asyncio.to_thread(post, sub.destination, b"x" * (300 * 1024), "known")
        assert status == 413

        # A well-formed event about a healthy blade: polled at once, found well, nothing moves.
        status, _ = await asyncio.to_thread(post, sub.destination, event(system), "known")
        assert status == 204
        await rig.until("the event's poll", lambda: len(FailoverService(rig.store).health_history("b001")) > before
                        or None, 10, every=0.1)
        await asyncio.sleep(1.0)
        newest = FailoverService(rig.store).health_history("b001")[0]
        assert newest.source == "event" and newest.ok, newest
        assert failovers(rig) == {} and placement(rig) == {"db": "b001"}


@pytest.mark.timeout(120)
async def test_subscriptions_are_renewed_and_the_old_one_is_deleted_on_the_bmc(tmp_path: Path) -> None:
    """A BMC reset loses its subscriptions silently: the monitor renews them every so often."""
    from appliance.lab import redfish_emulator

    quick = MonitorSettings(interval=0.5, probe_timeout=3.0, policy=DetectorPolicy(fail_after=2, recover_after=1))
    async with InprocRig(tmp_path, chassis=[1], engine=fast_engine(), monitor=quick, events=True) as rig:
        assert rig.monitor is not None and rig.monitor.events is not None
        first = (await rig.until("subscribed", lambda: [r for r in subscriptions(rig) if r.uri] or None, 30))[0]
        rig.monitor.events.renew_after = 1.0
        second = (await rig.until("renewed", lambda: [r for r in subscriptions(rig) if r.uri and r.uri != first.uri]
                                  or None, 30))[0]
        assert second.token_hash != first.token_hash   # the old token is void
        await asyncio.sleep(0.3)
        on_bmc = redfish_emulator.get_json(rig.blades[0].emulator, "/redfish/v1/EventService/Subscriptions")
        assert first.uri not in [m["@odata.id"] for m in on_bmc["Members"]]
        assert len(on_bmc["Members"]) == 1, on_bmc
