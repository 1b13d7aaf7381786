"""The aiohttp application factory: auth on every /api/v1 route from the first one.

``/rack/v1`` (appliance.boot.region) checks rack tokens itself.
Unauthenticated: ``/healthz``, ``/readyz`` and ``/boot/...`` (what PXE clients fetch; no secrets),
and the console's login page and static files. ``/baremetal`` (the Ironic-compatible Bare Metal
API, appliance.api.ironic) checks tokens itself (``X-Auth-Token``), all but its version documents.
``/events/redfish/{sid}`` takes BMC events and checks the subscription's own bearer token
(appliance.monitor.events). An API call carries a bearer token, or the console's session cookie
plus its CSRF token in ``X-CSRF-Token`` for anything but GET/HEAD. ``/metrics`` (the alias of
``/api/v1/metrics`` where Prometheus looks by default) is authenticated like the API. Every
change a request makes is audited as its caller (``user:NAME`` or ``token:NAME``) from the peer
address.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from appliance import __version__
from appliance.api.auth import api_principal
from appliance.api.errors import error_middleware
from appliance.api.hardening import setup_headers
from appliance.api.ironic import setup_ironic
from appliance.api.keys import (
    CHECKS,
    ENGINE,
    HARDWARE,
    METRICS,
    OFFLOAD,
    OPENAPI,
    PRINCIPAL,
    READINESS,
    READS,
    SETTINGS,
    STORE,
    TOKENS,
    USERS,
    WRITES,
)
from appliance.api.offload import Lane, Offload
from appliance.api.readiness import Readiness, readiness
from appliance.api.routes import (
    access,
    blades,
    changes,
    discovered,
    dr,
    failover,
    firmware,
    host_feed,
    host_pools,
    jobs,
    metrics,
    pools,
    profiles,
    racks,
    sites,
    usage,
    vm_hosts,
)
from appliance.api.spec import Op, caller, document, register, register_alias
from appliance.config import Settings
from appliance.engine.leader import leader_alive
from appliance.engine.runner import Engine
from appliance.metrics import Metrics, Sources
from appliance.monitor.events import setup_event_route
from appliance.monitor.runner import Monitor
from appliance.secrets import SecretBox, ensure_key
from appliance.services.hardware import Hardware
from appliance.services.tokens import TokenService
from appliance.services.users import UserService
from appliance.store import Store
from appliance.store.audit import Actor, acting_as
from appliance.store.stats import job_counts, pool_use

PUBLIC_PREFIXES = ("/boot/", "/static/")
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/api/v1/site-link/pairing"})   # pairing: the code is the credential
API_ALIASES = frozenset({"/metrics"})   # outside /api/ but authenticated like it

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if path not in API_ALIASES and (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
                                    or not path.startswith("/api/")):
        return await handler(request)   # the console checks its own session (appliance.console)
    got = await api_principal(request)
    if isinstance(got, web.Response):
        return got
    request[PRINCIPAL] = got
    with acting_as(Actor(got.who, f"api {request.remote or '?'}")):
        return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    store = request.app[STORE]
    try:
        with store.read() as s:
            s.connection().exec_driver_sql("SELECT 1")
        db = "ok"
    except Exception as exc:  # report, don't crash: this is the health endpoint
        db = f"error: {exc.__class__.__name__}"
    status = 200 if db == "ok" else 503
    return web.json_response({"status": "ok" if status == 200 else "degraded", "store": db,
                              "version": __version__}, status=status)


async def readyz(request: web.Request) -> web.Response:
    ok, body = await readiness(request.app[STORE], request.app[READINESS])
    return web.json_response({**body, "version": __version__}, status=200 if ok else 503)


async def api_root(request: web.Request) -> web.Response:
    p = caller(request)
    return web.json_response({"version": __version__, "principal": p.name, "kind": p.kind, "role": p.role,
                              "tenant": p.tenant})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


def _meta_ops() -> list[Op]:
    from appliance.api import schemas as sc

    return [
        Op("GET", "", api_root, "Who the caller is, and the API version", "meta", responses={200: ("OK", sc.ROOT)}),
        Op("GET", "/openapi.json", openapi, "This document", "meta", responses={200: ("OpenAPI 3.1", {})}),
    ]


def all_ops() -> list[Op]:
    """Every API operation: the router and the OpenAPI document are both built from this list."""
    return [*_meta_ops(), *blades.OPS, *profiles.OPS, *jobs.OPS, *pools.OPS, *access.OPS, *failover.OPS,
            *discovered.OPS, *vm_hosts.OPS, *changes.OPS, *usage.OPS, *host_pools.OPS, *host_feed.OPS,
            *firmware.OPS, *metrics.OPS, *sites.OPS, *dr.OPS, *racks.OPS]


def setup_api(app: web.Application) -> None:
    ops = all_ops()
    app[OPENAPI] = document(ops)
    register(app, ops)
    register_alias(app, "/metrics", metrics.OPS[0])


def setup_hardware(app: web.Application) -> None:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if HARDWARE not in app:
            key = app[SETTINGS].secrets_key_path
            ensure_key(key)
            app[HARDWARE] = Hardware(app[STORE], SecretBox(key))
        yield
        await app[HARDWARE].close()

    app.cleanup_ctx.append(ctx)


def setup_rack_routes(app: web.Application, settings: Settings, store: Store, engine: Engine | None) -> None:
    """/rack/v1 for rack controllers (appliance.boot.region), with the boot key the engine opens
    boot attempts with (scripts are rendered here, so the key never leaves the region)."""
    from appliance.boot.region import setup_rack_api
    from appliance.boot.tokens import KEY_FILE, BootKey

    key = engine.settings.boot_key if engine is not None else None
    setup_rack_api(app, store, settings.images_dir, key or BootKey.load(settings.state_dir / KEY_FILE),
                   template_dirs=settings.boot.template_dirs)


async def _close_offload(app: web.Application) -> None:
    app[OFFLOAD].close()
    app[READS].close()
    app[CHECKS].close()
    app[WRITES].close()


def _sources(store: Store, engine: Engine | None) -> Sources:
    """What a scrape reads: jobs by kind and state, the pool, the lease; the leader gauge only in a
    process that runs an engine."""
    return Sources(jobs=lambda: job_counts(store), pool=lambda: pool_use(store),
                   leader_here=(lambda: engine.is_leader) if engine is not None else None,
                   leader_known=lambda: leader_alive(store))


def create_app(settings: Settings, store: Store, *, engine: Engine | None = None, console: bool = True,
               hardware: Hardware | None = None, monitor: Monitor | None = None,
               metrics: Metrics | None = None, ready: Readiness | None = None) -> web.Application:
    """The API app. ``metrics``: this appliance's registry (a new one when None: never the client
    library's global default, several apps share a process in tests); ``ready``: what /readyz
    checks beyond the store."""
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=2 * 1024 * 1024)
    setup_headers(app)
    app[SETTINGS] = settings
    app[STORE] = store
    app[OFFLOAD] = Offload()
    app[READS] = Lane()
    app[CHECKS] = Lane(workers=2)
    app[WRITES] = Lane(workers=1 if store.is_sqlite else 4, name="anvil-write")
    app.on_cleanup.append(_close_offload)
    app[TOKENS] = TokenService(store)
    app[USERS] = UserService(store)
    if engine is not None:
        app[ENGINE] = engine
    if hardware is not None:
        app[HARDWARE] = hardware
    app[METRICS] = metrics = metrics or Metrics()
    metrics.watch(_sources(store, engine))
    app[READINESS] = ready or Readiness()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if monitor is not None and monitor.events is not None:
        # BMCs post here with their subscription's token, checked by the route itself.
        setup_event_route(app, monitor.events, monitor.on_event)
    setup_api(app)
    setup_ironic(app)
    setup_rack_routes(app, settings, store, engine)
    setup_hardware(app)
    if console:
        from appliance.console import setup_console

        setup_console(app)
    return app


__all__ = ["PRINCIPAL", "all_ops", "create_app"]
