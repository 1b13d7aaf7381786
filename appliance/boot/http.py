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
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance import safejson
from appliance.api.hardening import setup_headers
from appliance.boot.beats import Beats
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
from appliance.boot.metered import boot_metrics
from appliance.boot.peers import PeerCheck, is_loopback_listen
from appliance.boot.tokens import KEY_FILE, BootKey, find_attempt, quiet_enough, spend
from appliance.config import Settings
from appliance.errors import ValidationError
from appliance.metrics import Metrics
from appliance.services.discovered import MAX_RECORDS, bounded_facts, record
from appliance.store import Store, open_store
from appliance.store.tables import (
    BindingRow,
    BladeNicRow,
    BladeRow,
    JobEventRow,
    JobRow,
    ProfileRow,
    utcnow,
)

log = logging.getLogger(__name__)

# The agent beats every 2 s, so the monitor can tell a hung OS (its BMC still reads On) within
# seconds: [monitor] heartbeat_timeout (6.5 s) is three lost beats and a margin.
HEARTBEAT_INTERVAL = 2
# A spent token is accepted again (the OS rebooted and its agent re-registers) only after its agent
# has been quiet this long. While it beats, a second callback is a replay.
REATTEST_QUIET = timedelta(seconds=5 * HEARTBEAT_INTERVAL)
ACTIVE_JOBS = frozenset({"pending", "running", "waiting"})
_BATCH = 64      # scripts per group commit: bounds how long one write transaction holds the lock
_CALLBACK_KEYS = ("mac", "ip", "uptime", "hostname", "kernel", "mode", "profile", "uuid", "sysuuid", "disk",
                  "nics")


T = TypeVar("T")


class BootService:
    """State of the /boot routes: the store, the renderers (one per base URL) and the look-up map.

    Store work runs on this service's own threads: one for SQLite, which takes one writer
    at a time (more threads would only queue on its lock, whose busy handler sleeps in
    steps of milliseconds), four for PostgreSQL.
    """

    def __init__(self, store: Store, images_dir: Path, base_url: str | None = None, *, key: BootKey,
                 peers: PeerCheck, agent_mode: str = "agent", template_dirs: Sequence[Path] = ()) -> None:
        self.store = store
        self.key = key
        self.peers = peers
        self.template_dirs = [*template_dirs, *default_template_dirs()]
        self.images_dir = images_dir
        self.base_url = base_url.rstrip("/") if base_url else None
        self.agent_mode = agent_mode
        self.finder = TargetFinder()
        self.discover_limit = RateLimit(per_second=1 / 3, burst=20)
        self.beats = Beats(store, self.run)
        self.discover_cap = MAX_RECORDS
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
        self.beats.close_sync()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def renderer(self, request: web.Request) -> ScriptRenderer:
        base = self.base_url or str(request.url.origin())
        renderer = self._renderers.get(base)
        if renderer is None:
            if len(self._renderers) > 16:
                self._renderers.clear()
            renderer = self._renderers[base] = ScriptRenderer(base, agent_mode=self.agent_mode,
                                                              template_dirs=self.template_dirs, key=self.key)
        return renderer


BOOT_SERVICE = web.AppKey("anvil_boot_service", BootService)


class RateLimit:
    """A token bucket per key (a source address), in memory: ``burst`` at once, then
    ``per_second``. Bounded: at most ``keys`` addresses are remembered."""

    def __init__(self, *, per_second: float, burst: int, keys: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.keys, self.clock = per_second, float(burst), keys, clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 when allowed (one token taken), else the seconds until the next token."""
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        if len(self._buckets) >= self.keys and key not in self._buckets:
            self._buckets.clear()       # a flood of addresses: forget them all rather than grow
        self._buckets[key] = (tokens - 1, now)
        return 0.0


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


@dataclass(frozen=True, slots=True)
class Verdict:
    """A callback's outcome: the heartbeat secret when it counts, else why not."""

    secret: str | None
    why: str = ""


def _blade_identity(session: Session, binding: BindingRow) -> tuple[str, set[str], set[str], int | None]:
    """(blade name, the blade's MACs — burned-in and the profile's —, the profile's reserved
    addresses, the blade's rack controller)."""
    blade = session.get(BladeRow, binding.blade_id)
    macs = set(session.scalars(select(BladeNicRow.mac).where(BladeNicRow.blade_id == binding.blade_id)))
    reserved: set[str] = set()
    profile = session.get(ProfileRow, binding.profile_id)
    nics = ((profile.document.get("spec") or {}).get("identity") or {}).get("nics") or [] if profile else []
    for nic in nics:
        if isinstance(nic, dict):
            if nic.get("mac"):
                macs.add(str(nic["mac"]))
            if nic.get("ipv4"):
                reserved.add(str(nic["ipv4"]))
    return (blade.name if blade else str(binding.blade_id)), macs, reserved, (blade.rack_id if blade else None)


PeerMatch = Callable[[str, set[str], set[str]], "str | None"]


def accept_callback(store: Store, *, token: str, peer: str, facts: dict[str, str], match: PeerMatch,
                    rack: int | None) -> Verdict:
    """Judge a callback and, when it counts, spend its token (blocking: a store thread).

    ``match(peer, macs, reserved)``: the peer rule that makes ``peer`` the blade's address;
    ``rack``: the rack controller the callback came through (None: the appliance's own boot
    role) — a token of a blade another rack serves counts for nothing here."""

    def judge(session: Session) -> tuple[Verdict | None, str]:
        """(a refusal, or None when the callback counts; the peer rule that matched)."""
        presented = find_attempt(session, token)
        if presented is None:
            return Verdict(None, "unknown, superseded or stale boot token"), ""
        attempt, binding = presented.attempt, presented.binding
        blade, macs, reserved, blade_rack = _blade_identity(session, binding)
        if blade_rack != rack:
            return Verdict(None, f"a token of blade {blade}, which another rack controller serves"), ""
        rule = match(peer, macs, reserved)
        if rule is None:
            return Verdict(None, f"not the address of blade {blade} (a token for it, from elsewhere)"), ""
        if attempt.used_at is not None and not quiet_enough(session, binding.id, now=utcnow(), quiet=REATTEST_QUIET):
            return Verdict(None, f"token of blade {blade} presented again while its agent still beats (replay)"), ""
        return None, rule

    # Judged in a read transaction first: a flood of forged callbacks must not queue on the
    # store's one writer. Only a callback that counts is judged again and spent in a write.
    with store.read() as session:
        refused, _ = judge(session)
    if refused is not None:
        return refused
    with store.write() as session:
        refused, rule = judge(session)
        if refused is not None:
            return refused
        presented = find_attempt(session, token)
        assert presented is not None
        attempt, binding = presented.attempt, presented.binding
        blade = _blade_identity(session, binding)[0]
        job = session.get(JobRow, attempt.job_id) if attempt.job_id else None
        waiting = job is not None and job.state in ACTIVE_JOBS
        first, secret = spend(session, presented, now=utcnow())
        if first and waiting and job is not None:
            session.add(JobEventRow(
                job_id=job.id, kind="boot-signal",
                message=f"blade {blade} booted (generation {binding.generation})",
                data={"binding_id": binding.id, "generation": binding.generation, "blade": blade,
                      "peer": peer, "peer_rule": rule, "facts": facts}))
        elif not first:
            log.info("blade %s called back again from %s (its OS rebooted): heartbeat re-registered",
                     blade, peer)
        return Verdict(secret)


def callback_facts(params: dict[str, str]) -> dict[str, str]:
    return {k: params[k][:256] for k in _CALLBACK_KEYS if k in params and "anvil." not in params[k]}


def callback_answer(secret: str, base: str) -> str:
    return (f"heartbeat_secret={secret}\nheartbeat_url={base}/boot/heartbeat\n"
            f"heartbeat_interval={HEARTBEAT_INTERVAL}\n")


async def callback(request: web.Request) -> web.Response:
    """The booted image's callback: counts only with a valid token of an open boot attempt, from
    the blade's own address (appliance.boot.peers). The first one completes the waiting job's
    await-boot; a later one (the OS rebooted) only re-registers the heartbeat, and only once the
    agent has gone quiet. Anything refused changes nothing and is logged (never the token)."""
    svc = request.app[BOOT_SERVICE]
    params = await _params(request)
    base = svc.base_url or str(request.url.origin())
    peer = _peer(request)
    verdict = await svc.run(partial(accept_callback, svc.store, token=params.get("token", ""), peer=peer,
                                    facts=callback_facts(params), match=svc.peers.match, rack=None))
    if verdict.secret is None:
        svc.peers.refused(peer, verdict.why)
        raise web.HTTPForbidden(text="invalid or used boot token")
    svc.beats.forget()
    return _text(callback_answer(verdict.secret, base))


async def heartbeat(request: web.Request) -> web.Response:
    """A beat of a booted image's agent, with the heartbeat secret its callback got. Checked
    against the store (cached a few seconds) and recorded in batches (appliance.boot.beats):
    at a beat every 2 s, 10,000 agents would otherwise be 5,000 store writes a second."""
    svc = request.app[BOOT_SERVICE]
    auth = request.headers.get("Authorization", "")
    secret = auth[7:].strip() if auth.lower().startswith("bearer ") else (await _params(request)).get("secret", "")
    if not await svc.beats.beat(secret):
        raise web.HTTPForbidden(text="invalid heartbeat secret")
    return web.Response(status=204)


def discovery_throttled(limit: RateLimit, peer: str) -> web.Response | None:
    """The 429 for a source address posting discoveries too often (the appliance's boot role and a
    rack controller's alike), or None."""
    wait = limit.take(peer)
    if wait <= 0:
        return None
    resp = web.Response(status=429, text="too many discovery posts from this address; slow down\n")
    resp.headers["Retry-After"] = str(int(wait) + 1)
    return resp


async def discovery_params(request: web.Request) -> tuple[dict[str, str], str]:
    """A discovery post's parameters and its MAC (400 without a valid one)."""
    params = await _params(request)
    mac = normalize_mac(params.get("mac", ""))
    if mac is None:
        raise web.HTTPBadRequest(text="a valid mac is required")
    return params, mac


async def discover(request: web.Request) -> web.Response:
    """An unknown machine's facts: one record per MAC, bounded (appliance.services.discovered),
    at most a few posts a minute per source address."""
    svc = request.app[BOOT_SERVICE]
    peer = _peer(request)
    throttled = discovery_throttled(svc.discover_limit, peer)
    if throttled is not None:
        return throttled
    params, mac = await discovery_params(request)
    facts = bounded_facts(params)
    uuid = normalize_uuid(params.get("uuid"))

    def store_facts() -> str:
        with svc.store.write() as session:
            return record(session, mac, uuid, peer, facts, cap=svc.discover_cap)

    outcome = await svc.run(store_facts)
    if outcome == "full":
        log.warning("discovery table full (%d machines wait to be enrolled); %s from %s not recorded",
                    svc.discover_cap, mac, peer)
        return web.Response(status=429, text="too many machines wait to be enrolled; an admin must enrol or "
                                             "dismiss some first\n")
    what = "facts recorded" if outcome == "recorded" else "already enrolled"
    return _text(f"#!ipxe\necho Anvil: {what} for {mac}\nexit\n")


def setup(app: web.Application, *, store: Store, images_dir: Path, key: BootKey, peers: PeerCheck,
          base_url: str | None = None, agent_mode: str = "agent", template_dirs: Sequence[Path] = ()) -> None:
    """Add the /boot routes to ``app``. ``key``: the boot key tokens are derived with (the
    engine's too); ``peers``: who may call back for a blade; ``base_url``: how blades reach this
    service (None: the address each request came to); ``agent_mode``: the lab image's
    ``anvil.mode=``; ``template_dirs``: searched for iPXE templates before the built-in ones."""
    svc = app[BOOT_SERVICE] = BootService(store, images_dir, base_url, key=key, peers=peers, agent_mode=agent_mode,
                                          template_dirs=template_dirs)

    async def _close(_app: web.Application) -> None:
        await svc.beats.aclose()
        await asyncio.to_thread(svc.close)

    app.on_cleanup.append(_close)
    app.router.add_get("/boot/ipxe", ipxe_script)
    app.router.add_get("/boot/images/{path:.+}", image)
    app.router.add_post("/boot/callback", callback)
    app.router.add_post("/boot/heartbeat", heartbeat)
    app.router.add_post("/boot/discover", discover)


def peer_check(settings: Settings) -> PeerCheck:
    """The peer rules of this appliance's boot service: loopback only when it listens on loopback
    alone; the managed dnsmasq's leases when the boot role runs DHCP."""
    leases = settings.run_dir / "dnsmasq.leases" if settings.boot.dhcp == "reservations" else None
    return PeerCheck(loopback_only=is_loopback_listen(settings.boot.listen), leases_path=leases)


def base_url_for(listen: str) -> str | None:
    """The URL blades use, when the listen address is a concrete one."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        return None
    return f"http://{host}:{port}"


def create_boot_app(settings: Settings, *, store: Store | None = None,
                    metrics: Metrics | None = None) -> web.Application:
    """The boot role's own app: /boot only, the store opened here (and closed on cleanup);
    its requests counted in ``metrics`` when given (the appliance's /metrics)."""
    app = web.Application(client_max_size=256 * 1024,
                          middlewares=[boot_metrics(metrics)] if metrics is not None else [])
    setup_headers(app)
    own = store is None
    st = store if store is not None else open_store(settings.store_url)
    images = settings.images_dir
    os.makedirs(images, exist_ok=True)
    setup(app, store=st, images_dir=images, key=BootKey.load(settings.state_dir / KEY_FILE),
          peers=peer_check(settings),
          base_url=settings.boot.advertise_url or base_url_for(settings.boot.listen),
          agent_mode=settings.boot.image_agent_mode, template_dirs=settings.boot.template_dirs)

    async def _close(_app: web.Application) -> None:
        if own:
            st.close()

    app.on_cleanup.append(_close)
    return app
