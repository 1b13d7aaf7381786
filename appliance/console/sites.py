"""The console's sites page: each paired site, whether it answers now (probed with its pinned
certificate and DR token), and replication both ways with its lag. An appliance admin's page."""

from __future__ import annotations

import asyncio

from aiohttp import web

from appliance.api.keys import SETTINGS, STORE
from appliance.api.routes.sites import probe
from appliance.console.views import page, render
from appliance.secrets import SecretBox
from appliance.sites.service import SiteService


@page("admin", appliance=True)
async def sites(request: web.Request) -> web.Response:
    svc = await asyncio.to_thread(SiteService, request.app[STORE],
                                  SecretBox(request.app[SETTINGS].secrets_key_path))
    infos = await asyncio.to_thread(svc.list)
    probes = await asyncio.gather(*(probe(svc, i) for i in infos))
    rows = [{**i.public(), "probe": p} for i, p in zip(infos, probes, strict=True)]
    return render(request, "sites.html", sites=rows, local=await asyncio.to_thread(svc.local_name))


def setup_site_pages(app: web.Application) -> None:
    app.router.add_get("/sites", sites)
