"""The console's template pages: templates in sight, one template's document and the
identity pools it draws from, and instantiating it into N profiles at once (all or none),
as ``anvil template instantiate`` does through the same service."""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import quote

from aiohttp import web

from appliance.api.keys import STORE
from appliance.console.views import page, render, scope
from appliance.domain.profile import pool_refs, to_yaml
from appliance.errors import Issue, NotFound, ValidationError
from appliance.services.pools import PoolService
from appliance.services.profiles import MAX_INSTANTIATE, TEMPLATE, ProfileService, numbered


@page()
async def templates(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(ProfileService(request.app[STORE]).list, kind=TEMPLATE, scope=scope(request))
    return render(request, "templates.html", templates=infos)


def _template(request: web.Request) -> Any:
    tenant = request.match_info["tenant"]
    if not scope(request).sees(tenant):
        raise NotFound("template", request.match_info["name"], tenant=tenant)
    return ProfileService(request.app[STORE]).get(TEMPLATE, tenant, request.match_info["name"], scope=scope(request))


def _pools_of(request: web.Request, info: Any) -> list[dict[str, Any]]:
    """The identity pools the template draws from, with what is left in each."""
    by_name = {p.name: p for p in PoolService(request.app[STORE]).list()}
    out: dict[str, dict[str, Any]] = {}
    for ref in pool_refs(info.profile):
        p = by_name.get(ref.pool)
        row = out.setdefault(ref.pool, {"name": ref.pool, "kind": str(ref.kind), "per": 0,
                                        "free": p.free if p else None})
        row["per"] += 1
    return list(out.values())


@page()
async def template(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(_template, request)
    pools = await asyncio.to_thread(_pools_of, request, info)
    return render(request, "template.html", info=info, text=to_yaml(info.profile), pools=pools,
                  max_n=MAX_INSTANTIATE, form={}, errors=[])


def names_from(data: Any) -> list[str]:
    """The names asked for: one per line (or comma-separated), or PREFIX with a COUNT."""
    listed = [n for n in re.split(r"[\s,]+", str(data.get("names", "") or "")) if n]
    prefix, count = str(data.get("prefix", "") or "").strip(), str(data.get("count", "") or "").strip()
    if listed and (prefix or count):
        raise ValidationError([Issue("names", "give names, or a prefix and a count, not both")])
    if listed:
        return listed
    if not count.isdigit() or not 1 <= int(count) <= MAX_INSTANTIATE:
        raise ValidationError([Issue("count", f"{count[:20]!r} is not a number from 1 to {MAX_INSTANTIATE}")])
    if not prefix:
        raise ValidationError([Issue("prefix", "give the names' prefix (kvm- makes kvm-01, kvm-02…)")])
    return numbered(prefix, int(count))


@page("operator", form=True)
async def instantiate(request: web.Request) -> web.StreamResponse:
    info = await asyncio.to_thread(_template, request)
    data = await request.post()
    try:
        names = names_from(data)
        made = await asyncio.to_thread(ProfileService(request.app[STORE]).instantiate_many, info.name, names,
                                       tenant=info.tenant, scope=scope(request))
    except ValidationError as exc:
        pools = await asyncio.to_thread(_pools_of, request, info)
        form = {k: str(data.get(k, "") or "") for k in ("names", "prefix", "count")}
        return render(request, "template.html", status=400, info=info, text=to_yaml(info.profile), pools=pools,
                      max_n=MAX_INSTANTIATE, form=form, errors=exc.issues)
    said = f"Created {len(made)} profile{'s' if len(made) != 1 else ''} from {info.tenant}/{info.name}: " + \
        ", ".join(p.name for p in made)
    raise web.HTTPSeeOther(f"/profiles?q={quote(names[0] if len(names) == 1 else '')}&msg=" + quote(said))


def setup_template_pages(app: web.Application) -> None:
    r = app.router
    r.add_get("/templates", templates)
    r.add_get("/templates/{tenant}/{name}", template)
    r.add_post("/templates/{tenant}/{name}/instantiate", instantiate)
