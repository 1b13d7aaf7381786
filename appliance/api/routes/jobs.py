"""Assign and release (202 with a job), jobs, and a job's events as server-sent events."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from appliance.api import schemas as sc
from appliance.api.auth import still_authorized
from appliance.api.keys import ENGINE, STORE, WRITES
from appliance.api.spec import Forbidden, Op, Param, body, caller, query, scope_of
from appliance.services.jobs import JobInfo, JobService

SSE_POLL = 0.3
SSE_KEEPALIVE = 15.0
SSE_RECHECK = 5.0       # seconds between checks that the stream's token or session is still valid


def _accepted(request: web.Request, info: JobInfo) -> web.Response:
    engine = request.app.get(ENGINE)
    if engine is not None:
        engine.wake()
    resp = web.json_response(info.public(), status=202)
    resp.headers["Location"] = f"/api/v1/jobs/{info.id}"
    return resp


async def assign(request: web.Request) -> web.Response:
    b = body(request) or {}
    if b.get("blade") and caller(request).tenant is not None:
        raise Forbidden("a tenant-scoped caller chooses a blade pool, not a blade")
    svc = JobService(request.app[STORE])
    info = await request.app[WRITES].run(
        svc.submit_assign, request.match_info["name"], tenant=b.get("tenant"), blade=b.get("blade"),
        pool=b.get("pool"), idempotency_key=request.headers.get("Idempotency-Key"), created_by=caller(request).who,
        scope=scope_of(request))
    return _accepted(request, info)


async def release(request: web.Request) -> web.Response:
    b = body(request) or {}
    svc = JobService(request.app[STORE])
    info = await request.app[WRITES].run(
        svc.submit_release, request.match_info["name"], tenant=b.get("tenant"),
        idempotency_key=request.headers.get("Idempotency-Key"), created_by=caller(request).who,
        scope=scope_of(request))
    return _accepted(request, info)


async def _job(request: web.Request) -> JobInfo:
    return await asyncio.to_thread(JobService(request.app[STORE]).get, request.match_info["id"],
                                   scope=scope_of(request))


async def get_job(request: web.Request) -> web.Response:
    return web.json_response((await _job(request)).public())


async def list_jobs(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(JobService(request.app[STORE]).list, state=query(request, "state"),
                                    tenant=query(request, "tenant"), limit=query(request, "limit") or 100,
                                    scope=scope_of(request), kind=query(request, "kind"),
                                    profile=query(request, "profile"), blade=query(request, "blade"))
    return web.json_response({"items": [i.public() for i in infos], "total": len(infos)})


async def events(request: web.Request) -> web.StreamResponse:
    """Each job event as ``event: KIND`` with JSON data, then ``event: job`` with the job's state
    whenever it changes, and ``event: end`` once the job is over. Resumes after Last-Event-ID.
    The stream also ends (``event: end`` with ``unauthorized``) once the caller's token is revoked
    or expires, or its console session ends."""
    info = await _job(request)
    svc = JobService(request.app[STORE])
    after = query(request, "after") or 0
    last_id = request.headers.get("Last-Event-ID", "")
    if last_id.isdigit():
        after = int(last_id)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    last_sent, last_state, checked = loop.time(), "", loop.time()
    while True:
        if loop.time() - checked >= SSE_RECHECK:
            checked = loop.time()
            if not await still_authorized(request):
                await resp.write(b'event: end\ndata: {"state": "unauthorized"}\n\n')
                break
        for ev in await asyncio.to_thread(svc.events, info.id, after):
            await resp.write(f"id: {ev['id']}\nevent: {ev['kind']}\ndata: {json.dumps(ev)}\n\n".encode())
            after = ev["id"]
        info = await asyncio.to_thread(svc.get, info.id)
        public = info.public()
        state = json.dumps([public["state"], public["progress"]])
        if state != last_state:
            await resp.write(f"event: job\ndata: {json.dumps(public)}\n\n".encode())
            last_state, last_sent = state, loop.time()
        if info.final:
            await resp.write(f"event: end\ndata: {json.dumps({'state': info.state})}\n\n".encode())
            break
        if loop.time() - last_sent > SSE_KEEPALIVE:
            await resp.write(b": keep-alive\n\n")
            last_sent = loop.time()
        await asyncio.sleep(SSE_POLL)
    await resp.write_eof()
    return resp


NAMEP = Param("name", {"type": "string", "minLength": 1, "maxLength": 63}, "path", True)
IDP = Param("id", {"type": "string", "minLength": 1, "maxLength": 36}, "path", True)
IDEM = Param("Idempotency-Key", {"type": "string", "minLength": 1, "maxLength": 128}, "header",
             description="submitting again with the same key returns the same job")
OPS = [
    Op("POST", "/profiles/{name}/assign", assign, "Stamp a profile onto a blade (a job)", "profiles",
       role="operator", params=(NAMEP, IDEM), body=sc.ASSIGN, body_required=False,
       responses={202: ("Accepted: the job", sc.JOB)}),
    Op("POST", "/profiles/{name}/release", release, "Take a profile off its blade (a job)", "profiles",
       role="operator", params=(NAMEP, IDEM), body=sc.RELEASE, body_required=False,
       responses={202: ("Accepted: the job", sc.JOB)}),
    Op("GET", "/jobs", list_jobs, "Recent jobs, newest first", "jobs", params=(
        Param("state", {"type": "string", "maxLength": 32}), Param("tenant", {"type": "string", "maxLength": 63}),
        Param("kind", {"type": "string", "maxLength": 32}, description="stamp, unstamp, failover…"),
        Param("profile", {"type": "string", "maxLength": 127}, description="NAME or TENANT/NAME"),
        Param("blade", {"type": "string", "maxLength": 63}, description="the blade the job chose or was asked "
              "for"),
        Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000})),
       responses={200: ("OK", sc.page_of(sc.JOB))}),
    Op("GET", "/jobs/{id}", get_job, "Show a job with its steps", "jobs", params=(IDP,),
       responses={200: ("OK", sc.JOB)}),
    Op("GET", "/jobs/{id}/events", events, "A job's events as server-sent events, until it ends", "jobs",
       params=(IDP, Param("after", {"type": "integer", "minimum": 0, "maximum": 2**53})),
       responses={200: ("text/event-stream", {})}, stream="text/event-stream"),
]
