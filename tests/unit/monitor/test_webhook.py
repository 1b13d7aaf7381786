"""Webhooks against a real aiohttp receiver on loopback that checks every signature."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from appliance.drivers.protocols import Secret
from appliance.monitor.webhook import (
    DELIVERY_HEADER,
    FAILOVER_STARTED,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    RetryPolicy,
    WebhookSender,
    redact,
    sign,
    verify_signature,
)

Start = Callable[..., Awaitable["Receiver"]]
SECRET = "whsec-loopback-0123456789abcdef"
FAST = RetryPolicy(attempts=4, first_delay=0.05, max_delay=0.2, attempt_timeout=1.0, deadline=5.0)


@dataclass
class Receiver:
    url: str
    statuses: list[int]                       # answers in order; the last one repeats
    delay: float = 0.0
    seen: list[tuple[bytes, dict[str, str], bool]] = field(default_factory=list)


def ours(caplog: pytest.LogCaptureFixture) -> str:
    """What the sender's side logged (the test receiver's access log shows its own URL)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")


def _free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
async def receiver() -> AsyncIterator[Start]:
    runners: list[web.AppRunner] = []
    made: list[Receiver] = []
    stopping = asyncio.Event()  # lets a hanging handler end at teardown

    async def start(statuses: list[int], delay: float = 0.0) -> Receiver:
        sock = _free_socket()
        rec = Receiver(f"http://127.0.0.1:{sock.getsockname()[1]}/hook?token=receiver-token", statuses, delay)

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            ok = verify_signature(SECRET, body, request.headers)
            rec.seen.append((body, dict(request.headers), ok))
            if rec.delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), rec.delay)
            status = rec.statuses[min(len(rec.seen), len(rec.statuses)) - 1]
            return web.Response(status=status if ok else 401, text="ok")

        app = web.Application()
        app.router.add_post("/hook", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        runners.append(runner)
        made.append(rec)
        return rec

    yield start
    stopping.set()
    for r in runners:
        await r.cleanup()


async def test_delivered_with_a_valid_signature(receiver: Start,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rec = await receiver([200])
    async with WebhookSender(retry=FAST) as sender:
        out = await sender.send(rec.url, Secret(SECRET), FAILOVER_STARTED,
                                {"domain": "prod-web", "profile": "acme/web-01"})
    assert out.delivered and out.attempts == 1 and out.status == 200 and out.error is None
    (body, headers, ok), = rec.seen
    assert ok
    doc = json.loads(body)
    assert doc["event"] == "failover.started" and doc["data"]["profile"] == "acme/web-01"
    assert doc["id"] == out.delivery == headers[DELIVERY_HEADER]
    assert headers["Content-Type"] == "application/json" and headers["X-Anvil-Event"] == "failover.started"
    assert SECRET not in caplog.text and "receiver-token" not in ours(caplog)
    assert SECRET not in repr(out)


async def test_500_then_200_is_retried_with_the_same_delivery(receiver: Start) -> None:
    rec = await receiver([500, 200])
    async with WebhookSender(retry=FAST) as sender:
        out = await sender.send(rec.url, Secret(SECRET), FAILOVER_STARTED, {"n": 1})
    assert out.delivered and out.attempts == 2 and out.status == 200
    assert [ok for _, _, ok in rec.seen] == [True, True]
    assert rec.seen[0][0] == rec.seen[1][0]  # the same body, signed afresh
    assert rec.seen[0][1][DELIVERY_HEADER] == rec.seen[1][1][DELIVERY_HEADER]


async def test_a_client_error_is_final(receiver: Start) -> None:
    rec = await receiver([400])
    async with WebhookSender(retry=FAST) as sender:
        out = await sender.send(rec.url, Secret(SECRET), FAILOVER_STARTED, {})
    assert not out.delivered and out.attempts == 1 and (out.status, out.error) == (400, "HTTP 400")


async def test_a_wrong_secret_is_refused_by_the_receiver(receiver: Start) -> None:
    rec = await receiver([200])
    async with WebhookSender(retry=FAST) as sender:
        out = await sender.send(rec.url, Secret("not-the-receivers-secret"), FAILOVER_STARTED, {})
    assert not out.delivered and out.status == 401 and rec.seen[0][2] is False


async def test_a_down_receiver_gives_up_in_bounded_time(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sock = _free_socket()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/hook?token=receiver-token"
    t0 = time.monotonic()
    async with WebhookSender(retry=FAST) as sender:
        out = await sender.send(url, Secret(SECRET), FAILOVER_STARTED, {})
    assert not out.delivered and out.attempts == 4 and out.status is None
    assert out.error and "ClientConnectorError" in out.error and "receiver-token" not in out.error
    assert time.monotonic() - t0 < 3.0
    assert SECRET not in caplog.text and "receiver-token" not in ours(caplog)


async def test_a_hanging_receiver_is_cut_off_by_the_deadline(receiver: Start) -> None:
    rec = await receiver([200], delay=5.0)
    policy = RetryPolicy(attempts=10, first_delay=0.05, max_delay=0.1, attempt_timeout=0.3, deadline=1.0)
    t0 = time.monotonic()
    async with WebhookSender(retry=policy) as sender:
        out = await sender.send(rec.url, Secret(SECRET), FAILOVER_STARTED, {})
    took = time.monotonic() - t0
    assert not out.delivered and 2 <= out.attempts < 10 and took < 1.6, (out, took)
    assert out.error and ("deadline" in out.error or "no answer" in out.error)


async def test_retry_after_is_honoured_within_the_policy() -> None:
    naps: list[float] = []

    async def nap(seconds: float) -> None:
        naps.append(seconds)

    calls = iter([(429, 0.15), (503, None), (200, None)])

    class Scripted(WebhookSender):
        async def _attempt(self, url: str, secret: Secret, event: str, delivery: str, body: bytes,
                           timeout: float) -> tuple[int, float | None]:
            return next(calls)

    policy = RetryPolicy(attempts=5, first_delay=0.01, max_delay=0.2, deadline=5.0)
    out = await Scripted(retry=policy, sleep=nap, jitter=lambda: 1.0).send("http://x/h", Secret(SECRET), "e", {})
    assert out.delivered and out.attempts == 3 and naps == [0.15, 0.02]


async def test_unserialisable_payload_and_bugs_do_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    async with WebhookSender() as sender:
        out = await sender.send("http://127.0.0.1:9/h", Secret(SECRET), "e", {"x": {(1, 2): "tuple key"}})
    assert not out.delivered and out.attempts == 0 and "not JSON" in (out.error or "")

    class Broken(WebhookSender):
        async def _attempt(self, url: str, secret: Secret, event: str, delivery: str, body: bytes,
                           timeout: float) -> tuple[int, float | None]:
            raise RuntimeError("boom " + SECRET)

    out = await Broken(retry=FAST).send("http://x/h", Secret(SECRET), "e", {})
    assert not out.delivered and out.error == "internal error: RuntimeError" and SECRET not in repr(out)
    assert "RuntimeError: boom ***" in caplog.text and SECRET not in caplog.text


def test_verify_signature_rejects_tampering_old_timestamps_and_missing_headers() -> None:
    body = b'{"event":"x"}'
    now = 1_800_000_000
    headers = {TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign(SECRET, now, body)}
    assert verify_signature(SECRET, body, headers, now=now)
    assert verify_signature(Secret(SECRET), body, {k.lower(): v for k, v in headers.items()}, now=now + 299)
    assert not verify_signature(SECRET, body + b" ", headers, now=now)
    assert not verify_signature("another-secret", body, headers, now=now)
    assert not verify_signature(SECRET, body, headers, now=now + 301)
    assert not verify_signature(SECRET, body, {SIGNATURE_HEADER: headers[SIGNATURE_HEADER]}, now=now)
    assert not verify_signature(SECRET, body, {**headers, TIMESTAMP_HEADER: "-5"}, now=now)
    # The timestamp is part of what is signed: moving it breaks the signature.
    moved = {**headers, TIMESTAMP_HEADER: str(now + 10)}
    assert not verify_signature(SECRET, body, moved, now=now + 10)
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"


def test_redact_drops_credentials_query_and_fragment() -> None:
    assert redact("https://u:p@hooks.example:8443/a/b?token=t#f") == "https://hooks.example:8443/a/b"
    assert redact("http://[::1]:80/h?x") == "http://[::1]:80/h"
    assert redact("http://h:99999/") == "<invalid URL>"


def test_retry_policy_bounds() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="deadline"):
        RetryPolicy(deadline=0)
