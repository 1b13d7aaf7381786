"""One wrapper for every Bare Metal API route: the version, the caller, its role, Ironic's errors.

Routes are listed as :class:`Route` values (like /api/v1's ``Op``), so the router and the
tenant walk (tests/api/test_tenant_walk.py) are built from the same list. Each request:

1. is served at the microversion it asks for (appliance.api.ironic.versions; 406 outside);
2. unless the route is public (the version documents, as in Ironic), authenticates an Anvil
   token, sent as ``X-Auth-Token`` (what Ironic's clients send with a static token:
   keystoneauth's ``admin_token``/``token_endpoint`` plugins) or as a bearer token;
3. is refused (403) below the route's least role, or, for an appliance-wide change, to a
   tenant-scoped caller — whose look-ups then see only the blades bound to its tenant's profiles;
4. runs as that caller for the audit trail; any error becomes Ironic's error document.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from appliance import safejson
from appliance.api.ironic import errors, versions
from appliance.api.ironic.versions import Version
from appliance.api.keys import CHECKS, PRINCIPAL, TOKENS
from appliance.api.spec import Forbidden, caller
from appliance.errors import AnvilError
from appliance.services.users import Principal
from appliance.store.audit import Actor, acting_as

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.Response]]
VERSION = web.RequestKey("ironic_version", tuple)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str                      # below /baremetal: "", "/v1", "/v1/nodes/{node}"
    handler: Handler
    summary: str
    role: str = "viewer"           # least role: viewer | operator | admin
    appliance_wide: bool = False   # no tenant-scoped caller
    public: bool = False           # no token (the version documents)

    @property
    def full_path(self) -> str:
        return versions.PREFIX + self.path


def version_of(request: web.Request) -> Version:
    v: Version = request[VERSION]
    return v


def at_least(request: web.Request, minor: int) -> bool:
    return version_of(request) >= (1, minor)


async def json_body(request: web.Request) -> Any:
    """The JSON body, or a 400 naming what is wrong with it."""
    raw = await request.read()
    if not raw:
        raise errors.IronicError(400, "a JSON body is required")
    try:
        return safejson.loads(raw)
    except ValueError as exc:
        raise errors.IronicError(400, f"the body is not JSON: {exc}") from None


async def _principal(request: web.Request) -> Principal | web.Response:
    token = request.headers.get("X-Auth-Token", "").strip()
    if not token:
        scheme, _, rest = request.headers.get("Authorization", "").partition(" ")
        token = rest.strip() if scheme.lower() == "bearer" else ""
    if not token:
        return errors.response(401, "Authentication required: send an Anvil API token as X-Auth-Token")
    principal = await request.app[CHECKS].run(request.app[TOKENS].authenticate, token)
    if principal is None:
        return errors.response(401, "The token is not valid (unknown, expired or revoked)")
    return principal


def _wrap(route: Route) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        try:
            version = versions.negotiate(request)
        except versions.VersionError as exc:
            resp = errors.response(exc.status, str(exc))
            versions.stamp(resp, versions.MIN)
            return resp
        request[VERSION] = version
        resp = await _serve(route, request)
        versions.stamp(resp, version)
        return resp

    return handler


async def _serve(route: Route, request: web.Request) -> web.Response:
    try:
        if route.public:
            return await route.handler(request)
        got = await _principal(request)
        if isinstance(got, web.Response):
            got.headers["WWW-Authenticate"] = 'Bearer realm="anvil"'
            return got
        request[PRINCIPAL] = got
        if not got.allows(route.role):
            raise Forbidden(f"{route.method} {route.full_path} needs the {route.role} role (you are {got.role})")
        if route.appliance_wide and got.tenant is not None:
            raise Forbidden(f"{route.method} {route.full_path} changes the whole appliance; a tenant-scoped "
                            f"{got.kind} may not")
        with acting_as(Actor(caller(request).who, f"baremetal {request.remote or '?'}")):
            return await route.handler(request)
    except AnvilError as exc:
        return errors.from_anvil(exc)
    except web.HTTPException as exc:
        return errors.response(exc.status, exc.reason)
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return errors.response(500, "an internal error occurred; see the appliance log")


def register(app: web.Application, routes: list[Route]) -> None:
    """Each route with and without a trailing slash: Ironic's clients send both (``/v1/ports/?node=``)."""
    paths = {(r.method, r.full_path) for r in routes}
    for route in routes:
        app.router.add_route(route.method, route.full_path, _wrap(route))
        slashed = route.full_path + "/"
        if "{tail" not in route.path and not route.full_path.endswith("/") and (route.method, slashed) not in paths:
            app.router.add_route(route.method, slashed, _wrap(route))
