"""BMC event subscriptions (Redfish EventService) and the route their events arrive on.

Polling every 30 s finds a dead blade in about ``fail_after`` times 30 s; a BMC that pushes
events lets the monitor look at once. The monitor never acts on an event's content
(anyone who learns the URL could post one): an event only makes it poll the blades the
event names right away, and the usual detector decides from those polls.

- One subscription per event service (:class:`EventSource` endpoint): a chassis manager
  speaks for all of its blades, so subscribing per blade would fan every event out N times.
- The BMC authenticates each event with a bearer token given in the subscription's
  ``HttpHeaders`` (write-only in Redfish); the store keeps only its SHA-256.
- Each monitor start replaces the subscriptions it finds (delete, subscribe anew with a
  fresh token), and so does every ``renew_after`` seconds: a BMC that was reset has lost
  its subscriptions without telling anyone, and the old token becomes void.
- Events arrive at ``POST /events/redfish/{sid}`` beside the API, not under ``/api/v1``:
  BMCs cannot carry a user's token, only the subscription's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import delete, select, update

from appliance import safejson
from appliance.api.errors import problem
from appliance.drivers.errors import DriverError
from appliance.drivers.protocols import Bmc, EventDriver
from appliance.engine.model import HardwarePort
from appliance.errors import AnvilError, ValidationError
from appliance.store import Store
from appliance.store.tables import BmcEventSubscriptionRow

log = logging.getLogger(__name__)

EVENT_ROUTE = "/events/redfish/{sid}"
MAX_EVENT_BYTES = 256 * 1024
MAX_ORIGINS = 256            # OriginOfCondition values looked at per POST


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(slots=True)
class _Member:
    blade: str
    resource: str


@dataclass(slots=True)
class EventSubscriptions:
    """Keeps one subscription on every event service behind the inventory's blades."""

    store: Store
    hw: HardwarePort
    base_url: str                    # where BMCs reach this appliance (scheme://host:port)
    concurrency: int = 16
    renew_after: float = 600.0
    clock: Callable[[], float] = time.monotonic
    members: dict[str, list[_Member]] = field(default_factory=dict)   # endpoint → its blades
    ready: dict[str, float] = field(default_factory=dict)  # endpoint → when this process subscribed
    unsupported: set[str] = field(default_factory=set)    # endpoints without an event service
    failing: dict[str, str] = field(default_factory=dict)  # endpoint → last error, logged once

    async def refresh(self, blades: Iterable[str]) -> None:
        """Group ``blades`` by event service and subscribe where this process has not yet."""
        groups: dict[str, list[_Member]] = {}
        first: dict[str, tuple[EventDriver, Bmc]] = {}
        for blade in blades:
            try:
                driver, bmc = self.hw.bmc(blade)
            except AnvilError:
                continue
            if not isinstance(driver, EventDriver):
                continue
            source = driver.event_source(bmc)
            groups.setdefault(source.endpoint, []).append(_Member(blade, source.resource.rstrip("/")))
            first.setdefault(source.endpoint, (driver, bmc))
        self.members = groups
        now = self.clock()
        todo = [e for e in groups if e not in self.unsupported
                and (e not in self.ready or now - self.ready[e] >= self.renew_after)]
        if not todo:
            return
        gate = asyncio.Semaphore(self.concurrency)

        async def one(endpoint: str) -> None:
            async with gate:
                await self._subscribe(endpoint, *first[endpoint])

        await asyncio.gather(*(one(e) for e in todo))

    async def _subscribe(self, endpoint: str, driver: EventDriver, bmc: Bmc) -> None:
        old = await asyncio.to_thread(self._row, endpoint)
        if old is not None and old[1]:
            try:
                await driver.unsubscribe_events(bmc, old[1])
            except DriverError as exc:   # gone with a BMC reset, or the BMC is down: subscribe anyway
                log.info("could not delete the old event subscription on %s: %s", endpoint, exc)
        sid = await asyncio.to_thread(self._reserve, endpoint)
        token = secrets.token_urlsafe(32)
        destination = f"{self.base_url}{EVENT_ROUTE.format(sid=sid)}"
        try:
            uri = await driver.subscribe_events(bmc, destination, f"anvil {endpoint}",
                                                {"Authorization": f"Bearer {token}"})
        except DriverError as exc:
            await asyncio.to_thread(self._forget, sid)
            self.ready.pop(endpoint, None)
            if self.failing.get(endpoint) != str(exc):
                log.warning("cannot subscribe to the events of %s (polling only, retried each pass): %s",
                            endpoint, exc)
            self.failing[endpoint] = str(exc)
            return
        if uri is None:
            await asyncio.to_thread(self._forget, sid)
            self.ready.pop(endpoint, None)
            self.unsupported.add(endpoint)
            log.info("%s has no event service: its blades are polled only", endpoint)
            return
        await asyncio.to_thread(self._confirm, sid, uri, destination, _digest(token))
        self.failing.pop(endpoint, None)
        self.ready[endpoint] = self.clock()
        log.info("subscribed to the events of %s (%d blades)", endpoint, len(self.members.get(endpoint, ())))

    # ---- store --------------------------------------------------------------------------

    def _row(self, endpoint: str) -> tuple[int, str] | None:
        with self.store.read() as s:
            row = s.execute(select(BmcEventSubscriptionRow.id, BmcEventSubscriptionRow.uri)
                            .where(BmcEventSubscriptionRow.endpoint == endpoint)).first()
        return None if row is None else (int(row.id), str(row.uri))

    def _reserve(self, endpoint: str) -> int:
        """A fresh row (new id, so a new destination URL) for ``endpoint``; no token yet."""
        with self.store.write() as s:
            s.execute(delete(BmcEventSubscriptionRow).where(BmcEventSubscriptionRow.endpoint == endpoint))
            row = BmcEventSubscriptionRow(endpoint=endpoint, uri="", destination="", token_hash="")
            s.add(row)
            s.flush()
            return int(row.id)

    def _confirm(self, sid: int, uri: str, destination: str, token_hash: str) -> None:
        with self.store.write() as s:
            s.execute(update(BmcEventSubscriptionRow).where(BmcEventSubscriptionRow.id == sid)
                      .values(uri=uri[:1024], destination=destination, token_hash=token_hash))

    def _forget(self, sid: int) -> None:
        with self.store.write() as s:
            s.execute(delete(BmcEventSubscriptionRow).where(BmcEventSubscriptionRow.id == sid))

    def authenticate(self, sid: str, token: str) -> str | None:
        """The endpoint of subscription ``sid`` when ``token`` is its token; else None."""
        if not sid.isdigit() or not token or len(sid) > 18:
            return None
        # Read first: a stream of forged events must not take the store's writer lock.
        with self.store.read() as s:
            row = s.get(BmcEventSubscriptionRow, int(sid))
            if row is None or not row.token_hash or not hmac.compare_digest(row.token_hash, _digest(token)):
                return None
            endpoint = str(row.endpoint)
        with self.store.write() as s:
            s.execute(update(BmcEventSubscriptionRow).where(BmcEventSubscriptionRow.id == int(sid))
                      .values(last_event_at=datetime.now(UTC)))
        return endpoint

    def blades_for(self, endpoint: str, origins: Iterable[str]) -> list[str]:
        """The blades an event from ``endpoint`` is about: those whose resource an origin lies
        under, or every blade of the endpoint when no origin names one of them."""
        members = self.members.get(endpoint, [])
        named = []
        for origin in origins:
            origin = origin.rstrip("/")
            named += [m.blade for m in members if origin == m.resource or origin.startswith(m.resource + "/")]
        return sorted(set(named)) if named else [m.blade for m in members]


def origins_of(document: Any) -> list[str]:
    """The ``OriginOfCondition`` paths of a Redfish Event document; ValueError names what is wrong."""
    if not isinstance(document, dict):
        raise ValueError("the body is not a JSON object")
    events = document.get("Events")
    if not isinstance(events, list):
        raise ValueError("'Events' is missing or not a list")
    out = []
    for i, event in enumerate(events[:MAX_ORIGINS]):
        if not isinstance(event, dict):
            raise ValueError(f"Events[{i}] is not an object")
        origin = event.get("OriginOfCondition")
        if isinstance(origin, dict):
            origin = origin.get("@odata.id")
        if isinstance(origin, str) and origin.startswith("/"):
            out.append(origin)
    return out


def setup_event_route(app: web.Application, subscriptions: EventSubscriptions,
                      on_event: Callable[[str, list[str]], object]) -> None:
    """Receive events at :data:`EVENT_ROUTE`; ``on_event(endpoint, origins)`` runs on the loop."""

    async def receive(request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        endpoint = None
        if scheme.lower() == "bearer":
            endpoint = await asyncio.to_thread(subscriptions.authenticate, request.match_info["sid"], token.strip())
        if endpoint is None:
            return problem(401, "Unauthorized", "unknown event subscription, or not its token")
        if request.content_length is not None and request.content_length > MAX_EVENT_BYTES:
            return problem(413, "Payload Too Large", f"an event body is at most {MAX_EVENT_BYTES} bytes")
        raw = await request.content.read(MAX_EVENT_BYTES + 1)
        if len(raw) > MAX_EVENT_BYTES:
            return problem(413, "Payload Too Large", f"an event body is at most {MAX_EVENT_BYTES} bytes")
        try:
            origins = origins_of(safejson.loads(raw or b"null"))
        except ValidationError as exc:
            return problem(400, "Bad Request", f"not a Redfish event: {exc}")
        except ValueError as exc:
            return problem(400, "Bad Request", f"not a Redfish event: {exc}")
        on_event(endpoint, origins)
        return web.Response(status=204)

    app.router.add_post(EVENT_ROUTE, receive)
