"""The one place errors become HTTP: RFC 9457 problem+json."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from appliance.drivers.errors import DriverError
from appliance.errors import AnvilError, Conflict, IdempotencyMismatch, NotFound, PoolExhausted, ValidationError

log = logging.getLogger(__name__)


def problem(status: int, title: str, detail: str, **extra: object) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return web.json_response(body, status=status, content_type="application/problem+json")


def to_problem(exc: AnvilError) -> web.Response:
    from appliance.api.offload import Busy
    from appliance.api.spec import Forbidden, UnsupportedMediaType
    from appliance.services.users import LoginThrottled
    from appliance.sites.records import RecordRefused

    if isinstance(exc, ValidationError):
        return problem(400, "Invalid input", str(exc),
                       errors=[{"path": i.path, "reason": i.reason, "line": i.line} for i in exc.issues])
    if isinstance(exc, RecordRefused):   # the sender resumes after lastApplied
        return problem(403 if exc.reason == "site" else 409, "Record refused", str(exc), reason=exc.reason,
                       lastApplied=exc.last_applied)
    if isinstance(exc, Forbidden):
        return problem(403, "Forbidden", str(exc))
    if isinstance(exc, NotFound):
        return problem(404, "Not found", str(exc))
    if isinstance(exc, Conflict | PoolExhausted):
        return problem(409, "Conflict", str(exc))
    if isinstance(exc, IdempotencyMismatch):
        return problem(422, "Idempotency key reused", str(exc))
    if isinstance(exc, UnsupportedMediaType):
        return problem(415, "Unsupported media type", str(exc), accepted=exc.accepted)
    if isinstance(exc, LoginThrottled):
        resp = problem(429, "Too many failed logins", str(exc))
        resp.headers["Retry-After"] = "30"
        return resp
    if isinstance(exc, Busy):
        resp = problem(503, "Busy", str(exc))
        resp.headers["Retry-After"] = "1"
        return resp
    if isinstance(exc, DriverError):
        return problem(502, "Hardware error", str(exc), retryable=exc.retryable)
    return problem(500, "Error", str(exc))


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except AnvilError as exc:
        return to_problem(exc)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith("/api/"):
            raise
        resp = problem(exc.status, exc.reason, exc.text or exc.reason)
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        if not request.path.startswith("/api/"):
            raise
        return problem(500, "Internal error", "an internal error occurred; see the appliance log")
