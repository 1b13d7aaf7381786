"""Assign and release (202 with a job), and jobs."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from appliance.api.keys import ENGINE, PRINCIPAL, STORE
from appliance.errors import Issue, ValidationError
from appliance.services.jobs import JobInfo, JobService


def _tenant(request: web.Request, body: dict[str, Any]) -> str:
    principal = request[PRINCIPAL]
    asked = request.query.get("tenant") or body.get("tenant")
    if principal.tenant is not None:
        return str(principal.tenant)
    return str(asked or "default")


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except ValueError:
        raise ValidationError([Issue("", "the body is not JSON")]) from None
    if not isinstance(data, dict):
        raise ValidationError([Issue("", "the body must be a JSON object")])
    for key in ("blade", "pool", "tenant"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise ValidationError([Issue(key, "must be a string")])
    return data


def _accepted(request: web.Request, info: JobInfo) -> web.Response:
    engine = request.app.get(ENGINE)
    if engine is not None:
        engine.wake()
    resp = web.json_response(info.public(), status=202)
    resp.headers["Location"] = f"/api/v1/jobs/{info.id}"
    return resp


async def assign(request: web.Request) -> web.Response:
    body = await _body(request)
    svc = JobService(request.app[STORE])
    info = await asyncio.to_thread(
        svc.submit_assign, request.match_info["name"], tenant=_tenant(request, body), blade=body.get("blade"),
        pool=body.get("pool"), idempotency_key=request.headers.get("Idempotency-Key"),
        created_by=f"token:{request[PRINCIPAL].token_name}")
    return _accepted(request, info)


async def release(request: web.Request) -> web.Response:
    body = await _body(request)
    svc = JobService(request.app[STORE])
    info = await asyncio.to_thread(
        svc.submit_release, request.match_info["name"], tenant=_tenant(request, body),
        idempotency_key=request.headers.get("Idempotency-Key"), created_by=f"token:{request[PRINCIPAL].token_name}")
    return _accepted(request, info)


async def get_job(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(JobService(request.app[STORE]).get, request.match_info["id"])
    principal = request[PRINCIPAL]
    if principal.tenant is not None and info.tenant != principal.tenant:
        raise web.HTTPNotFound()
    return web.json_response(info.public())


async def list_jobs(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    tenant = principal.tenant or request.query.get("tenant")
    infos = await asyncio.to_thread(JobService(request.app[STORE]).list, state=request.query.get("state"),
                                    tenant=tenant)
    return web.json_response({"items": [i.public() for i in infos]})


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/profiles/{name}/assign", assign)
    app.router.add_post("/api/v1/profiles/{name}/release", release)
    app.router.add_get("/api/v1/jobs", list_jobs)
    app.router.add_get("/api/v1/jobs/{id}", get_job)
