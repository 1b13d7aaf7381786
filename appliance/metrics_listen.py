"""``/metrics`` on a listen of its own (``[metrics] listen``, and ``boot_listen`` for a boot role
alone): plain HTTP, no authentication, like node_exporter (DESIGN §8). The numbers say how busy
the appliance is, never a name, address or secret, and the default address is loopback; bind it
to a management address to let a Prometheus elsewhere scrape it.

Only ``GET /metrics`` answers (``/`` points there); a scrape reads the store (jobs by kind and
state), so the exposition is rendered on a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web

from appliance.api.hardening import app_runner
from appliance.errors import ListenError
from appliance.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)


def create_metrics_app(metrics: Metrics) -> web.Application:
    async def scrape(_request: web.Request) -> web.Response:
        body = await asyncio.to_thread(metrics.render)
        # The exposition's media type carries a version parameter; aiohttp's content_type takes none.
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text="Anvil metrics: /metrics\n")

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/", index)
    return app


@dataclass(frozen=True, slots=True)
class MetricsListen:
    """Which setting a listen comes from, for the error that names it."""

    address: str
    key: str        # metrics.listen, metrics.boot_listen
    env: str        # ANVIL_METRICS_LISTEN, ANVIL_METRICS_BOOT_LISTEN
    explicit: bool  # given in the file or environment (else the default, which may be taken)


async def start_metrics_listen(metrics: Metrics, where: MetricsListen) -> web.AppRunner | None:
    """Serve ``metrics`` on ``where.address``; None when it is empty. The default address being taken
    (another appliance on this machine) costs only the separate listen, with a warning; an address
    the configuration gives must be served, or ListenError."""
    if not where.address:
        return None
    host, _, port = where.address.rpartition(":")
    runner = app_runner(create_metrics_app(metrics))
    await runner.setup()
    try:
        await web.TCPSite(runner, host.strip("[]"), int(port)).start()
    except OSError as exc:
        await runner.cleanup()
        err = ListenError("metrics", where.address, where.key, where.env, exc)
        if where.explicit:
            raise err from None
        log.warning("%s; serving no separate /metrics", err)
        return None
    return runner


__all__ = ["MetricsListen", "create_metrics_app", "start_metrics_listen"]
