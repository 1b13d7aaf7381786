"""Audit (list, verify, export as JSON lines), users and tokens."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime

from aiohttp import web

from appliance.api import schemas as sc
from appliance.api.keys import STORE
from appliance.api.spec import Forbidden, Op, Param, body, caller, query, tenant_filter
from appliance.errors import Issue, ValidationError
from appliance.services.audit import AuditFilter, AuditService
from appliance.services.tokens import TokenService, parse_ttl
from appliance.services.users import UserService

RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


def _filter(request: web.Request) -> AuditFilter:
    def when(name: str) -> datetime | None:
        raw = query(request, name)
        if raw is None:
            return None
        try:
            if not RFC3339.fullmatch(raw):
                raise ValueError(raw)
            return datetime.fromisoformat(raw)
        except ValueError:
            raise ValidationError([Issue(f"query.{name}", f"{raw!r} is not an RFC 3339 date-time")]) from None

    return AuditFilter(tenant=tenant_filter(request), resource=query(request, "resource"),
                       name=query(request, "name"), who=query(request, "who"), action=query(request, "action"),
                       since=when("since"), until=when("until"))


async def list_audit(request: web.Request) -> web.Response:
    items, total = await asyncio.to_thread(AuditService(request.app[STORE]).list, _filter(request),
                                           limit=query(request, "limit") or 100, offset=query(request, "offset") or 0)
    return web.json_response({"items": items, "total": total})


async def export_audit(request: web.Request) -> web.StreamResponse:
    f = _filter(request)
    lines = await asyncio.to_thread(lambda: list(AuditService(request.app[STORE]).export(f)))
    return web.Response(text="".join(line + "\n" for line in lines), content_type="application/jsonl")


async def verify_audit(request: web.Request) -> web.Response:
    res = await asyncio.to_thread(AuditService(request.app[STORE]).verify)
    head = {"count": res.head.count, "lastId": res.head.last_id, "lastHash": res.head.last_hash} if res.head else None
    return web.json_response({"ok": res.ok, "checked": res.checked, "keyed": res.keyed, "firstBad": res.first_bad,
                              "reason": res.reason, "head": head})


async def list_users(request: web.Request) -> web.Response:
    items = [u.public() for u in await asyncio.to_thread(UserService(request.app[STORE]).list)]
    return web.json_response({"items": items, "total": len(items)})


async def add_user(request: web.Request) -> web.Response:
    b = body(request)
    info = await asyncio.to_thread(UserService(request.app[STORE]).add, b["name"], b["password"], role=b["role"],
                                   tenant=b.get("tenant"))
    return web.json_response(info.public(), status=201)


async def set_password(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    p = caller(request)
    if not (p.allows("admin") and p.tenant is None) and not (p.kind == "user" and p.name == name):
        raise Forbidden("only an appliance admin or the user may change a password")
    await asyncio.to_thread(UserService(request.app[STORE]).set_password, name, body(request)["password"])
    return web.Response(status=204)


async def delete_user(request: web.Request) -> web.Response:
    await asyncio.to_thread(UserService(request.app[STORE]).delete, request.match_info["name"])
    return web.Response(status=204)


async def list_tokens(request: web.Request) -> web.Response:
    items = [t.public() for t in await asyncio.to_thread(TokenService(request.app[STORE]).list)]
    return web.json_response({"items": items, "total": len(items)})


async def create_token(request: web.Request) -> web.Response:
    b = body(request)
    expires = b.get("expires", "90d")
    ttl = None if expires == "never" else parse_ttl(expires)
    owner = caller(request).key
    svc = TokenService(request.app[STORE])
    token = await asyncio.to_thread(svc.create, b["name"], role=b["role"], tenant=b.get("tenant"), ttl=ttl,
                                    owner=owner)
    info = [t for t in await asyncio.to_thread(svc.list) if t.name == b["name"] and t.owner == owner
            and t.revoked_at is None][-1]
    return web.json_response({"id": info.id, "name": b["name"], "token": token, "role": b["role"],
                              "tenant": b.get("tenant"),
                              "expiresAt": info.expires_at.isoformat() if info.expires_at else None}, status=201)


async def revoke_token(request: web.Request) -> web.Response:
    await asyncio.to_thread(TokenService(request.app[STORE]).revoke, request.match_info["name"],
                            token_id=query(request, "id"), owner=caller(request).key)
    return web.Response(status=204)


FILTERS = (Param("resource", {"type": "string", "maxLength": 32}), Param("name", {"type": "string", "maxLength": 255}),
           Param("who", {"type": "string", "maxLength": 128}), Param("action", {"type": "string", "maxLength": 16}),
           Param("tenant", {"type": "string", "maxLength": 63}),
           Param("since", {"type": "string", "format": "date-time"}),
           Param("until", {"type": "string", "format": "date-time"}))
NAMEP = Param("name", {"type": "string", "minLength": 1, "maxLength": 63}, "path", True)
OPS = [
    Op("GET", "/audit", list_audit, "The audit trail, newest first", "audit", params=(
        *FILTERS, Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
        Param("offset", {"type": "integer", "minimum": 0, "maximum": 10**9})),
       responses={200: ("OK", sc.page_of(sc.AUDIT))}),
    Op("GET", "/audit/export", export_audit, "The audit trail as JSON lines, oldest first", "audit", params=FILTERS,
       responses={200: ("JSON lines", {})}, stream="application/jsonl"),
    Op("GET", "/audit/verify", verify_audit, "Recompute the audit hash chain", "audit", role="admin",
       appliance_wide=True, responses={200: ("OK", sc.VERIFY)}),
    Op("GET", "/users", list_users, "List users", "users", role="admin", appliance_wide=True,
       responses={200: ("OK", sc.page_of(sc.USER))}),
    Op("POST", "/users", add_user, "Add a user", "users", role="admin", appliance_wide=True, body=sc.USER_NEW,
       responses={201: ("Added", sc.USER)}),
    Op("PUT", "/users/{name}/password", set_password, "Set a user's password", "users", params=(NAMEP,),
       body=sc.PASSWORD, responses={204: ("Changed", {})}),
    Op("DELETE", "/users/{name}", delete_user, "Delete a user", "users", role="admin", appliance_wide=True,
       params=(NAMEP,), responses={204: ("Deleted", {})}),
    Op("GET", "/tokens", list_tokens, "List API tokens (never their values)", "tokens", role="admin",
       appliance_wide=True, responses={200: ("OK", sc.page_of(sc.TOKEN))}),
    Op("POST", "/tokens", create_token, "Create a token; the reply is the only time it is shown", "tokens",
       role="admin", appliance_wide=True, body=sc.TOKEN_NEW, responses={201: ("Created", sc.TOKEN_CREATED)}),
    Op("DELETE", "/tokens/{name}", revoke_token, "Revoke a token (yours of that name, the only one of that name, "
       "or the one with ?id=)", "tokens", role="admin", appliance_wide=True,
       params=(NAMEP, Param("id", {"type": "integer", "minimum": 1, "maximum": 2**53})),
       responses={204: ("Revoked", {})}),
]
