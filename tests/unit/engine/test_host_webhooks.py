"""Host pools' webhooks: every event, signed, in order, retried with back-off, logged, given up at
last, and resumed from the store after a restart; a receiver on loopback stands for the VM manager."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from appliance.drivers.protocols import Secret
from appliance.engine.host_delivery import HostWebhookLoop, delivery_id
from appliance.monitor.webhook import verify_signature
from appliance.secrets import SecretBox
from appliance.services.host_webhooks import HostWebhookService
from appliance.services.hostpools import HostPoolService
from appliance.store import Store
from tests.unit.engine.fakes import FakeHardware
from tests.unit.engine.hostpool_rig import drive, events, ready, rig

SECRET = "a-receivers-secret-0123456789"


@dataclass
class Receiver:
    url: str = ""
    fail_first: int = 0                 # answer 500 to this many requests first
    always_fail: bool = False
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answered: int = 0

    @property
    def accepted(self) -> list[dict[str, object]]:
        out = []
        for headers, raw in self.got:
            if headers.get("_status") == "200":
                out.append(json.loads(raw))
        return out


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()

    async def hook(request: web.Request) -> web.Response:
        raw = await request.read()
        rec.answered += 1
        status = 500 if rec.always_fail or rec.answered <= rec.fail_first else 200
        rec.got.append(({**request.headers, "_status": str(status)}, raw))
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


def _loop(store: Store, tmp: Path, **kw: object) -> HostWebhookLoop:
    return HostWebhookLoop(store, SecretBox(tmp / "secrets.key"), interval=0.02,
                           backoff=lambda n: 0.05, **kw)  # type: ignore[arg-type]


def _webhook(store: Store, tmp: Path, url: str) -> int:
    return HostWebhookService(store, SecretBox(tmp / "secrets.key")).add("east", url, Secret(SECRET),
                                                                          tenant="acme").id


async def test_every_event_arrives_signed_in_order_and_retries_keep_the_delivery_id(
        store: Store, tmp_path: Path, receiver: Receiver) -> None:
    rig(store, tmp_path)
    HostPoolService(store).create("east", template="kvm-host", tenant="acme", size=2)
    hook = _webhook(store, tmp_path, receiver.url)
    receiver.fail_first = 2
    loop = _loop(store, tmp_path)
    await drive(store, FakeHardware(), lambda: ready(store, 2) and len(receiver.accepted) == 4,
                loops=(loop.run,))
    sent = [e for e, _, _ in events(store)]
    assert [b["event"] for b in receiver.accepted] == sent == ["host.requested", "host.requested", "host.ready",
                                                               "host.ready"]
    for headers, raw in receiver.got:
        assert verify_signature(SECRET, raw, headers), headers
        assert headers["X-Anvil-Event"] == json.loads(raw)["event"]
    # The first event was tried three times with one delivery id (a receiver drops duplicates by it).
    first = [h["X-Anvil-Delivery"] for h, raw in receiver.got if json.loads(raw)["data"]["cursor"] ==
             receiver.accepted[0]["data"]["cursor"]]  # type: ignore[index]
    assert len(first) == 3 and len(set(first)) == 1
    body = receiver.accepted[2]["data"]
    assert body["pool"] == "east" and body["host"]["state"] == "ready" and body["cursor"] > 0  # type: ignore[index]
    log = HostWebhookService(store).deliveries("east", hook, tenant="acme")
    assert [(d["attempt"], d["ok"], d["status"]) for d in reversed(log)][:4] == [(1, False, 500), (2, False, 500),
                                                                                (3, True, 200), (1, True, 200)]
    assert log[0]["delivery"] == delivery_id(hook, log[0]["cursor"])
    info = HostWebhookService(store).list("east", tenant="acme")[0].public()
    assert info["delivered"] == 4 and info["failures"] == 0 and info["secret"] == "***"


async def test_an_event_is_given_up_after_the_last_try_and_the_next_goes_on(
        store: Store, tmp_path: Path, receiver: Receiver) -> None:
    rig(store, tmp_path)
    HostPoolService(store).create("east", template="kvm-host", tenant="acme", size=1)
    hook = _webhook(store, tmp_path, receiver.url)
    receiver.always_fail = True
    loop = _loop(store, tmp_path, max_attempts=2)
    await drive(store, FakeHardware(), lambda: HostWebhookService(store).list("east", tenant="acme")[0].given_up == 2,
                loops=(loop.run,))
    info = HostWebhookService(store).list("east", tenant="acme")[0]
    assert info.given_up == 2 and info.failures == 0 and info.cursor == len(events(store))
    log = HostWebhookService(store).deliveries("east", hook, tenant="acme")
    assert [(d["event"], d["attempt"], d["ok"]) for d in reversed(log)] == [
        ("host.requested", 1, False), ("host.requested", 2, False), ("host.ready", 1, False),
        ("host.ready", 2, False)]


async def test_a_receiver_down_during_a_restart_gets_every_event_afterwards(
        store: Store, tmp_path: Path, receiver: Receiver) -> None:
    rig(store, tmp_path)
    HostPoolService(store).create("east", template="kvm-host", tenant="acme", size=2)
    _webhook(store, tmp_path, receiver.url)
    # The appliance runs without its delivery worker (as if it died before sending): events pile up.
    await drive(store, FakeHardware(), lambda: ready(store, 2))
    assert receiver.got == []
    loop = _loop(store, tmp_path)
    await drive(store, FakeHardware(), lambda: len(receiver.accepted) == 4, loops=(loop.run,))
    assert [b["event"] for b in receiver.accepted] == [e for e, _, _ in events(store)]


async def test_a_new_webhook_starts_at_the_newest_event_unless_told_to_replay(store: Store, tmp_path: Path) -> None:
    rig(store, tmp_path)
    HostPoolService(store).create("east", template="kvm-host", tenant="acme", size=1)
    await drive(store, FakeHardware(), lambda: ready(store, 1))
    svc = HostWebhookService(store, SecretBox(tmp_path / "secrets.key"))
    now = svc.add("east", "http://127.0.0.1:9/a", Secret(SECRET), tenant="acme")
    replay = svc.add("east", "http://127.0.0.1:9/b", Secret(SECRET), after=0, tenant="acme")
    assert now.cursor == len(events(store)) and replay.cursor == 0
    from appliance.errors import ValidationError

    with pytest.raises(ValidationError) as bad:
        svc.add("east", "ftp://x", Secret("short"), tenant="acme")
    assert [(i.path, i.reason) for i in bad.value.issues] == [
        ("url", '"ftp://x" must be an http:// or https:// URL'), ("secret", "must be 16-512 characters")]
