"""The boot HTTP service: iPXE scripts, images, the boot callback and heartbeats.

Plain HTTP on the provisioning network, unauthenticated except by the one-time boot
token (callback) and the heartbeat secret (heartbeat). It serves no secret: nothing from
a BMC, a switch or a CHAP configuration, and a script only carries the asking blade's
own profile.

``setup(app, ...)`` adds the routes to an existing app; ``create_boot_app(settings)``
is the standalone app of the boot role (``anvil serve --role boot``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy import select

from appliance import safejson
from appliance.api.hardening import setup_headers
from appliance.boot.ipxe import (
    Ask,
    Script,
    ScriptRenderer,
    TargetFinder,
    default_template_dirs,
    normalize_mac,
    normalize_uuid,
    serve_scripts,
)
from appliance.boot.tokens import check_heartbeat, spend_boot_token
from appliance.config import Settings
from appliance.errors import ValidationError
from appliance.store import Store, open_store
from appliance.store.tables import BladeNicRow, BladeRow, BootDiscoveryRow, JobEventRow, JobRow, utcnow

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 10
_BATCH = 64      # scripts per group commit: bounds how long one write transaction holds the lock
_MAX_FACTS = 64
_MAX_VALUE = 1024
_CALLBACK_KEYS = ("mac", "ip", "uptime", "hostname", "kernel", "mode", "profile", "uuid", "disk", "nics")


T = TypeVar("T")


class BootService:
    """State of the /boot routes: the store, the renderers (one per base URL) and the look-up map.

    Store work runs on this service's own threads: one for SQLite, which takes one writer
    at a time (more threads would only queue on its lock, whose busy handler sleeps in
    steps of milliseconds), four for PostgreSQL.
    """

    def __init__(self, store: Store, images_dir: Path, base_url: str | None = None, *,
                 agent_mode: str = "agent", template_dirs: Sequence[Path] = ()) -> None:
        self.store = store
        self.template_dirs = [*template_dirs, *default_template_dirs()]
        self.images_dir = images_dir
        self.base_url = base_url.rstrip("/") if base_url else None
        self.agent_mode = agent_mode
        self.finder = TargetFinder()
        self._renderers: dict[str, ScriptRenderer] = {}
        self._executor = ThreadPoolExecutor(max_workers=1 if store.is_sqlite else 4,
                                            thread_name_prefix="anvil-boot-store")
        self._asks: list[tuple[Ask, asyncio.Future[Script | ValueError]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on one of the service's store threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def script(self, ask: Ask) -> Script:
        """The script for ``ask``. Requests that arrive while a batch is being written wait and go
        together in the next one (group commit): one read and one write transaction per batch,
        not per request. Raises ValueError for a script that cannot be made, and the store's errors."""
        fut: asyncio.Future[Script | ValueError] = asyncio.get_running_loop().create_future()
        self._asks.append((ask, fut))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain(), name="boot-scripts")
        result = await fut
        if isinstance(result, ValueError):
            raise result
        return result

    async def _drain(self) -> None:
        try:
            while self._asks:
                batch, self._asks = self._asks[:_BATCH], self._asks[_BATCH:]
                try:
                    results = await self.run(partial(serve_scripts, self.store, self.finder, [a for a, _ in batch]))
                except Exception as exc:  # not swallowed: each request of the batch raises it
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self._drainer = None

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def renderer(self, request: web.Request) -> ScriptRenderer:
        base = self.base_url or str(request.url.origin())
        renderer = self._renderers.get(base)
        if renderer is None:
            if len(self._renderers) > 16:
                self._renderers.clear()
            renderer = self._renderers[base] = ScriptRenderer(base, agent_mode=self.agent_mode,
                                                              template_dirs=self.template_dirs)
        return renderer


BOOT_SERVICE = web.AppKey("anvil_boot_service", BootService)


def resolve_image(images_dir: Path, rel: str) -> Path | None:
    """``rel`` as a regular file inside ``images_dir``; None for anything that leaves it."""
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        return None
    if any(part in ("", ".", "..") for part in rel.split("/")) or PurePosixPath(rel).is_absolute():
        return None
    try:
        root = images_dir.resolve(strict=True)
        path = (root / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def _text(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/plain", charset="utf-8")


def _peer(request: web.Request) -> str:
    return (request.remote or "")[:64]


async def _params(request: web.Request) -> dict[str, str]:
    """Query parameters, then the form or JSON body (body wins)."""
    out: dict[str, str] = {k: v for k, v in request.query.items()}
    if request.can_read_body:
        if request.content_type == "application/json":
            try:
                data: Any = safejson.loads(await request.read())
            except ValidationError as exc:
                raise web.HTTPBadRequest(text=f"{exc}\n") from None
            if isinstance(data, dict):
                out.update({str(k): str(v) for k, v in data.items() if isinstance(v, str | int | float)})
        else:
            try:
                form = await request.post()
            except (ValueError, UnicodeDecodeError, AssertionError) as exc:
                # aiohttp refuses a malformed form (a multipart type without its boundary, bytes that are
                # not text) with these; answer 400, never a traceback.
                raise web.HTTPBadRequest(text=f"unreadable form body: {str(exc)[:100]}\n") from None
            out.update({k: v for k, v in form.items() if isinstance(v, str)})
    return out


async def ipxe_script(request: web.Request) -> web.Response:
    svc = request.app[BOOT_SERVICE]
    mac = request.query.get("mac", "")
    uuid = request.query.get("uuid")
    renderer = svc.renderer(request)

    try:
        if not normalize_mac(mac) and not normalize_uuid(uuid):
            text = renderer.discover(None).text
        else:
            text = (await svc.script(Ask(renderer, mac, uuid))).text
    except ValueError as exc:
        log.warning("cannot render an iPXE script for %s: %s", mac, exc)
        text = "#!ipxe\necho Anvil: no boot script for this machine (see the appliance log)\nexit\n"
    return _text(text)


async def image(request: web.Request) -> web.StreamResponse:
    svc = request.app[BOOT_SERVICE]
    path = await asyncio.to_thread(resolve_image, svc.images_dir, request.match_info["path"])
    if path is None:
        raise web.HTTPNotFound(text="not found")
    return web.FileResponse(path)


async def callback(request: web.Request) -> web.Response:
    svc = request.app[BOOT_SERVICE]
    params = await _params(request)
    token = params.get("token", "")
    base = svc.base_url or str(request.url.origin())
    peer = _peer(request)
    facts = {k: params[k][:256] for k in _CALLBACK_KEYS if k in params and "anvil." not in params[k]}

    def spend() -> str | None:
        with svc.store.write() as session:
            spent = spend_boot_token(session, token)
            if spent is None:
                return None
            blade = session.get(BladeRow, spent.blade_id)
            if spent.job_id and session.get(JobRow, spent.job_id) is not None:
                session.add(JobEventRow(
                    job_id=spent.job_id, kind="boot-signal",
                    message=f"blade {blade.name if blade else spent.blade_id} booted "
                            f"(generation {spent.generation})",
                    data={"binding_id": spent.binding_id, "generation": spent.generation,
                          "blade": blade.name if blade else None, "peer": peer, "facts": facts}))
            return spent.heartbeat_secret

    secret = await svc.run(spend)
    if secret is None:
        raise web.HTTPForbidden(text="invalid or used boot token")
    return _text(f"heartbeat_secret={secret}\nheartbeat_url={base}/boot/heartbeat\n"
                 f"heartbeat_interval={HEARTBEAT_INTERVAL}\n")


async def heartbeat(request: web.Request) -> web.Response:
    svc = request.app[BOOT_SERVICE]
    auth = request.headers.get("Authorization", "")
    secret = auth[7:].strip() if auth.lower().startswith("bearer ") else (await _params(request)).get("secret", "")

    def beat() -> bool:
        with svc.store.write() as session:
            return check_heartbeat(session, secret) is not None

    if not await svc.run(beat):
        raise web.HTTPForbidden(text="invalid heartbeat secret")
    return web.Response(status=204)


async def discover(request: web.Request) -> web.Response:
    svc = request.app[BOOT_SERVICE]
    params = await _params(request)
    mac = normalize_mac(params.get("mac", ""))
    if mac is None:
        raise web.HTTPBadRequest(text="a valid mac is required")
    facts = {k[:64]: v[:_MAX_VALUE] for k, v in list(params.items())[:_MAX_FACTS] if k != "mac"}
    uuid = normalize_uuid(params.get("uuid"))
    peer = _peer(request)

    def store_facts() -> bool:
        with svc.store.write() as session:
            known = session.scalars(select(BladeNicRow.id).where(BladeNicRow.mac == mac)).first()
            if known is not None:
                return False
            row = session.scalars(select(BootDiscoveryRow).where(BootDiscoveryRow.mac == mac)).first()
            if row is None:
                session.add(BootDiscoveryRow(mac=mac, uuid=uuid, peer=peer, facts=facts))
            else:
                row.uuid, row.peer, row.facts, row.updated_at = uuid, peer, facts, utcnow()
            return True

    stored = await svc.run(store_facts)
    what = "facts recorded" if stored else "already enrolled"
    return _text(f"#!ipxe\necho Anvil: {what} for {mac}\nexit\n")


def setup(app: web.Application, *, store: Store, images_dir: Path, base_url: str | None = None,
          agent_mode: str = "agent", template_dirs: Sequence[Path] = ()) -> None:
    """Add the /boot routes to ``app``. ``base_url``: how blades reach this service (None: the
    address each request came to); ``agent_mode``: the lab image's ``anvil.mode=``;
    ``template_dirs``: searched for iPXE templates before the built-in ones."""
    svc = app[BOOT_SERVICE] = BootService(store, images_dir, base_url, agent_mode=agent_mode,
                                          template_dirs=template_dirs)

    async def _close(_app: web.Application) -> None:
        await asyncio.to_thread(svc.close)

    app.on_cleanup.append(_close)
    app.router.add_get("/boot/ipxe", ipxe_script)
    app.router.add_get("/boot/images/{path:.+}", image)
    app.router.add_post("/boot/callback", callback)
    app.router.add_post("/boot/heartbeat", heartbeat)
    app.router.add_post("/boot/discover", discover)


def base_url_for(listen: str) -> str | None:
    """The URL blades use, when the listen address is a concrete one."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        return None
    return f"http://{host}:{port}"


def create_boot_app(settings: Settings, *, store: Store | None = None) -> web.Application:
    """The boot role's own app: /boot only, the store opened here (and closed on cleanup)."""
    app = web.Application(client_max_size=256 * 1024)
    setup_headers(app)
    own = store is None
    st = store if store is not None else open_store(settings.store_url)
    images = settings.images_dir
    os.makedirs(images, exist_ok=True)
    setup(app, store=st, images_dir=images, base_url=settings.boot.advertise_url or base_url_for(settings.boot.listen),
          agent_mode=settings.boot.image_agent_mode, template_dirs=settings.boot.template_dirs)

    async def _close(_app: web.Application) -> None:
        if own:
            st.close()

    app.on_cleanup.append(_close)
    return app
