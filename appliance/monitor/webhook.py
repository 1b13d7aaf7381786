"""Signed webhooks of failover domains: on failure, failover start and failover end.

**Request.** ``POST`` to the domain's URL, redirects not followed (a redirect could hand
the signed body to someone else). The body is UTF-8 JSON with sorted keys::

    {"createdAt": "2026-11-24T12:00:00+00:00", "data": {...}, "event": "failover.started",
     "id": "<delivery id>"}

Headers:

- ``Content-Type: application/json``
- ``X-Anvil-Event``: the event name (also in the body)
- ``X-Anvil-Delivery``: the delivery id, the same on every retry of one delivery, so a
  receiver can drop duplicates
- ``X-Anvil-Timestamp``: Unix time in whole seconds when *this attempt* was sent
- ``X-Anvil-Signature``: ``sha256=`` + lowercase hex of
  ``HMAC-SHA256(key = secret as UTF-8, message = timestamp + "." + raw body)``

The timestamp is signed with the body, so a captured request cannot be replayed later
under a fresh timestamp. A receiver recomputes the HMAC over the raw bytes it received
(before parsing the JSON), compares in constant time and rejects timestamps too far
from its own clock (:func:`verify_signature`, 5 minutes by default).

**Delivery.** A 2xx answer delivers. Connection errors, timeouts and 408, 425, 429 and
5xx answers are retried with exponential backoff and jitter, honouring a numeric
``Retry-After``; any other answer is final. Everything stays within the retry policy's
total deadline. :meth:`WebhookSender.send` never raises (only cancellation propagates):
it returns an :class:`Outcome`. Neither the secret nor the URL's query string (which may
carry a receiver's token) is ever logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from appliance.drivers.protocols import Secret

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Anvil-Signature"
TIMESTAMP_HEADER = "X-Anvil-Timestamp"
EVENT_HEADER = "X-Anvil-Event"
DELIVERY_HEADER = "X-Anvil-Delivery"
TOLERANCE = 300.0

# The events a failover domain sends.
FAILURE_DETECTED = "failure.detected"
FAILOVER_STARTED = "failover.started"
FAILOVER_FINISHED = "failover.finished"
BIOS_DRIFT = "bios.drift"   # a running blade's BIOS no longer holds its profile's settings

_RETRY_STATUS = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5              # at most, including the first
    first_delay: float = 0.5       # seconds before the first retry; doubles each time
    max_delay: float = 8.0
    attempt_timeout: float = 5.0   # one request, connect to last byte
    deadline: float = 30.0         # everything, retries and waits included

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts: {self.attempts} is below 1")
        for name in ("first_delay", "max_delay", "attempt_timeout", "deadline"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive")


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    delivery: str
    attempts: int
    status: int | None             # the last HTTP status, if any answer came
    error: str | None              # why it was not delivered
    elapsed: float                 # seconds


def _key(secret: Secret | str | bytes) -> bytes:
    if isinstance(secret, Secret):
        return secret.reveal().encode()
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: Secret | str | bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Anvil-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(_key(secret), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lower), None)


def verify_signature(secret: Secret | str | bytes, body: bytes, headers: Mapping[str, str], *,
                     now: float | None = None, tolerance: float = TOLERANCE) -> bool:
    """True when ``headers`` carry a valid signature of the raw ``body`` with ``secret``,
    made within ``tolerance`` seconds of ``now`` (default: this machine's clock)."""
    signature = _header(headers, SIGNATURE_HEADER)
    stamp = _header(headers, TIMESTAMP_HEADER)
    if not signature or not stamp or not stamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance:
        return False
    return hmac.compare_digest(signature.encode(), sign(secret, stamp, body).encode())


def redact(url: str) -> str:
    """The URL without credentials, query or fragment: what logs and errors may show."""
    try:
        p = urlsplit(url)
        host = p.hostname or ""
        port = f":{p.port}" if p.port else ""
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{p.scheme}://{host}{port}{p.path}"


def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
    value = resp.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


class WebhookSender:
    """Sends signed webhooks. Give it the application's ``ClientSession``, or let it make
    its own (closed by :meth:`aclose` or ``async with``). ``clock`` (Unix time, for the
    signed timestamp), ``sleep`` and ``jitter`` are injectable for tests."""

    def __init__(self, session: aiohttp.ClientSession | None = None, *, retry: RetryPolicy | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 jitter: Callable[[], float] = random.random) -> None:
        self._session = session
        self._owns_session = session is None
        self._retry = retry or RetryPolicy()
        self._clock, self._sleep, self._jitter = clock, sleep, jitter

    async def __aenter__(self) -> WebhookSender:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    @staticmethod
    def body(event: str, data: Mapping[str, Any], *, delivery: str, created_at: float) -> bytes:
        envelope = {"id": delivery, "event": event, "data": dict(data),
                    "createdAt": datetime.fromtimestamp(created_at, UTC).isoformat()}
        return json.dumps(envelope, sort_keys=True, separators=(",", ":"), default=str).encode()

    async def send(self, url: str, secret: Secret, event: str, data: Mapping[str, Any], *,
                   delivery: str | None = None) -> Outcome:
        """Deliver one event; see the module docstring for the retry rules. Never raises."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        delivery = delivery or str(uuid.uuid4())
        shown = redact(url)
        attempts, status, error = 0, None, None
        try:
            body = self.body(event, data, delivery=delivery, created_at=self._clock())
        except (TypeError, ValueError) as exc:
            return Outcome(False, delivery, 0, None, f"the payload is not JSON: {exc}", 0.0)
        policy = self._retry
        deadline = started + policy.deadline
        while attempts < policy.attempts:
            remaining = deadline - loop.time()
            if remaining <= 0:
                error = f"deadline of {policy.deadline:g} s passed ({error})" if error else "deadline passed"
                break
            attempts += 1
            wait: float | None = None
            try:
                code, wait = await self._attempt(url, secret, event, delivery, body,
                                                 min(policy.attempt_timeout, remaining))
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                status, error = None, f"no answer within {min(policy.attempt_timeout, remaining):g} s"
            except aiohttp.ClientError as exc:
                status, error = None, _describe(exc, url, shown)
            except Exception as exc:  # never into the caller: a sender bug must not stop a failover
                trace = "".join(traceback.format_exception(exc)).replace(url, shown)
                if secret.reveal():
                    trace = trace.replace(secret.reveal(), "***")
                log.error("webhook %s to %s: unexpected error\n%s", event, shown, trace)
                return Outcome(False, delivery, attempts, None, f"internal error: {exc.__class__.__name__}",
                               loop.time() - started)
            else:
                status = code
                if 200 <= code < 300:
                    log.info("webhook %s delivered to %s (attempt %d, HTTP %d)", event, shown, attempts, code,
                             extra={"delivery": delivery})
                    return Outcome(True, delivery, attempts, code, None, loop.time() - started)
                error = f"HTTP {code}"
                if not (code in _RETRY_STATUS or code >= 500):
                    break
            if attempts >= policy.attempts:
                break
            delay = min(policy.max_delay, policy.first_delay * 2 ** (attempts - 1)) * (0.5 + self._jitter() / 2)
            if wait is not None:
                delay = min(max(wait, delay), policy.max_delay)
            if loop.time() + delay >= deadline:
                error = f"{error}; the next retry would pass the {policy.deadline:g} s deadline"
                break
            log.debug("webhook %s to %s: %s; retry in %.2f s", event, shown, error, delay)
            await self._sleep(delay)
        log.warning("webhook %s to %s not delivered after %d attempt(s): %s", event, shown, attempts, error,
                    extra={"delivery": delivery})
        return Outcome(False, delivery, attempts, status, error, loop.time() - started)

    async def _attempt(self, url: str, secret: Secret, event: str, delivery: str, body: bytes,
                       timeout: float) -> tuple[int, float | None]:
        stamp = int(self._clock())
        headers = {"Content-Type": "application/json", EVENT_HEADER: event, DELIVERY_HEADER: delivery,
                   TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(secret, stamp, body)}
        async with asyncio.timeout(timeout), self._client().post(
                url, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            await resp.read()  # drain, so the connection can be reused
            return resp.status, _retry_after(resp)


def _describe(exc: BaseException, url: str, shown: str) -> str:
    """An error's text, with the full URL (and any token in its query) replaced."""
    text = str(exc).replace(url, shown) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:300]
