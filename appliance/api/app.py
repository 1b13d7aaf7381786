"""The aiohttp application factory: auth on every /api/v1 route from the first one.

Unauthenticated: ``/healthz`` and ``/boot/...`` (what PXE clients fetch; no secrets).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from appliance import __version__
from appliance.api.errors import error_middleware, problem
from appliance.api.keys import ENGINE, PRINCIPAL, SETTINGS, STORE, TOKENS
from appliance.api.routes import jobs
from appliance.config import Settings
from appliance.engine.runner import Engine
from appliance.services.tokens import Principal, TokenService
from appliance.store import Store

PUBLIC_PREFIXES = ("/boot/",)
PUBLIC_PATHS = frozenset({"/healthz"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    principal: Principal | None = None
    if scheme.lower() == "bearer" and token:
        principal = request.app[TOKENS].authenticate(token.strip())
    if principal is None:
        resp = problem(401, "Unauthorized", "a valid bearer token is required")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="anvil"'
        return resp
    request[PRINCIPAL] = principal
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


async def api_root(request: web.Request) -> web.Response:
    principal: Principal = request[PRINCIPAL]
    return web.json_response({"version": __version__, "principal": principal.token_name, "role": principal.role})


def create_app(settings: Settings, store: Store, *, engine: Engine | None = None) -> web.Application:
    app = web.Application(middlewares=[auth_middleware, error_middleware])
    app[SETTINGS] = settings
    app[STORE] = store
    app[TOKENS] = TokenService(store)
    if engine is not None:
        app[ENGINE] = engine
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1", api_root)
    app.router.add_get("/api/v1/", api_root)
    jobs.setup(app)
    return app
