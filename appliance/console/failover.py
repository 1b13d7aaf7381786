"""The console's failover page: domains with their spares and queue, recent failovers with
their timelines, blades waiting for an admin, and a blade's health history.

Reads go through the same view functions as the API (``appliance.api.routes.failover``),
so a tenant-scoped user sees here exactly what its token would: its own profiles and
failovers, no webhook, no spare by name. Confirming a fence and clearing a failed blade
are forms for appliance admins, CSRF-checked like every console form.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from appliance.api.keys import STORE
from appliance.api.routes.failover import available_spares, clear_failed_blade, domain_view, queue_view
from appliance.console.views import USER, page, render
from appliance.domain.failover import FailoverState
from appliance.services.blade_pools import BladePoolService
from appliance.services.failover import DomainInfo, FailoverInfo, FailoverService
from appliance.services.inventory import BladeFilter, Inventory
from appliance.store import Store

RECENT = 20
HEALTH_SHOWN = 100
_REPAIRABLE = ("failed", "fenced")


def _when(iso: str | None) -> tuple[str | None, datetime | None]:
    if not iso:
        return None, None
    at = datetime.fromisoformat(iso).astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], at


def _seconds(delta: float) -> str:
    return f"{delta:.3f} s" if delta < 120 else f"{delta / 60:.1f} min"


def failover_card(info: FailoverInfo) -> dict[str, Any]:
    """A failover with its timeline ready to show: each event's UTC time to the millisecond,
    and its time since detection (the number the failover target is stated in)."""
    data = info.public()
    start = info.detected_at
    events = []
    for e in info.timeline:
        text, at = _when(e.get("at"))
        events.append({"event": e.get("event", "?"), "at": e.get("at") or "", "when": text,
                       "offset": ("+" + _seconds((at - start).total_seconds())) if at else None,
                       "detail": e.get("detail") or ""})
    data["events"] = events
    data["took"] = _seconds((info.finished_at - start).total_seconds()) if info.finished_at else None
    return data


def _overview(store: Store, tenant: str | None, domain: str | None, open_only: bool) -> dict[str, Any]:
    svc = FailoverService(store)
    infos = svc.list_domains()
    spares_by_pool: dict[str, list[dict[str, Any]]] = {}
    domains = []
    for info in infos:
        spares: list[dict[str, Any]] = []
        if tenant is None:
            if info.spare_pool not in spares_by_pool:
                spares_by_pool[info.spare_pool] = available_spares(store, info.spare_pool)
            spares = spares_by_pool[info.spare_pool]
        domains.append({**domain_view(info, tenant),
                        "queue": queue_view(info.name, svc.spare_plan(info.name), spares, tenant)})
    failovers = [failover_card(f) for f in svc.list_failovers(domain=domain, tenant=tenant, open_only=open_only,
                                                              limit=RECENT)]
    _mark_move_back(failovers, infos)
    held = [failover_card(f) for f in svc.list_failovers(tenant=tenant, state=FailoverState.NEEDS_OPERATOR.value,
                                                         limit=100)]
    repair: list[dict[str, Any]] | None = None
    if tenant is None:   # blades are the appliance's; a tenant sees only those bound to it
        inv = Inventory(store)
        repair = [b for state in _REPAIRABLE for b in inv.page(BladeFilter(state=state), limit=500)[0]]
    pool_names = [p.name for p in BladePoolService(store).list()] if tenant is None else []
    return {"domains": domains, "failovers": failovers, "held": held, "repair": repair,
            "domain_names": [i.name for i in infos], "pool_names": pool_names}


def _mark_move_back(cards: list[dict[str, Any]], domains: list[DomainInfo]) -> None:
    """A finished drill whose profile still runs where the drill put it can move back: the
    newest failover of each profile only, and not when it is itself the move back (the drill
    before it went the other way)."""
    where = {(p.tenant, p.name): p.blade for d in domains for p in d.profiles if p.state == "active"}
    for i, card in enumerate(cards):     # newest first
        key = (card["tenant"], card["profile"])
        older = [c for c in cards[i + 1:] if (c["tenant"], c["profile"]) == key]
        newer = [c for c in cards[:i] if (c["tenant"], c["profile"]) == key]
        went_back = bool(older) and older[0]["drill"] and (older[0]["fromBlade"], older[0]["toBlade"]) == (
            card["toBlade"], card["fromBlade"])
        card["moveBack"] = (not newer and not went_back and card["drill"] and card["state"] == "succeeded"
                            and bool(card["fromBlade"]) and where.get(key) == card["toBlade"])


@page()
async def failover_page(request: web.Request) -> web.Response:
    domain = request.query.get("domain") or None
    open_only = request.query.get("open") == "on"
    data = await asyncio.to_thread(_overview, request.app[STORE], request[USER].tenant, domain, open_only)
    return render(request, "failover.html", message=request.query.get("msg"), domain=domain or "",
                  open_only=open_only, **data)


@page()
async def blade_health(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    store = request.app[STORE]
    await asyncio.to_thread(Inventory(store).check_visible, name, request[USER].tenant)
    entries = await asyncio.to_thread(FailoverService(store).health_history, name, limit=HEALTH_SHOWN)
    rows = [{**e.public(), "when": _when(e.public()["at"])[0]} for e in entries]
    return render(request, "blade_health.html", blade=name, entries=rows)


def _tenant_admin_refused(request: web.Request) -> web.Response | None:
    # page("admin") checks the role only; blades are the appliance's, so a tenant's admin may not.
    if request[USER].tenant is not None:
        return render(request, "error.html", status=403, title="Forbidden",
                      message="Blades belong to the appliance; a tenant-scoped admin cannot act on them.")
    return None


@page("admin", form=True)
async def confirm_fenced(request: web.Request) -> web.StreamResponse:
    refused = _tenant_admin_refused(request)
    if refused is not None:
        return refused
    name = request.match_info["name"]
    # The service records the console user as the one who confirmed, and audits it.
    info = await asyncio.to_thread(FailoverService(request.app[STORE]).confirm_fenced, name)
    msg = f"Blade {name} confirmed fenced; failover #{info.id} of {info.tenant}/{info.profile} goes on."
    raise web.HTTPSeeOther("/failover?msg=" + quote(msg))


@page("admin", form=True)
async def clear_failed(request: web.Request) -> web.StreamResponse:
    refused = _tenant_admin_refused(request)
    if refused is not None:
        return refused
    name = request.match_info["name"]
    await asyncio.to_thread(clear_failed_blade, request.app[STORE], name)
    raise web.HTTPSeeOther("/failover?msg=" + quote(f"Blade {name} is a spare again."))


def setup_failover_pages(app: web.Application) -> None:
    r = app.router
    r.add_get("/failover", failover_page)
    r.add_get("/failover/blades/{name}/health", blade_health)
    r.add_post("/failover/blades/{name}/confirm-fenced", confirm_fenced)
    r.add_post("/failover/blades/{name}/clear-failed", clear_failed)
