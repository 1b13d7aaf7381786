"""DR plans (/dr/plans), their runs (rehearse, activate, fail back: 202 with the job; report), and
the two calls a recovery site makes of its primary (fence, return), polled until done."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from appliance.api.keys import ENGINE, SETTINGS, STORE
from appliance.api.schemas import OBJ, obj
from appliance.api.spec import STR, Op, Param, body, caller, query, scope_of
from appliance.dr import primary, remote, runs
from appliance.dr.service import PlanService, RunInfo
from appliance.secrets import SecretBox
from appliance.sites.peer import PeerRefused, PeerUnreachable

YAML_TYPES = ("application/yaml", "text/yaml")
NAMEP = Param("name", {"type": "string", "maxLength": 63}, where="path", required=True)
RUN = obj(["id", "plan", "kind", "state"], id=STR, plan=STR, kind=STR, state=STR)
EMPTY = {"type": "object", "additionalProperties": False, "properties": {}}
ACTIVATE = {"type": "object", "additionalProperties": False, "properties": {
    "primaryLost": {"type": "boolean"}, "reason": {"type": "string", "maxLength": 1000}}}


async def list_plans(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(PlanService(request.app[STORE]).list, scope=scope_of(request))
    items = [i.public() for i in infos]
    return web.json_response({"items": items, "total": len(items)})


async def get_plan(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(PlanService(request.app[STORE]).get, request.match_info["name"],
                                   scope=scope_of(request))
    return web.json_response(info.public())


async def create_plan(request: web.Request) -> web.Response:
    data = body(request)
    text = json.dumps(data) if isinstance(data, dict | list) else data
    info = await asyncio.to_thread(PlanService(request.app[STORE]).create, text, source="body",
                                   replace=bool(query(request, "replace")), created_by=caller(request).who,
                                   scope=scope_of(request))
    resp = web.json_response(info.public(), status=201)
    resp.headers["Location"] = f"/api/v1/dr/plans/{info.name}"
    return resp


async def delete_plan(request: web.Request) -> web.Response:
    await asyncio.to_thread(PlanService(request.app[STORE]).delete, request.match_info["name"],
                            scope=scope_of(request))
    return web.Response(status=204)


def _accepted(request: web.Request, info: RunInfo) -> web.Response:
    engine = request.app.get(ENGINE)
    if engine is not None:
        engine.wake()
    resp = web.json_response(info.public(), status=202)
    if info.job_id:
        resp.headers["Location"] = f"/api/v1/jobs/{info.job_id}"
    return resp


def _starter(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        store = request.app[STORE]
        b = body(request)
        b = b if isinstance(b, dict) else {}
        lost, reason = bool(b.get("primaryLost")), b.get("reason")
        if kind == "activation" and not lost:
            box = await asyncio.to_thread(SecretBox, request.app[SETTINGS].secrets_key_path)
            await primary_reachable(store, box, name)
        info = await asyncio.to_thread(runs.submit, store, kind, name, created_by=caller(request).who,
                                       primary_lost=lost, reason=reason, scope=scope_of(request))
        return _accepted(request, info)
    return handler


async def primary_reachable(store: Any, box: Any, plan: str) -> None:
    """Conflict (saying to use --primary-lost) when the plan's primary does not answer its DR ping."""
    info = await asyncio.to_thread(PlanService(store).get, plan)
    if info.origin_site is None:
        return      # made here: runs.submit refuses it with the reason
    try:
        await remote.call(store, box, info.origin_site, remote.PING)
    except (PeerUnreachable, PeerRefused) as exc:
        raise runs.refuse_unreachable(info.origin_site, str(exc)) from None


async def report(request: web.Request) -> web.Response:
    svc = PlanService(request.app[STORE])
    limit = query(request, "limit") or 10
    name, scope = request.match_info["name"], scope_of(request)
    items = await asyncio.to_thread(svc.runs, name, limit=limit, kind=query(request, "kind"), scope=scope)
    last = await asyncio.to_thread(svc.last_success, name, scope=scope)
    return web.json_response({"items": [i.public() for i in items], "total": len(items),
                              "lastSuccessfulRehearsal": last.public() if last else None})


async def _site(request: web.Request) -> str:
    """The calling site, by the DR token it called with (never by what it says)."""
    from appliance.sites.service import SiteService

    box = await asyncio.to_thread(SecretBox, request.app[SETTINGS].secrets_key_path)
    svc = SiteService(request.app[STORE], box)
    info = await asyncio.to_thread(svc.by_token, caller(request).id)
    return info.name


async def fence(request: web.Request) -> web.Response:
    out = await asyncio.to_thread(primary.fence, request.app[STORE], request.match_info["name"],
                                  await _site(request), created_by=caller(request).who)
    engine = request.app.get(ENGINE)
    if engine is not None:
        engine.wake()
    return web.json_response(out)


async def give_back(request: web.Request) -> web.Response:
    out = await asyncio.to_thread(primary.give_back, request.app[STORE], request.match_info["name"],
                                  await _site(request), created_by=caller(request).who)
    engine = request.app.get(ENGINE)
    if engine is not None:
        engine.wake()
    return web.json_response(out)


async def ping(request: web.Request) -> web.Response:
    site = await asyncio.to_thread(remote.local_site, request.app[STORE])
    return web.json_response({"site": site, "ok": True})


RUN_RESP = {202: ("Accepted: the run and its job", RUN)}
OPS = [
    Op("GET", "/dr/plans", list_plans, "List DR plans", "dr", appliance_wide=True, responses={200: ("OK", OBJ)}),
    Op("POST", "/dr/plans", create_plan, "Create (or with replace=true update) a DR plan (YAML or JSON)", "dr",
       role="admin", appliance_wide=True, params=(Param("replace", {"type": "boolean"}),), body={"type": "object"},
       body_types=YAML_TYPES, responses={201: ("Created", OBJ)}),
    Op("GET", "/dr/plans/{name}", get_plan, "Show a DR plan with its profiles in recovery order", "dr",
       appliance_wide=True, params=(NAMEP,), responses={200: ("OK", OBJ)}),
    Op("DELETE", "/dr/plans/{name}", delete_plan, "Delete a DR plan (its run records stay)", "dr", role="admin",
       appliance_wide=True, params=(NAMEP,), responses={204: ("Deleted", OBJ)}),
    Op("POST", "/dr/plans/{name}/rehearse", _starter("rehearsal"), "Rehearse the plan here on its rehearsal VLANs "
       "and LUN copies, report RTO, tear down", "dr", role="admin", appliance_wide=True, params=(NAMEP,),
       body=None, body_required=False, responses=RUN_RESP),
    Op("POST", "/dr/plans/{name}/activate", _starter("activation"), "Activate the plan here: fence the primary "
       "(or declare it lost), take the lease, stamp the profiles", "dr", role="admin", appliance_wide=True,
       params=(NAMEP,), body=ACTIVATE, body_required=False, responses=RUN_RESP),
    Op("POST", "/dr/plans/{name}/failback", _starter("failback"), "Fail the plan back to its primary", "dr",
       role="admin", appliance_wide=True, params=(NAMEP,), body=None, body_required=False, responses=RUN_RESP),
    Op("GET", "/dr/plans/{name}/report", report, "The plan's runs here, newest first, and its last successful "
       "rehearsal", "dr", appliance_wide=True,
       params=(NAMEP, Param("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
               Param("kind", {"enum": ["rehearsal", "activation", "failback", "fence"]})),
       responses={200: ("OK", OBJ)}),
    Op("POST", "/dr/plans/{name}/fence", fence, "Recovery site → primary: fence the plan's profiles and hand their "
       "lease to the calling site (its DR token; idempotent: poll until fenced)", "dr", role="site",
       params=(NAMEP,), body=EMPTY, body_required=False, responses={200: ("The fence's state", OBJ)}),
    Op("POST", "/dr/plans/{name}/return", give_back, "Recovery site → primary: take the lease back and stamp the "
       "fenced profiles again (the calling site's DR token; idempotent: poll until returned)", "dr",
       role="site", params=(NAMEP,), body=EMPTY, body_required=False, responses={200: ("The return's state", OBJ)}),
    Op("GET", "/dr/ping", ping, "This site's name: a recovery site checks its primary answers (DR token)", "dr",
       role="site", responses={200: ("OK", OBJ)}),
]
