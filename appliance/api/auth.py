"""Who is calling the API: a bearer token, or the console's session cookie plus its CSRF token.

:func:`api_principal` authenticates a request; :func:`still_authorized` checks again
later, for a response that outlives the moment it was authorized (a server-sent event
stream ends once its token is revoked or expires, or its console session ends).
"""

from __future__ import annotations

import asyncio
import hmac

from aiohttp import web

from appliance.api.errors import problem
from appliance.api.keys import CHECKS, PRINCIPAL, SESSION_COOKIE, TOKENS, USERS
from appliance.services.users import Principal

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _unauthorized(detail: str) -> web.Response:
    resp = problem(401, "Unauthorized", detail)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="anvil"'
    return resp


async def api_principal(request: web.Request) -> Principal | web.Response:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        principal = await request.app[CHECKS].run(request.app[TOKENS].authenticate, token.strip())
        return principal or _unauthorized("the bearer token is not valid (unknown, expired or revoked)")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        got = await asyncio.to_thread(request.app[USERS].resolve_session, cookie)
        if got is None:
            return _unauthorized("the console session has ended; log in again")
        principal, csrf = got
        if request.method not in SAFE_METHODS and not hmac.compare_digest(
                request.headers.get("X-CSRF-Token", ""), csrf):
            return problem(403, "Forbidden", "a console session needs its CSRF token (X-CSRF-Token) to change "
                                             "anything")
        return principal
    return _unauthorized("a valid bearer token is required")


async def still_authorized(request: web.Request) -> bool:
    """Whether the credential that authorized ``request`` is still valid now."""
    principal: Principal | None = request.get(PRINCIPAL)
    if principal is None:
        return False
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        return await request.app[CHECKS].run(request.app[TOKENS].authenticate, token.strip()) is not None
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return False
    return await asyncio.to_thread(request.app[USERS].resolve_session, cookie) is not None
