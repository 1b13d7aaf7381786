"""Failover over HTTP: domains, the spare queue, failover records with their timelines,
blade health history, and the two admin actions (confirm a fence by hand, return a
repaired blade to the spares).

Secrets: a domain's webhook secret is write-only. It goes into the store encrypted and
comes back as ``***`` (set) or null, never as itself.

Tenancy: domains and blades belong to the appliance, failovers to their profile's
tenant. A tenant-scoped caller sees every domain (its profiles name one in
``spec.failover``) but only its own profiles in it and in the queue, never the
webhook, and no spare by name except one chosen for its own profile (as dry-run
shows the best blade but no one else's). The view functions here are shared with the
console, so both show a tenant the same thing.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from appliance.api.keys import SETTINGS, STORE
from appliance.api.schemas import INT, NINT, NSTR, obj, page_of
from appliance.api.spec import NAME, STR, Op, Param, body, caller, nullable, query, tenant_filter
from appliance.domain.failover import FailoverState, SparePlan
from appliance.drivers.protocols import Secret
from appliance.errors import Issue, ValidationError
from appliance.secrets import SecretBox
from appliance.services.audit import record_action
from appliance.services.blade_pools import DEFAULT_POOL, BladePoolService
from appliance.services.failover import DomainInfo, FailoverInfo, FailoverService
from appliance.services.inventory import BladeFilter, Inventory
from appliance.services.scope import Scope
from appliance.store import Store

MAX_ID = 2**53
SPARES_LISTED = 10_000      # the appliance's scale target: every blade may be a spare
# A chosen spare is not bound yet while its failover moves or boots, so it still reads as
# spare in the inventory; it is nobody else's.
_RESERVING = frozenset({FailoverState.MOVING.value, FailoverState.BOOTING.value})
_ID = re.compile(r"[0-9]{1,16}")


# -- views shared with the console -------------------------------------------------

def domain_view(info: DomainInfo, tenant: str | None) -> dict[str, Any]:
    """A domain as a caller may see it (see the module docstring for tenants)."""
    data = info.public()
    if tenant is not None:
        data["profiles"] = [p for p in data["profiles"] if p["tenant"] == tenant]
        data["webhookUrl"] = data["webhookSecret"] = None
    return data


def _split(key: str) -> tuple[str, str]:
    tenant, _, name = key.partition("/")
    return tenant, name


def _tenant_reason(reason: str) -> str:
    # Only the "no spare meets its requirements" reason names blades, each in the
    # parenthesis after it; a tenant keeps the sentence without the appliance's spares.
    return reason.split(" (", 1)[0]


def queue_view(domain: str, plan: SparePlan, spares: list[dict[str, Any]],
               tenant: str | None) -> dict[str, Any]:
    """Who moves to which spare now, who waits (in line, with why), and the spares left."""
    assignments = []
    for a in plan.assignments:
        t, name = _split(a.profile)
        if tenant is None or t == tenant:
            assignments.append({"tenant": t, "profile": name, "blade": a.blade})
    waiting = []
    for w in plan.waiting:
        t, name = _split(w.profile)
        if tenant is None or t == tenant:
            waiting.append({"tenant": t, "profile": name, "position": w.position,
                            "reason": w.reason if tenant is None else _tenant_reason(w.reason)})
    return {"domain": domain, "spares": spares if tenant is None else None, "assignments": assignments,
            "waiting": waiting}


def available_spares(store: Store, pool: str) -> list[dict[str, Any]]:
    """Blades of ``pool`` a failover could take now: spare, unbound, and not already chosen
    by a failover on its way (those read as spare until their binding is made)."""
    svc = FailoverService(store)
    reserved = {f.to_blade for f in svc.list_failovers(open_only=True, limit=SPARES_LISTED)
                if f.state in _RESERVING and f.to_blade}
    members = None if pool == DEFAULT_POOL else set(BladePoolService(store).get(pool).blades)
    items, _, _ = Inventory(store).page(BladeFilter(state="spare"), limit=SPARES_LISTED)
    return [{"name": b["name"], "cpus": b["cpus"], "memoryGiB": b["memoryGiB"], "nics": len(b["nics"])}
            for b in items
            if b["profile"] is None and b["name"] not in reserved and (members is None or b["name"] in members)]


def domain_queue(store: Store, name: str, tenant: str | None) -> dict[str, Any]:
    """:func:`queue_view` of a domain, read from the store (NotFound for an unknown domain)."""
    svc = FailoverService(store)
    plan = svc.spare_plan(name)
    spares = available_spares(store, svc.get_domain(name).spare_pool) if tenant is None else []
    return queue_view(name, plan, spares, tenant)


def clear_failed_blade(store: Store, name: str) -> None:
    """Return a repaired blade to the spares, audited as the current actor.

    ``FailoverService.clear_failed`` does not audit (``confirm_fenced`` does), so the
    entry is written here, after the change, as the API does for power actions.
    """
    FailoverService(store).clear_failed(name)
    record_action(store, action="clear-failed", resource="blade", name=name, after={"state": "spare"})


def visible_failover(store: Store, failover_id: int, tenant: str | None) -> FailoverInfo:
    """The failover, or NotFound when it is another tenant's (its existence is not revealed)."""
    return FailoverService(store).get_failover(failover_id, scope=Scope(tenant, ""))


# -- helpers -----------------------------------------------------------------------

def _service(request: web.Request, *, secrets: bool = False) -> FailoverService:
    box = SecretBox(request.app[SETTINGS].secrets_key_path) if secrets else None
    return FailoverService(request.app[STORE], box)


def _body_paths(exc: ValidationError) -> ValidationError:
    """The service names fields as the API does (camelCase); say they are in the body, as the
    schema check does, so every error of one request reads alike."""
    return ValidationError([Issue(f"body.{i.path}" if i.path else "body", i.reason, i.line) for i in exc.issues])


def _secret(b: dict[str, Any]) -> Secret | None:
    raw = b.get("webhookSecret")
    return Secret(raw) if raw is not None else None


def _failover_id(request: web.Request) -> int:
    # Path parameters are not checked by the route table, and a number beyond 64 bits
    # would reach the database: check it here, naming the parameter.
    raw = request.match_info["id"]
    if not _ID.fullmatch(raw) or not 1 <= int(raw) <= MAX_ID:
        raise ValidationError([Issue("path.id", f"{raw[:40]!r} is not a failover number (1-{MAX_ID})")])
    return int(raw)


async def _visible_blade(request: web.Request, name: str) -> None:
    await asyncio.to_thread(Inventory(request.app[STORE]).check_visible, name, caller(request).tenant)


# -- domains -----------------------------------------------------------------------

async def list_domains(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(_service(request).list_domains)
    tenant = caller(request).tenant
    items = [domain_view(i, tenant) for i in infos]
    return web.json_response({"items": items, "total": len(items)})


async def get_domain(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(_service(request).get_domain, request.match_info["name"])
    return web.json_response(domain_view(info, caller(request).tenant))


async def create_domain(request: web.Request) -> web.Response:
    b = body(request)
    svc = _service(request, secrets=True)
    try:
        info = await asyncio.to_thread(
            svc.create_domain, b["name"], spare_pool=b.get("sparePool", DEFAULT_POOL),
            description=b.get("description", ""), restart_attempts=b.get("restartAttempts", 1),
            webhook_url=b.get("webhookUrl"), webhook_secret=_secret(b), vm_hosts=b.get("vmHosts", ()))
    except ValidationError as exc:
        raise _body_paths(exc) from None
    resp = web.json_response(domain_view(info, None), status=201)
    resp.headers["Location"] = f"/api/v1/failover-domains/{info.name}"
    return resp


async def update_domain(request: web.Request) -> web.Response:
    b = body(request)
    svc = _service(request, secrets=True)
    # webhookUrl: a URL replaces it; null drops the webhook and its secret; absent keeps it.
    remove = "webhookUrl" in b and b["webhookUrl"] is None
    try:
        info = await asyncio.to_thread(
            svc.update_domain, request.match_info["name"], spare_pool=b.get("sparePool"),
            description=b.get("description"), restart_attempts=b.get("restartAttempts"),
            webhook_url=b.get("webhookUrl"), webhook_secret=_secret(b), remove_webhook=remove,
            vm_hosts=b.get("vmHosts"))
    except ValidationError as exc:
        raise _body_paths(exc) from None
    return web.json_response(domain_view(info, None))


async def delete_domain(request: web.Request) -> web.Response:
    await asyncio.to_thread(_service(request).delete_domain, request.match_info["name"])
    return web.Response(status=204)


async def get_queue(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(domain_queue, request.app[STORE], request.match_info["name"],
                                                     caller(request).tenant))


# -- failovers ---------------------------------------------------------------------

async def list_failovers(request: web.Request) -> web.Response:
    infos = await asyncio.to_thread(
        _service(request).list_failovers, domain=query(request, "domain"), tenant=tenant_filter(request),
        profile=query(request, "profile"), state=query(request, "state"), open_only=bool(query(request, "open")),
        limit=query(request, "limit") or 50)
    return web.json_response({"items": [i.public() for i in infos], "total": len(infos)})


async def get_failover(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(visible_failover, request.app[STORE], _failover_id(request),
                                   caller(request).tenant)
    return web.json_response(info.public())


# -- blades ------------------------------------------------------------------------

async def health_history(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await _visible_blade(request, name)
    entries = await asyncio.to_thread(_service(request).health_history, name, limit=query(request, "limit") or 50)
    return web.json_response({"items": [e.public() for e in entries], "total": len(entries)})


async def confirm_fenced(request: web.Request) -> web.Response:
    # The service records who confirmed (the request's actor) and audits it.
    info = await asyncio.to_thread(_service(request).confirm_fenced, request.match_info["name"])
    return web.json_response(info.public())


async def clear_failed(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await asyncio.to_thread(clear_failed_blade, request.app[STORE], name)
    return web.json_response({"blade": name, "state": "spare"})


# -- the route table -----------------------------------------------------------------

BOOL = {"type": "boolean"}
MASKED = {"type": ["string", "null"], "enum": ["***", None],
          "description": "*** when a webhook secret is set (the secret itself is never returned); null when "
                         "none is, or for a tenant-scoped caller"}
PROTECTED = obj(["tenant", "name", "priority", "policy", "state"], tenant=STR, name=STR, priority=INT, policy=STR,
                state=STR, blade=NSTR)
DOMAIN = obj(["name", "sparePool", "restartAttempts", "webhookUrl", "webhookSecret", "profiles"], name=STR,
             sparePool=STR, vmHosts={"type": "array", "items": STR}, description=STR, restartAttempts=INT,
             webhookUrl=NSTR, webhookSecret=MASKED,
             profiles={"type": "array", "items": PROTECTED}, createdAt=NSTR)
_DOMAIN_FIELDS: dict[str, Any] = {
    "sparePool": NAME, "description": {"type": "string", "maxLength": 255},
    "vmHosts": {"type": "array", "items": NAME, "maxItems": 32,
                "description": "VM hosts whose free slots are spares of last resort (after every physical one)"},
    "restartAttempts": {"type": "integer", "minimum": 0, "maximum": 10},
    "webhookUrl": nullable("string", minLength=1, maxLength=2048),
    "webhookSecret": {"type": "string", "minLength": 16, "maxLength": 512, "writeOnly": True,
                      "description": "HMAC key that signs the webhooks; stored encrypted, never returned"},
}
DOMAIN_NEW = {"type": "object", "additionalProperties": False, "required": ["name"],
              "properties": {"name": NAME, **_DOMAIN_FIELDS}}
DOMAIN_PATCH = {"type": "object", "additionalProperties": False, "properties": dict(_DOMAIN_FIELDS),
                "description": "Fields given change; webhookUrl null drops the webhook and its secret."}
SPARE = obj(["name"], name=STR, cpus=NINT, memoryGiB=NINT, nics=INT)
QUEUE = obj(["domain", "spares", "assignments", "waiting"], domain=STR,
            spares={"type": ["array", "null"], "items": SPARE,
                    "description": "blades the domain's failovers can take now; null for a tenant-scoped caller"},
            assignments={"type": "array", "items": obj(["tenant", "profile", "blade"], tenant=STR, profile=STR,
                                                       blade=STR)},
            waiting={"type": "array", "items": obj(["tenant", "profile", "position", "reason"], tenant=STR,
                                                   profile=STR, position=INT, reason=STR)})
EVENT = obj(["event", "at"], event=STR, at=NSTR, detail=NSTR)
FAILOVER = obj(["id", "tenant", "profile", "domain", "state", "timeline", "detectedAt"], id=INT, tenant=STR,
               profile=STR, domain=STR, policy=STR, priority=INT, drill=BOOL, fromBlade=NSTR, toBlade=NSTR,
               state=STR, reason=NSTR, fence=NSTR, timeline={"type": "array", "items": EVENT}, jobId=NSTR,
               detectedAt=STR, finishedAt=NSTR)
HEALTH_ENTRY = obj(["blade", "at", "source", "ok"], blade=STR, at=STR, source=STR, ok=BOOL, power=NSTR,
                   health=NSTR, verdict=NSTR, detail=STR)
CLEARED = obj(["blade", "state"], blade=STR, state=STR)

DOMAINP = Param("name", {"type": "string", "minLength": 1, "maxLength": 63}, "path", True)
BLADEP = Param("name", NAME, "path", True)
IDP = Param("id", {"type": "integer", "minimum": 1, "maximum": MAX_ID}, "path", True)
LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 1000})
OK = "OK"
OPS = [
    Op("GET", "/failover-domains", list_domains, "List failover domains with their protected profiles",
       "failover", responses={200: (OK, page_of(DOMAIN))}),
    Op("POST", "/failover-domains", create_domain, "Create a failover domain (the webhook secret is write-only)",
       "failover", role="admin", appliance_wide=True, body=DOMAIN_NEW, responses={201: ("Created", DOMAIN)}),
    Op("GET", "/failover-domains/{name}", get_domain, "Show a failover domain", "failover", params=(DOMAINP,),
       responses={200: (OK, DOMAIN)}),
    Op("PATCH", "/failover-domains/{name}", update_domain, "Change a failover domain; fields not given stay",
       "failover", role="admin", appliance_wide=True, params=(DOMAINP,), body=DOMAIN_PATCH,
       responses={200: (OK, DOMAIN)}),
    Op("DELETE", "/failover-domains/{name}", delete_domain, "Delete a failover domain no profile names and no "
       "open failover uses", "failover", role="admin", appliance_wide=True, params=(DOMAINP,),
       responses={204: ("Deleted", {})}),
    Op("GET", "/failover-domains/{name}/queue", get_queue, "Which fenced profile gets which spare now, and who "
       "waits (in line) and why", "failover", params=(DOMAINP,), responses={200: (OK, QUEUE)}),
    Op("GET", "/failovers", list_failovers, "Recent failovers with their timelines, newest first", "failover",
       params=(Param("domain", {"type": "string", "maxLength": 63}),
               Param("tenant", {"type": "string", "maxLength": 63}),
               Param("profile", {"type": "string", "maxLength": 63}),
               Param("state", {"enum": [s.value for s in FailoverState]}),
               Param("open", BOOL, description="only failovers still in progress"), LIMIT),
       responses={200: (OK, page_of(FAILOVER))}),
    Op("GET", "/failovers/{id}", get_failover, "Show a failover with its timeline", "failover", params=(IDP,),
       responses={200: (OK, FAILOVER)}),
    Op("GET", "/blades/{name}/health/history", health_history, "A blade's recorded health samples, newest first",
       "blades", params=(BLADEP, LIMIT), responses={200: (OK, page_of(HEALTH_ENTRY))}),
    Op("POST", "/blades/{name}/confirm-fenced", confirm_fenced, "Confirm by hand that a blade whose failover needs "
       "an operator is cut off, so the failover goes on", "failover", role="admin", appliance_wide=True,
       params=(BLADEP,), responses={200: ("Confirmed: the failover", FAILOVER)}),
    Op("POST", "/blades/{name}/clear-failed", clear_failed, "Return a repaired failed or fenced blade to the "
       "spares", "failover", role="admin", appliance_wide=True, params=(BLADEP,),
       responses={200: (OK, CLEARED)}),
]
