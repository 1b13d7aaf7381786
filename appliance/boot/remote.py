"""A rack controller: the boot role fed by the region over HTTPS instead of the store.

``anvil serve --role boot --region URL --rack-token FILE [--region-ca CERT]`` serves boot HTTP
(and TFTP, DHCP when configured) on its rack's provisioning network exactly as the boot role
does, but never opens the store and holds no key beyond its rack token: every script, callback,
heartbeat, discovery post and DHCP reservation goes to the region's ``/rack/v1`` routes
(appliance.boot.region), which answer only for the blades cabled to this rack. Images are
served from the local images folder, and fetched once from the region when missing there.

The region's certificate is pinned: ``--region-ca`` is the one certificate (or CA) trusted, and
the host name is not checked against it (the region's self-signed certificate names the
region's own host names, not the address a rack reaches it at).

Every served script is logged (``rack NAME: script for MAC: …``) and counted in
:attr:`RackLink.served`, so an operator can see which blades a rack controller booted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from appliance import __version__
from appliance.api.hardening import setup_headers
from appliance.boot.dhcp import DhcpSettings, Reservation, interface_ipv4, write_hosts
from appliance.boot.http import (
    RateLimit,
    _params,
    _peer,
    _text,
    base_url_for,
    callback_answer,
    discovery_params,
    discovery_throttled,
    resolve_image,
)
from appliance.boot.ipxe import ScriptRenderer, normalize_mac, normalize_uuid
from appliance.boot.peers import normalize_ip, read_arp, read_leases
from appliance.config import Settings
from appliance.errors import AnvilError
from appliance.services.racks import HEARTBEAT_S

log = logging.getLogger(__name__)
_TIMEOUT = aiohttp.ClientTimeout(total=20, connect=5)
_IMAGE_TIMEOUT = aiohttp.ClientTimeout(total=600, connect=5)
_CACHE = ".region"          # images fetched from the region, under the images folder


class RegionError(AnvilError):
    """The region refused the rack or cannot be reached; the message says which."""


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise RegionError(f"--rack-token {path}: {exc.strerror or exc}") from None
    if not token:
        raise RegionError(f"--rack-token {path}: the file is empty (anvil rack add NAME --token-file {path})")
    return token


def pinned_context(ca: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    if ca is not None:
        ctx.check_hostname = False      # the certificate itself is pinned: only its key holder passes
    return ctx


class RegionClient:
    """HTTPS to the region's ``/rack/v1`` with the rack token."""

    def __init__(self, url: str, token: str, *, ca: Path | None = None) -> None:
        if not url.startswith(("https://", "http://")):
            raise RegionError(f"--region {url!r}: an https:// URL of the region's API is required")
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._ssl = pinned_context(ca) if self.url.startswith("https://") else None
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=_TIMEOUT,
                                                  connector=aiohttp.TCPConnector(ssl=self._ssl or False, limit=32))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, bytes]:
        """(status, body); RegionError when the region cannot be reached."""
        try:
            async with self._http().request(method, f"{self.url}/rack/v1{path}", **kw) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            raise RegionError(f"region {self.url}: {exc.__class__.__name__}: {str(exc)[:200]}") from None

    async def fetch(self, path: str, dest: Path) -> bool:
        """Download ``/rack/v1/images/PATH`` to ``dest`` (atomically); False when the region has none."""
        try:
            async with self._http().get(f"{self.url}/rack/v1/images/{path}", timeout=_IMAGE_TIMEOUT) as resp:
                if resp.status != 200:
                    return False
                dest.parent.mkdir(parents=True, exist_ok=True)
                part = dest.with_name(f".{dest.name}.part")
                with open(part, "wb") as fh:
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        await asyncio.to_thread(fh.write, chunk)
                part.replace(dest)
                return True
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as exc:
            log.warning("cannot fetch image %s from the region: %s", path, exc)
            return False


@dataclass
class RackLink:
    """This rack controller's side: the region client, its heartbeat, what it served."""

    client: RegionClient
    settings: Settings
    name: str = "?"                               # the rack's name, as the region's heartbeat answer says
    served: dict[str, int] = field(default_factory=dict)    # MAC → scripts served
    discover_limit: RateLimit = field(default_factory=lambda: RateLimit(per_second=1 / 3, burst=20))
    _beats: dict[str, float] = field(default_factory=dict)  # heartbeat secret → when the region last accepted it
    _images: asyncio.Lock = field(default_factory=asyncio.Lock)

    def networks(self) -> list[str]:
        iface = interface_ipv4(self.settings.boot.interface) if self.settings.boot.interface else None
        return [str(iface.network)] if iface is not None else []

    def boot_url(self) -> str:
        boot = self.settings.boot
        return boot.advertise_url or base_url_for(boot.listen) or ""

    async def register(self) -> None:
        """One heartbeat; RegionError when the region refuses the token or cannot be reached."""
        import json

        status, body = await self.client.call("POST", "/heartbeat", json={
            "version": __version__, "networks": self.networks(), "bootUrl": self.boot_url()})
        if status == 401:
            raise RegionError(f"region {self.client.url} refuses this rack token (anvil rack rotate-token NAME "
                              "for a new one)")
        if status != 200:
            raise RegionError(f"region {self.client.url}: heartbeat answered {status}: {body[:200]!r}")
        self.name = str(json.loads(body).get("rack") or "?")

    async def heartbeats(self, interval: float = HEARTBEAT_S) -> None:
        """Heartbeat every ``interval`` s until cancelled; a missed one is logged, never fatal."""
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await self.register()
                if failing:
                    log.info("rack %s: the region answers again", self.name)
                failing = False
            except RegionError as exc:
                if not failing:
                    log.warning("rack %s: heartbeat failed: %s", self.name, exc)
                failing = True

    def peer_macs(self, peer: str) -> list[str]:
        """The MACs this rack's own network gives ``peer``: its dnsmasq leases, its ARP table."""
        ip = normalize_ip(peer)
        if ip is None:
            return []
        macs = {mac for mac, ips in read_leases(self.settings.run_dir / "dnsmasq.leases").items() if ip in ips}
        arp = read_arp().get(ip)
        if arp:
            macs.add(arp)
        return sorted(macs)


RACK_LINK = web.AppKey("anvil_rack_link", RackLink)


def _base(request: web.Request, link: RackLink) -> str:
    return (link.boot_url() or str(request.url.origin())).rstrip("/")


async def ipxe_script(request: web.Request) -> web.Response:
    link = request.app[RACK_LINK]
    mac, uuid = request.query.get("mac", ""), request.query.get("uuid")
    base = _base(request, link)
    if not normalize_mac(mac) and not normalize_uuid(uuid):
        return _text(ScriptRenderer(base).discover(None).text)
    query = {"mac": mac, "base": base, "mode": link.settings.boot.image_agent_mode, **({"uuid": uuid} if uuid else {})}
    try:
        status, body = await link.client.call("GET", "/script", params=query)
    except RegionError as exc:
        log.warning("rack %s: no script for %s: %s", link.name, mac, exc)
        again = f"{base}/boot/ipxe?mac={normalize_mac(mac)}" if normalize_mac(mac) else ""
        return _text("#!ipxe\necho Anvil: the rack controller cannot reach the region; trying again in 10 s\n"
                     "sleep 10\n" + (f"chain {again} || exit\n" if again else "exit\n"))
    if status != 200:
        log.info("rack %s: no script for %s (region: %s)", link.name, mac or uuid, status)
        return _text("#!ipxe\necho Anvil: no boot script for this machine from this rack controller\nexit\n")
    key = normalize_mac(mac) or str(uuid)
    link.served[key] = link.served.get(key, 0) + 1
    text = body.decode(errors="replace")
    said = next((line[5:] for line in text.splitlines() if line.startswith("echo ")), "")
    log.info("rack %s: script for %s: %s", link.name, key, said[:200])
    return _text(text)


async def image(request: web.Request) -> web.StreamResponse:
    link = request.app[RACK_LINK]
    rel = request.match_info["path"]
    images = link.settings.images_dir
    path = await asyncio.to_thread(resolve_image, images, rel)
    if path is None and not rel.startswith(f"{_CACHE}/"):
        path = await asyncio.to_thread(resolve_image, images, f"{_CACHE}/{rel}")
        if path is None:
            async with link._images:     # one download per image, however many blades ask at once
                path = await asyncio.to_thread(resolve_image, images, f"{_CACHE}/{rel}")
                if path is None and await link.client.fetch(rel, images / _CACHE / rel):
                    log.info("rack %s: image %s fetched from the region", link.name, rel)
                    path = await asyncio.to_thread(resolve_image, images, f"{_CACHE}/{rel}")
    if path is None:
        raise web.HTTPNotFound(text="not found")
    return web.FileResponse(path)


async def callback(request: web.Request) -> web.Response:
    link = request.app[RACK_LINK]
    params = await _params(request)
    peer = _peer(request)
    body = {"token": params.get("token", ""), "peer": peer, "peerMacs": await asyncio.to_thread(link.peer_macs, peer),
            "params": {k: v for k, v in params.items() if k != "token"}}
    try:
        status, answer = await link.client.call("POST", "/callback", json=body)
    except RegionError as exc:
        log.warning("rack %s: callback from %s not forwarded: %s", link.name, peer, exc)
        raise web.HTTPServiceUnavailable(text="the region cannot be reached; call back again\n") from None
    if status != 200:
        log.warning("rack %s: callback from %s refused by the region (%s)", link.name, peer, status)
        raise web.HTTPForbidden(text="invalid or used boot token")
    import json

    log.info("rack %s: callback from %s accepted", link.name, peer)
    return _text(callback_answer(str(json.loads(answer)["secret"]), _base(request, link)))


async def heartbeat(request: web.Request) -> web.Response:
    link = request.app[RACK_LINK]
    auth = request.headers.get("Authorization", "")
    secret = auth[7:].strip() if auth.lower().startswith("bearer ") else (await _params(request)).get("secret", "")
    if not secret or len(secret) > 256:
        raise web.HTTPForbidden(text="invalid heartbeat secret")
    try:
        status, _ = await link.client.call("POST", "/beat", json={"secret": secret})
    except RegionError as exc:
        raise web.HTTPServiceUnavailable(text=f"{exc}\n") from None
    if status != 204:
        raise web.HTTPForbidden(text="invalid heartbeat secret")
    return web.Response(status=204)


async def discover(request: web.Request) -> web.Response:
    link = request.app[RACK_LINK]
    peer = _peer(request)
    throttled = discovery_throttled(link.discover_limit, peer)
    if throttled is not None:
        return throttled
    params, mac = await discovery_params(request)
    try:
        status, _ = await link.client.call("POST", "/discover", json={"peer": peer, "params": params})
    except RegionError as exc:
        raise web.HTTPServiceUnavailable(text=f"{exc}\n") from None
    what = "facts recorded" if status == 200 else "facts not recorded"
    return _text(f"#!ipxe\necho Anvil: {what} for {mac}\nexit\n")


def create_rack_app(link: RackLink) -> web.Application:
    """The rack controller's boot HTTP: the /boot routes, each answered through the region."""
    app = web.Application(client_max_size=256 * 1024)
    setup_headers(app)
    app[RACK_LINK] = link
    app.router.add_get("/boot/ipxe", ipxe_script)
    app.router.add_get("/boot/images/{path:.+}", image)
    app.router.add_post("/boot/callback", callback)
    app.router.add_post("/boot/heartbeat", heartbeat)
    app.router.add_post("/boot/discover", discover)
    return app


class RegionReservations:
    """Keeps dnsmasq's hostsfile equal to the region's reservations for this rack's blades."""

    def __init__(self, link: RackLink, settings: DhcpSettings) -> None:
        self.link = link
        self.settings = settings
        self.count = 0

    async def check(self) -> bool:
        import json

        status, body = await self.link.client.call("GET", "/reservations")
        if status != 200:
            raise RegionError(f"reservations: the region answered {status}")
        data = json.loads(body)
        items = [Reservation(tuple(i.get("macs") or ()), str(i["address"]), i.get("hostname"))
                 for i in data["items"]]
        self.count = len(items)
        return await asyncio.to_thread(write_hosts, self.settings, items, [str(m) for m in data.get("ignore") or []])

    async def run(self, on_change: Callable[[], object], *, interval: float = 2.0) -> None:
        while True:
            try:
                if await self.check():
                    log.info("DHCP reservations of rack %s changed (%d now); dnsmasq re-reads them",
                             self.link.name, self.count)
                    on_change()
            except (RegionError, OSError, ValueError, KeyError) as exc:
                log.warning("cannot update the DHCP reservations from the region: %s", exc)
            await asyncio.sleep(interval)


async def cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
