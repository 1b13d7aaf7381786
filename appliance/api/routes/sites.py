"""Sites: paired peer appliances (admin only), and the routes a paired site's DR token calls.

``POST /api/v1/site-link/pairing`` is the one unauthenticated route here: the peer presents the
one-time code this site printed (appliance.sites.service). The DR token a pairing issues
calls only routes whose role is ``site``; every other route answers it 403.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from appliance.api.keys import SETTINGS, STORE
from appliance.api.schemas import obj, page_of
from appliance.api.spec import NAME, STR, Op, Param, body, caller
from appliance.config import Settings
from appliance.errors import Conflict
from appliance.secrets import SecretBox
from appliance.sites import replication
from appliance.sites.kinds import default_registry
from appliance.sites.peer import PeerRefused, PeerUnreachable
from appliance.sites.service import PAIR_PATH, SiteInfo, SiteService

OBJ = {"type": "object"}
SITE = obj(["name", "url", "fingerprint", "state"], name=STR, url=STR, fingerprint=STR, state=STR,
           push={"type": "boolean"}, outbound=OBJ, inbound=OBJ)


def own_cert(settings: Settings) -> Path:
    return settings.api.tls_cert or settings.state_dir / "tls" / "cert.pem"


def _service(request: web.Request) -> SiteService:
    return SiteService(request.app[STORE], SecretBox(request.app[SETTINGS].secrets_key_path))


async def probe(svc: SiteService, info: SiteInfo) -> dict[str, object]:
    """Whether the peer answers now, and what it says it has applied from us."""
    peer = svc.peer(info.name, timeout=3.0)
    started = datetime.now(UTC)
    try:
        got = await peer.get(replication.STATUS_PATH)
        return {"reachable": True, "rttMs": round((datetime.now(UTC) - started).total_seconds() * 1000, 1),
                "remote": got}
    except (PeerUnreachable, PeerRefused) as exc:
        return {"reachable": False, "error": str(exc)}
    finally:
        await peer.close()


async def list_sites(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(_service(request).list)
    items = [i.public() for i in infos]
    return web.json_response({"items": items, "total": len(items)})


async def get_site(request: web.Request) -> web.Response:
    svc = await asyncio.to_thread(_service, request)
    info = await asyncio.to_thread(svc.get, request.match_info["name"])
    return web.json_response({**info.public(), "probe": await probe(svc, info)})


async def delete_site(request: web.Request) -> web.Response:
    await asyncio.to_thread(_service(request).unpair, request.match_info["name"])
    return web.Response(status=204)


async def receive(request: web.Request) -> web.Response:
    app = request.app
    box = await asyncio.to_thread(SecretBox, app[SETTINGS].secrets_key_path)
    ack = await asyncio.to_thread(replication.receive, app[STORE], box, default_registry(), caller(request).id,
                                  body(request))
    return web.json_response(ack)


async def status(request: web.Request) -> web.Response:
    svc = await asyncio.to_thread(_service, request)
    info = await asyncio.to_thread(svc.by_token, caller(request).id)
    return web.json_response({"site": await asyncio.to_thread(svc.local_name), **info.public()})


async def pairing(request: web.Request) -> web.Response:
    """Unauthenticated (the code is the credential; app.PUBLIC_PATHS)."""
    settings = request.app[SETTINGS]
    if not settings.api.tls:
        raise Conflict("pairing needs HTTPS: this appliance serves plain HTTP")
    data = body(request)
    try:
        pem = await asyncio.to_thread(own_cert(settings).read_text)
    except FileNotFoundError:
        # Served with --insecure-http (loopback tests): there is no certificate for the peer to pin.
        raise Conflict("pairing needs HTTPS: this appliance serves plain HTTP") from None
    svc = await asyncio.to_thread(_service, request)
    return web.json_response(await asyncio.to_thread(svc.accept, data, pem))


RECORDS = {"type": "object", "required": ["origin", "records"],
           "properties": {"origin": STR, "records": {"type": "array", "items": OBJ, "maxItems": 1000}}}
PAIRING = obj(["code", "name", "url", "certPem", "token", "key"], code=STR, name=NAME, url=STR, certPem=STR,
              token=STR, key={"type": "string", "pattern": "^[0-9a-f]{64}$"})
PAIRED = obj(["name", "token", "certPem"], name=STR, token=STR, certPem=STR)
ACK = obj(["acked", "applied"], acked={"type": "integer"}, applied={"type": "integer"})

OPS = [
    Op("GET", "/sites", list_sites, "List paired sites and the replication to and from each", "sites",
       role="admin", appliance_wide=True, responses={200: ("OK", page_of(SITE))}),
    Op("GET", "/sites/{name}", get_site, "Show a paired site: replication both ways, and whether it answers now",
       "sites", role="admin", appliance_wide=True, params=(Param("name", NAME, "path", True),),
       responses={200: ("OK", SITE)}),
    Op("DELETE", "/sites/{name}", delete_site, "Unpair a site (its DR token here is revoked)", "sites",
       role="admin", appliance_wide=True, params=(Param("name", NAME, "path", True),),
       responses={204: ("Unpaired", {})}),
    Op("POST", "/site-link/replication", receive, "Apply replication records from the calling site (DR token only)",
       "sites", role="site", body=RECORDS, responses={200: ("Applied, in order", ACK)}),
    Op("GET", "/site-link/status", status,
       "What this site has applied from the calling site, and queued for it (DR token only)", "sites",
       role="site", responses={200: ("OK", SITE)}),
    Op("POST", PAIR_PATH.removeprefix("/api/v1"), pairing,
       "Pair the calling site with this one, presenting the one-time code this site printed", "sites",
       public=True, body=PAIRING, responses={200: ("Paired: this site's name, certificate and DR token", PAIRED)}),
]
