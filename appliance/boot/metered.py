"""Boot requests counted by route and outcome, and timed (appliance.metrics), as an aiohttp
middleware on the boot app. The route is the matched resource's pattern (``/boot/images/{path}``),
never the request path: a path per image or per blade would make a series per request."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from appliance.metrics import Metrics, boot_outcome

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None:   # no route matched (404, 405)
        return "unmatched"
    resource = info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def boot_metrics(metrics: Metrics) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = _route(request)
        began = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            metrics.boot_requests.labels(route, boot_outcome(status)).inc()
            metrics.boot_seconds.labels(route).observe(time.perf_counter() - began)

    return middleware
