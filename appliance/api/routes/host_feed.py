"""What a host pool tells its VM manager: the event feed and the webhooks.

``GET /host-pools/{name}/events`` answers JSON (``?after=CURSOR&wait=SECONDS``: a long poll
that returns as soon as there is an event after the cursor, or empty after ``wait``) or,
with ``Accept: text/event-stream``, server-sent events (``id:`` is the cursor, so a client
that reconnects with ``Last-Event-ID`` resumes where it stopped). A VM manager that was
down reads from its last cursor and misses no host. The stream ends (``event: end``) when
the caller's credential is no longer valid, or after :data:`STREAM_MAX` seconds (reconnect).

Webhooks: ``/host-pools/{name}/webhooks`` (the secret is write-only) and each one's
delivery log (appliance.services.host_webhooks, appliance.engine.host_delivery).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp import web

from appliance.api.auth import still_authorized
from appliance.api.keys import SETTINGS, STORE
from appliance.api.schemas import INT, NINT, NSTR, obj, page_of
from appliance.api.spec import NAME, STR, Op, Param, body, nullable, query, scope_of
from appliance.domain.hostpool import HOST_EVENTS
from appliance.drivers.protocols import Secret
from appliance.errors import Issue, ValidationError
from appliance.secrets import SecretBox
from appliance.services import scope as lookup
from appliance.services.host_events import events_after, feed_item
from appliance.services.host_webhooks import HostWebhookService
from appliance.store import Store

POLL = 0.25
KEEPALIVE = 15.0
RECHECK = 5.0
STREAM_MAX = 3600.0
MAX_WAIT = 60
_ID = re.compile(r"\d{1,9}")


def _tenant(request: web.Request) -> str | None:
    got = query(request, "tenant")
    return str(got) if got is not None else None


def _pool_id(request: web.Request) -> int:
    store = request.app[STORE]
    with store.read() as s:
        return lookup.host_pool_row(s, scope_of(request), request.match_info["name"], tenant=_tenant(request)).id


def _read(store: Store, pool_id: int, after: int, limit: int) -> list[dict[str, Any]]:
    with store.read() as s:
        return [feed_item(e) for e in events_after(s, pool_id, after, limit)]


def _after(request: web.Request) -> int:
    last = request.headers.get("Last-Event-ID", "")
    if last:
        if not _ID.fullmatch(last):
            raise ValidationError([Issue("header.Last-Event-ID", f"{last[:40]!r} is not a cursor")])
        return int(last)
    return int(query(request, "after") or 0)


async def events(request: web.Request) -> web.StreamResponse:
    pool_id = await asyncio.to_thread(_pool_id, request)
    after = _after(request)
    limit = int(query(request, "limit") or 500)
    store = request.app[STORE]
    if "text/event-stream" in request.headers.get("Accept", ""):
        return await _stream(request, store, pool_id, after)
    wait = float(query(request, "wait") or 0)
    loop = asyncio.get_running_loop()
    until = loop.time() + wait
    for _ in range(int(wait / POLL) + 2):
        items = await asyncio.to_thread(_read, store, pool_id, after, limit)
        if items or loop.time() >= until:
            break
        await asyncio.sleep(min(POLL, max(0.0, until - loop.time())))
    cursor = items[-1]["cursor"] if items else after
    return web.json_response({"items": items, "cursor": cursor, "more": len(items) >= limit})


async def _stream(request: web.Request, store: Store, pool_id: int, after: int) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    started = last_sent = checked = loop.time()
    await resp.write(b"retry: 1000\n\n")
    for _ in range(int(STREAM_MAX / POLL) + 1):
        now = loop.time()
        if now - checked >= RECHECK:
            checked = now
            if not await still_authorized(request):
                await resp.write(b'event: end\ndata: {"reason": "unauthorized"}\n\n')
                break
        for item in await asyncio.to_thread(_read, store, pool_id, after, 500):
            await resp.write(f"id: {item['cursor']}\nevent: {item['event']}\ndata: {json.dumps(item)}\n\n".encode())
            after, last_sent = item["cursor"], loop.time()
        if loop.time() - started >= STREAM_MAX:
            await resp.write(b'event: end\ndata: {"reason": "reconnect with Last-Event-ID"}\n\n')
            break
        if loop.time() - last_sent > KEEPALIVE:
            await resp.write(b": keep-alive\n\n")
            last_sent = loop.time()
        await asyncio.sleep(POLL)
    await resp.write_eof()
    return resp


# -- webhooks -----------------------------------------------------------------------------------

def _hooks(request: web.Request, *, secrets: bool = False) -> HostWebhookService:
    box = SecretBox(request.app[SETTINGS].secrets_key_path) if secrets else None
    return HostWebhookService(request.app[STORE], box)


def _webhook_id(request: web.Request) -> int:
    # Path parameters are not checked by the route table: a number beyond the database's would reach it.
    raw = request.match_info["id"]
    if not _ID.fullmatch(raw) or int(raw) < 1:
        raise ValidationError([Issue("path.id", f"{raw[:40]!r} is not a webhook number")])
    return int(raw)


async def list_webhooks(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(_hooks(request).list, request.match_info["name"], tenant=_tenant(request),
                                    scope=scope_of(request))
    return web.json_response({"items": [i.public() for i in infos], "total": len(infos)})


async def add_webhook(request: web.Request) -> web.Response:
    b = body(request)
    try:
        info = await asyncio.to_thread(_hooks(request, secrets=True).add, request.match_info["name"], b["url"],
                                       Secret(b["secret"]), after=b.get("after"), tenant=_tenant(request),
                                       scope=scope_of(request))
    except ValidationError as exc:
        raise ValidationError([Issue(f"body.{i.path}", i.reason) for i in exc.issues]) from None
    return web.json_response(info.public(), status=201)


async def remove_webhook(request: web.Request) -> web.Response:
    webhook = _webhook_id(request)
    await asyncio.to_thread(_hooks(request).remove, request.match_info["name"], webhook, tenant=_tenant(request),
                            scope=scope_of(request))
    return web.Response(status=204)


async def deliveries(request: web.Request) -> web.Response:
    webhook = _webhook_id(request)
    items = await asyncio.to_thread(_hooks(request).deliveries, request.match_info["name"], webhook,
                                    limit=query(request, "limit") or 100, tenant=_tenant(request),
                                    scope=scope_of(request))
    return web.json_response({"items": items, "total": len(items)})


# -- the route table ----------------------------------------------------------------------------

HOST = {"type": "object", "description": "the host as it was at the event (as GET .../hosts/{host})"}
EVENT = obj(["cursor", "previous", "event", "at", "pool", "host"], cursor=INT,
            previous={**INT, "description": "the pool's event before this one (0: none): a receiver whose last "
                                            "cursor differs missed events, and reads the feed from it"},
            event={"enum": list(HOST_EVENTS)}, at=STR, tenant=STR, pool=STR, host=HOST, failover=NINT, reason=NSTR,
            replacement=NSTR, profileDeleted={"type": "boolean"})
FEED = obj(["items", "cursor", "more"], items={"type": "array", "items": EVENT},
           cursor={**INT, "description": "pass it as after= (or Last-Event-ID) to read on"},
           more={"type": "boolean", "description": "limit reached: read again at once"})
WEBHOOK = obj(["id", "pool", "url", "cursor", "failures", "delivered", "givenUp"], id=INT, pool=STR, url=STR,
              secret={"enum": ["***"]}, cursor=INT, failures=INT, nextAttemptAt=NSTR, delivered=INT, givenUp=INT,
              createdAt=NSTR)
DELIVERY = obj(["id", "event", "cursor", "delivery", "attempt", "ok"], id=INT, event=STR, cursor=INT, delivery=STR,
               attempt=INT, ok={"type": "boolean"}, status=NINT, error=NSTR, elapsedMs=INT, at=NSTR)
NAMEP = Param("name", NAME, "path", True)
IDP = Param("id", {"type": "integer", "minimum": 1, "maximum": 999999999}, "path", True)
TENANTQ = Param("tenant", {"type": "string", "maxLength": 63}, description="for a caller of no tenant")
OPS = [
    Op("GET", "/host-pools/{name}/events", events, "A pool's events after a cursor: JSON (long poll with wait=) "
       "or server-sent events (Accept: text/event-stream; resumes after Last-Event-ID)", "host-pools",
       params=(NAMEP, TENANTQ, Param("after", {"type": "integer", "minimum": 0, "maximum": 2**53}),
               Param("wait", {"type": "integer", "minimum": 0, "maximum": MAX_WAIT},
                     description="seconds to wait for an event (long poll)"),
               Param("limit", {"type": "integer", "minimum": 1, "maximum": 500})),
       responses={200: ("The events", FEED)}, response_types={200: ("text/event-stream",)}),
    Op("GET", "/host-pools/{name}/webhooks", list_webhooks, "A pool's webhooks and where each is in the feed",
       "host-pools", params=(NAMEP, TENANTQ), responses={200: ("OK", page_of(WEBHOOK))}),
    Op("POST", "/host-pools/{name}/webhooks", add_webhook, "Send a pool's events to a URL, signed with a secret "
       "(HMAC-SHA256, X-Anvil-Signature), in order, retried with back-off", "host-pools", role="operator",
       params=(NAMEP, TENANTQ),
       body={"type": "object", "additionalProperties": False, "required": ["url", "secret"],
             "properties": {"url": {"type": "string", "minLength": 1, "maxLength": 2048},
                            "secret": {"type": "string", "minLength": 16, "maxLength": 512, "writeOnly": True},
                            "after": nullable("integer", minimum=0, maximum=2**53,
                                              description="replay from this cursor (default: new events only)")}},
       responses={201: ("Created", WEBHOOK)}),
    Op("DELETE", "/host-pools/{name}/webhooks/{id}", remove_webhook, "Stop sending a pool's events to a webhook",
       "host-pools", role="operator", params=(NAMEP, IDP, TENANTQ), responses={204: ("Deleted", {})}),
    Op("GET", "/host-pools/{name}/webhooks/{id}/deliveries", deliveries, "A webhook's delivery log, newest first",
       "host-pools", params=(NAMEP, IDP, TENANTQ, Param("limit", {"type": "integer", "minimum": 1, "maximum": 500})),
       responses={200: ("OK", page_of(DELIVERY))}),
]
