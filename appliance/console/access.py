"""The console's users and tokens page, for appliance admins only (as the API's /users and
/tokens): add, re-password and delete users; create a token, which is shown once, on the
page that answers the form (never stored, never in a URL), and revoke tokens.

A token made here is owned by the console user (``user:ID``), as one made through the API
with that user's session.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from aiohttp import web

from appliance.api.keys import STORE
from appliance.console.views import USER, page, render
from appliance.errors import Issue, ValidationError
from appliance.services.tokens import TokenService, parse_ttl
from appliance.services.users import ROLES, UserService


def _field(data: Any, name: str) -> str:
    return str(data.get(name, "") or "").strip()


async def _page(request: web.Request, *, status: int = 200, **extra: Any) -> web.Response:
    users = await asyncio.to_thread(UserService(request.app[STORE]).list)
    tokens = [t.public() for t in await asyncio.to_thread(TokenService(request.app[STORE]).list)]
    ctx: dict[str, Any] = {"created": None, "errors": [], "message": request.query.get("msg"), **extra}
    return render(request, "users.html", status=status, users=users, tokens=tokens, roles=ROLES, **ctx)


@page("admin", appliance=True)
async def users(request: web.Request) -> web.Response:
    return await _page(request)


@page("admin", form=True, appliance=True)
async def user_add(request: web.Request) -> web.StreamResponse:
    data = await request.post()
    name = _field(data, "name")
    try:
        await asyncio.to_thread(UserService(request.app[STORE]).add, name, str(data.get("password", "") or ""),
                                role=_field(data, "role"), tenant=_field(data, "tenant") or None)
    except ValidationError as exc:
        return await _page(request, status=400, errors=exc.issues)
    raise web.HTTPSeeOther("/users?msg=" + quote(f"Added user {name}."))


@page("admin", form=True, appliance=True)
async def user_password(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    await asyncio.to_thread(UserService(request.app[STORE]).set_password, name,
                            str((await request.post()).get("password", "") or ""))
    raise web.HTTPSeeOther("/users?msg=" + quote(f"Password of {name} changed; their sessions ended."))


@page("admin", form=True, appliance=True)
async def user_delete(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name == request[USER].name:
        raise ValidationError([Issue("name", "you cannot delete the user you are logged in as")])
    await asyncio.to_thread(UserService(request.app[STORE]).delete, name)
    raise web.HTTPSeeOther("/users?msg=" + quote(f"Deleted user {name}."))


@page("admin", form=True, appliance=True)
async def token_create(request: web.Request) -> web.StreamResponse:
    data = await request.post()
    name, expires = _field(data, "name"), _field(data, "expires") or "90d"
    try:
        ttl = None if expires == "never" else parse_ttl(expires)
        token = await asyncio.to_thread(TokenService(request.app[STORE]).create, name, role=_field(data, "role"),
                                        tenant=_field(data, "tenant") or None, ttl=ttl, owner=request[USER].key)
    except ValidationError as exc:
        return await _page(request, status=400, errors=exc.issues)
    # The only time the token is visible: this answer (no-store), never a redirect or a stored message.
    return await _page(request, status=201, created={"name": name, "token": token})


@page("admin", form=True, appliance=True)
async def token_revoke(request: web.Request) -> web.StreamResponse:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 16:
        raise ValidationError([Issue("id", f"{raw[:20]!r} is not a token id")])
    info = await asyncio.to_thread(TokenService(request.app[STORE]).revoke, _field(await request.post(), "name"),
                                   token_id=int(raw))
    raise web.HTTPSeeOther("/users?msg=" + quote(f"Revoked token {info.name} (id {info.id})."))


def setup_access_pages(app: web.Application) -> None:
    r = app.router
    r.add_get("/users", users)
    r.add_post("/users", user_add)
    r.add_post("/users/{name}/password", user_password)
    r.add_post("/users/{name}/delete", user_delete)
    r.add_post("/tokens", token_create)
    r.add_post("/tokens/{id}/revoke", token_revoke)
