"""The region's side of rack controllers: ``/rack/v1/…`` on the API port (HTTPS).

A rack controller (``anvil serve --role boot --region URL --rack-token FILE``, see
appliance.boot.remote) never opens the store: it asks here for what it serves, with its rack
token (``Authorization: Bearer``), and every answer is scoped to the blades cabled to that
rack (``blades.rack_id``). Another rack's blade is answered exactly like a machine that does
not exist (404), and its tokens count for nothing.

* ``POST /rack/v1/heartbeat``    registration and heartbeat: version, networks, boot URL;
* ``GET  /rack/v1/script``       the iPXE script for a MAC/UUID (rendered here: the boot key
                                 that derives boot tokens stays on the region);
* ``POST /rack/v1/callback``     a booted image's callback, with the peer address and the MACs
                                 the rack's own lease file / neighbour table give that address;
* ``POST /rack/v1/beat``         an agent's heartbeat (of one of the rack's blades);
* ``POST /rack/v1/discover``     an unknown machine's facts;
* ``GET  /rack/v1/reservations`` the DHCP reservations of the rack's blades, and the MACs of
                                 other racks' blades (its dnsmasq ignores them);
* ``GET  /rack/v1/images/PATH``  an image file (images are no secret, DESIGN §8).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from appliance import __version__, safejson
from appliance.boot.beats import Beats
from appliance.boot.dhcp import foreign_macs, reservations
from appliance.boot.http import REATTEST_QUIET, accept_callback, callback_facts, resolve_image
from appliance.boot.ipxe import (
    Ask,
    NotServedHere,
    ScriptRenderer,
    TargetFinder,
    default_template_dirs,
    normalize_mac,
    normalize_uuid,
    one_line,
    serve_scripts,
)
from appliance.boot.peers import normalize_ip
from appliance.boot.tokens import BootKey
from appliance.errors import ValidationError
from appliance.services.discovered import MAX_RECORDS, bounded_facts, record
from appliance.services.racks import HEARTBEAT_S, RackIdentity, RackService
from appliance.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
PREFIX = "/rack/v1"
_AGENT_MODES = ("agent", "oneshot")

__all__ = ["PREFIX", "REATTEST_QUIET", "RackApi", "setup_rack_api"]


class RackApi:
    """State of the /rack/v1 routes: the store, the boot key, renderers per rack boot URL."""

    def __init__(self, store: Store, images_dir: Path, key: BootKey, *, template_dirs: Iterable[Path] = ()) -> None:
        self.store = store
        self.images_dir = images_dir
        self.key = key
        self.racks = RackService(store)
        self.template_dirs = [*template_dirs, *default_template_dirs()]
        self.finder = TargetFinder()
        self._beats: dict[int, Beats] = {}     # per rack: a rack's agents beat only for its own blades
        self._renderers: dict[tuple[str, str], ScriptRenderer] = {}

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    def beats(self, rack: int) -> Beats:
        found = self._beats.get(rack)
        if found is None:
            found = self._beats[rack] = Beats.for_rack(self.store, self.run, rack)
        return found

    def forget_beats(self) -> None:
        for beats in self._beats.values():
            beats.forget()

    async def aclose(self) -> None:
        for beats in self._beats.values():
            await beats.aclose()

    def renderer(self, base: str, mode: str) -> ScriptRenderer:
        hit = self._renderers.get((base, mode))
        if hit is None:
            if len(self._renderers) > 64:
                self._renderers.clear()
            hit = self._renderers[(base, mode)] = ScriptRenderer(base, agent_mode=mode, key=self.key,
                                                                 template_dirs=self.template_dirs)
        return hit


RACK_API = web.AppKey("anvil_rack_api", RackApi)


async def _rack(request: web.Request) -> RackIdentity:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    api = request.app[RACK_API]
    rack = await asyncio.to_thread(api.racks.authenticate, token.strip()) if scheme.lower() == "bearer" else None
    if rack is None:
        raise web.HTTPUnauthorized(text="a valid rack token is required\n",
                                   headers={"WWW-Authenticate": 'Bearer realm="anvil-rack"'})
    return rack


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = safejson.loads(await request.read())
    except ValidationError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="a JSON object is required\n")
    return data


def _strings(value: Any, limit: int = 32) -> list[str]:
    return [str(v)[:256] for v in value[:limit]] if isinstance(value, list) else []


async def heartbeat(request: web.Request) -> web.Response:
    rack = await _rack(request)
    body = await _json(request)
    boot_url = str(body.get("bootUrl") or "")[:255]
    if boot_url and not boot_url.startswith(("http://", "https://")):
        raise web.HTTPBadRequest(text="bootUrl: an http:// or https:// URL is required\n")
    try:
        await asyncio.to_thread(request.app[RACK_API].racks.heartbeat, rack, version=str(body.get("version") or "?"),
                                networks=_strings(body.get("networks")), boot_url=boot_url or None)
    except ValidationError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    return web.json_response({"rack": rack.name, "heartbeatInterval": HEARTBEAT_S, "regionVersion": __version__})


async def script(request: web.Request) -> web.Response:
    rack = await _rack(request)
    api = request.app[RACK_API]
    base = request.query.get("base", "")
    mode = request.query.get("mode", "agent")
    try:
        one_line(base)
    except ValueError:
        base = ""
    if not base.startswith(("http://", "https://")) or mode not in _AGENT_MODES:
        raise web.HTTPBadRequest(text="base (the rack's boot URL) and mode (agent|oneshot) are required\n")
    mac, uuid = request.query.get("mac", ""), request.query.get("uuid")
    if not normalize_mac(mac) and not normalize_uuid(uuid):
        raise web.HTTPBadRequest(text="a valid mac or uuid is required\n")
    ask = Ask(api.renderer(base.rstrip("/"), mode), mac, uuid)
    result = (await asyncio.to_thread(serve_scripts, api.store, api.finder, [ask], rack=rack.id))[0]
    if isinstance(result, NotServedHere):
        raise web.HTTPNotFound(text="no such machine\n")
    if isinstance(result, ValueError):
        log.warning("rack %s: cannot render an iPXE script for %s: %s", rack.name, mac, result)
        raise web.HTTPUnprocessableEntity(text=f"{result}\n")
    return web.Response(text=result.text, content_type="text/plain", headers={"X-Anvil-Template": result.template})


async def callback(request: web.Request) -> web.Response:
    rack = await _rack(request)
    api = request.app[RACK_API]
    body = await _json(request)
    params = body.get("params") if isinstance(body.get("params"), dict) else {}
    assert isinstance(params, dict)
    peer = str(body.get("peer") or "")[:64]
    seen = {m for m in (normalize_mac(x) for x in _strings(body.get("peerMacs"))) if m}

    def match(peer_ip: str, macs: set[str], reserved: set[str]) -> str | None:
        # The rack saw the peer on its own network: its lease file or neighbour table gave these MACs.
        ip = normalize_ip(peer_ip)
        if ip is None:
            return None
        if ip in {normalize_ip(r.split("/", 1)[0]) for r in reserved}:
            return "reservation"
        wanted = {m for m in (normalize_mac(x) for x in macs) if m}
        return "rack-neighbour" if seen & wanted else None

    verdict = await asyncio.to_thread(partial(
        accept_callback, api.store, token=str(body.get("token") or ""), peer=peer,
        facts=callback_facts({str(k): str(v) for k, v in params.items()}), match=match, rack=rack.id))
    if verdict.secret is None:
        log.warning("rack %s: boot callback from %s refused: %s", rack.name, peer, verdict.why)
        raise web.HTTPForbidden(text="invalid or used boot token\n")
    api.forget_beats()
    return web.json_response({"secret": verdict.secret})


async def beat(request: web.Request) -> web.Response:
    rack = await _rack(request)
    body = await _json(request)
    if not await request.app[RACK_API].beats(rack.id).beat(str(body.get("secret") or "")):
        raise web.HTTPForbidden(text="invalid heartbeat secret\n")
    return web.Response(status=204)


async def discover(request: web.Request) -> web.Response:
    rack = await _rack(request)
    api = request.app[RACK_API]
    body = await _json(request)
    params = body.get("params") if isinstance(body.get("params"), dict) else {}
    assert isinstance(params, dict)
    params = {str(k): str(v) for k, v in params.items()}
    mac = normalize_mac(params.get("mac", ""))
    if mac is None:
        raise web.HTTPBadRequest(text="a valid mac is required\n")
    peer = f"{str(body.get('peer') or '')[:48]} via rack {rack.name}"

    def store_facts() -> str:
        with api.store.write() as s:
            return record(s, mac, normalize_uuid(params.get("uuid")), peer, bounded_facts(params), cap=MAX_RECORDS)

    return web.json_response({"outcome": await asyncio.to_thread(store_facts)})


async def rack_reservations(request: web.Request) -> web.Response:
    rack = await _rack(request)
    api = request.app[RACK_API]

    def read() -> dict[str, Any]:
        with api.store.read() as s:
            return {"items": [{"macs": list(r.macs), "address": r.address, "hostname": r.hostname}
                              for r in reservations(s, rack=rack.id)],
                    "ignore": foreign_macs(s, rack.id)}

    return web.json_response(await asyncio.to_thread(read))


async def image(request: web.Request) -> web.StreamResponse:
    await _rack(request)
    path = await asyncio.to_thread(resolve_image, request.app[RACK_API].images_dir, request.match_info["path"])
    if path is None:
        raise web.HTTPNotFound(text="not found\n")
    return web.FileResponse(path)


def setup_rack_api(app: web.Application, store: Store, images_dir: Path, key: BootKey, *,
                   template_dirs: Iterable[Path] = ()) -> None:
    api = app[RACK_API] = RackApi(store, images_dir, key, template_dirs=template_dirs)

    async def _close(_app: web.Application) -> None:
        await api.aclose()

    app.on_cleanup.append(_close)
    app.router.add_post(f"{PREFIX}/heartbeat", heartbeat)
    app.router.add_get(f"{PREFIX}/script", script)
    app.router.add_post(f"{PREFIX}/callback", callback)
    app.router.add_post(f"{PREFIX}/beat", beat)
    app.router.add_post(f"{PREFIX}/discover", discover)
    app.router.add_get(f"{PREFIX}/reservations", rack_reservations)
    app.router.add_get(f"{PREFIX}/images/{{path:.+}}", image)
