"""``/api/v1/metrics`` (and its alias ``/metrics``, where Prometheus looks by default): this
appliance's metrics in Prometheus' text format (appliance.metrics).

Authenticated like every API route: any token or console session with the viewer role, not
tenant-scoped (the numbers are the whole appliance's). A scrape reads the store (jobs by kind and
state), so the exposition is rendered on a worker thread.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from appliance.api.keys import METRICS
from appliance.api.spec import Op
from appliance.metrics import CONTENT_TYPE


async def get_metrics(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(request.app[METRICS].render)
    # The exposition's media type carries a version parameter; aiohttp's content_type takes none.
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


OPS = [
    Op("GET", "/metrics", get_metrics, "This appliance's metrics, in Prometheus' text format (also at /metrics)",
       "meta", appliance_wide=True, responses={200: ("Prometheus text exposition format 0.0.4", {})},
       response_types={200: ("text/plain",)}),
]
