"""The one place errors become HTTP: RFC 9457 problem+json."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from appliance.drivers.errors import DriverError
from appliance.errors import AnvilError, Conflict, NotFound, PoolExhausted, ValidationError

log = logging.getLogger(__name__)


def problem(status: int, title: str, detail: str, **extra: object) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return web.json_response(body, status=status, content_type="application/problem+json")


def to_problem(exc: AnvilError) -> web.Response:
    if isinstance(exc, ValidationError):
        return problem(400, "Invalid input", str(exc),
                       errors=[{"path": i.path, "reason": i.reason, "line": i.line} for i in exc.issues])
    if isinstance(exc, NotFound):
        return problem(404, "Not found", str(exc))
    if isinstance(exc, Conflict | PoolExhausted):
        return problem(409, "Conflict", str(exc))
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
