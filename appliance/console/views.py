"""Console pages and form handlers; thin over the services, like the API."""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web

from appliance import __version__
from appliance.api.keys import ENGINE, HARDWARE, OFFLOAD, SESSION_COOKIE, SETTINGS, STORE, USERS
from appliance.domain.profile import to_xml, to_yaml
from appliance.drivers.errors import DriverError
from appliance.drivers.protocols import PowerAction
from appliance.errors import AnvilError, Conflict, Issue, NotFound, ValidationError
from appliance.secrets import SecretBox
from appliance.services.audit import AuditFilter, AuditService, record_action
from appliance.services.blades import BladeService
from appliance.services.inventory import SORTS, BladeFilter, Inventory, age_text, check_sort
from appliance.services.jobs import JobService, duration_text
from appliance.services.placement import NO_SPARE, explain
from appliance.services.profiles import PROFILE, PROFILE_SORTS, ProfileService
from appliance.services.scope import Scope
from appliance.services.users import AddressThrottle, LoginThrottled, Principal
from appliance.store.audit import Actor, acting_as
from appliance.store.migrate import HEAD as SCHEMA

HERE = Path(__file__).resolve().parent
LOGIN_CSRF = "anvil_login_csrf"
JINJA = web.AppKey("console_jinja", jinja2.Environment)
THROTTLE = web.AppKey("console_throttle", AddressThrottle)
USER = web.RequestKey("console_user", Principal)
CSRF_TOKEN = web.RequestKey("console_csrf", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_OFFSET = 10**9      # the API's own bound on audit offsets


# -- helpers -----------------------------------------------------------------------

def render(request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
    env = request.app[JINJA]
    user = request.get(USER)
    html = env.get_template(template).render(
        user=user, csrf=request.get(CSRF_TOKEN, ""), path=request.path, version=__version__, schema=SCHEMA,
        can_operate=bool(user and user.allows("operator")),
        can_admin=bool(user and user.allows("admin") and user.tenant is None), **ctx)
    resp = web.Response(text=html, content_type="text/html", status=status)
    resp.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'")
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _actor(request: web.Request) -> Actor:
    return Actor(request[USER].who, f"console {request.remote or '?'}")


def scope(request: web.Request) -> Scope:
    """What the console user may see, for the tenant-aware look-ups (appliance.services.scope)."""
    user = request[USER]
    return Scope(user.tenant, user.key)


def page(role: str = "viewer", *, form: bool = False, appliance: bool = False) -> Callable[[Handler], Handler]:
    """A console page: a live session is required (else to /login); ``form`` also checks the CSRF token.
    ``appliance``: the appliance's own things (switches, users, pool and domain changes), refused to
    a tenant-scoped user whatever its role, as the API's appliance-wide operations are."""

    def wrap(fn: Handler) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            cookie = request.cookies.get(SESSION_COOKIE)
            got = await asyncio.to_thread(request.app[USERS].resolve_session, cookie) if cookie else None
            if got is None:
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs)}")
            request[USER], request[CSRF_TOKEN] = got
            if form:
                data = await _form(request)
                if data is None:
                    return render(request, "error.html", status=400, title="Invalid input",
                                  message="The form could not be read (malformed body).")
                if not hmac.compare_digest(str(data.get("csrf_token", "")), got[1]):
                    return render(request, "error.html", status=403, title="Forbidden",
                                  message="This form has expired or did not come from this console; reload and "
                                          "try again.")
            if not got[0].allows(role):
                return render(request, "error.html", status=403, title="Forbidden",
                              message=f"This needs the {role} role; you are {got[0].role}.")
            if appliance and got[0].tenant is not None:
                return render(request, "error.html", status=403, title="Forbidden",
                              message="This belongs to the appliance; a tenant-scoped user cannot use it.")
            try:
                with acting_as(_actor(request)):
                    return await fn(request)
            except NotFound as exc:
                return render(request, "error.html", status=404, title="Not found", message=str(exc))
            except ValidationError as exc:
                return render(request, "error.html", status=400, title="Invalid input",
                              message="; ".join(str(i) for i in exc.issues) or str(exc))
            except (AnvilError, DriverError) as exc:
                return render(request, "error.html", status=409, title="Not done", message=str(exc))

        return handler

    return wrap


async def _form(request: web.Request) -> Any:
    """The posted form, or None when aiohttp cannot read it (a multipart type without its
    boundary, bytes that are not text): a 400 page, never a traceback."""
    try:
        return await request.post()
    except (ValueError, UnicodeDecodeError, AssertionError):
        return None


def _safe_next(target: str | None) -> str:
    if not target:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc and target.startswith("/") else "/"


def _set_cookie(request: web.Request, resp: web.StreamResponse, name: str, value: str, max_age: int) -> None:
    resp.set_cookie(name, value, httponly=True, samesite="Strict", secure=request.secure, path="/",
                    max_age=max_age)


# -- login ------------------------------------------------------------------------

async def login_form(request: web.Request, *, error: str | None = None, status: int = 200,
                     username: str = "") -> web.Response:
    token = secrets.token_urlsafe(24)
    resp = render(request, "login.html", status=status, login_csrf=token, error=error, username=username,
                  next=_safe_next(request.query.get("next")))
    _set_cookie(request, resp, LOGIN_CSRF, token, 3600)
    return resp


async def login_get(request: web.Request) -> web.Response:
    return await login_form(request)


async def login_post(request: web.Request) -> web.StreamResponse:
    data = await _form(request)
    if data is None:
        return await login_form(request, error="The login form could not be read; try again.", status=400)
    cookie = request.cookies.get(LOGIN_CSRF, "")
    if not cookie or not hmac.compare_digest(str(data.get("csrf_token", "")), cookie):
        return await login_form(request, error="The login form expired; try again.", status=403)
    name, password = str(data.get("username", "")), str(data.get("password", ""))
    users = request.app[USERS]
    address = request.remote or "?"
    if request.app[THROTTLE].blocked(address):
        return await login_form(request, error="Too many failed logins from your address; wait a few minutes.",
                                status=429, username=name)
    # Guesses at this user from anywhere slow every login of it a little (bounded), and lock
    # out only the address that made them (appliance.services.users).
    await asyncio.sleep(await asyncio.to_thread(users.login_delay, name))
    try:
        principal = await asyncio.to_thread(users.authenticate, name, password, source=address)
    except LoginThrottled as exc:
        return await login_form(request, error=f"Too many failed logins from your address: locked until "
                                f"{exc.until:%H:%M:%S} UTC.", status=429, username=name)
    if principal is None:
        request.app[THROTTLE].failed(address)
        return await login_form(request, error="Wrong user name or password.", status=401, username=name)
    session, _csrf = await asyncio.to_thread(users.open_session, principal.name)
    resp = web.HTTPSeeOther(_safe_next(str(data.get("next", "/"))))
    _set_cookie(request, resp, SESSION_COOKIE, session, 12 * 3600)
    resp.del_cookie(LOGIN_CSRF, path="/")
    raise resp


@page(form=True)
async def logout(request: web.Request) -> web.StreamResponse:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await asyncio.to_thread(request.app[USERS].close_session, cookie)
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp


# -- dashboard and blades ----------------------------------------------------------

@page()
async def dashboard(request: web.Request) -> web.Response:
    inv = Inventory(request.app[STORE])
    tenant = request[USER].tenant
    capacity = await asyncio.to_thread(inv.capacity, tenant)
    rack = await asyncio.to_thread(inv.rack, tenant)
    return render(request, "dashboard.html", capacity=capacity, rack=rack, age=age_text)


PAGE_SIZE = 50


def _offset(request: web.Request) -> int:
    raw = request.query.get("offset", "0") or "0"
    if not raw.isdigit() or int(raw) > MAX_OFFSET:
        raise ValidationError([Issue("offset", f"{raw[:40]!r} is not a whole number from 0 to {MAX_OFFSET:,}")])
    return int(raw)


@page()
async def blades(request: web.Request) -> web.Response:
    q = request.query
    sort = q.get("sort") or "name"
    f = BladeFilter(state=q.get("state") or None, chassis=q.get("chassis") or None, search=q.get("q") or None,
                    tenant=request[USER].tenant)
    offset = _offset(request)
    inv = Inventory(request.app[STORE])
    items, _nxt, total = await asyncio.to_thread(inv.page, f, limit=PAGE_SIZE, sort=check_sort(sort), offset=offset)
    counts = (await asyncio.to_thread(inv.capacity, request[USER].tenant))["byState"]
    return render(request, "blades.html", blades=items, total=total, offset=offset, page_size=PAGE_SIZE,
                  q=q, sort=sort, sorts=SORTS, counts=counts, state=f.state or "", age=age_text)


def _blade_detail(request: web.Request, name: str) -> dict[str, Any]:
    inv = Inventory(request.app[STORE])
    inv.check_visible(name, request[USER].tenant)
    info = BladeService(request.app[STORE], SecretBox(request.app[SETTINGS].secrets_key_path)).get(name).public()
    info["profile"] = inv.bound_profile(name)
    info["sample"] = inv.health_of(name)
    return info


@page()
async def blade(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(_blade_detail, request, request.match_info["name"])
    return render(request, "blade.html", blade=info, message=request.query.get("msg"), age=age_text)


@page("operator", form=True)
async def blade_power(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    await asyncio.to_thread(Inventory(request.app[STORE]).check_visible, name, request[USER].tenant)
    raw = str((await request.post()).get("action", ""))
    try:
        action = PowerAction(raw)
    except ValueError:
        return render(request, "error.html", status=400, title="Invalid input",
                      message=f"action: {raw[:40]!r} is not a power action "
                              f"({', '.join(a.value for a in PowerAction)})")
    driver, bmc = await asyncio.to_thread(request.app[HARDWARE].bmc, name)
    await driver.set_power(bmc, action)
    await asyncio.to_thread(record_action, request.app[STORE], action="power", resource="blade", name=name,
                            after={"action": str(action)})
    raise web.HTTPSeeOther(f"/blades/{quote(name)}?msg=" + quote(f"power {action} sent"))


# -- profiles ------------------------------------------------------------------------

async def _profile_list(request: web.Request) -> dict[str, Any]:
    """The profiles page's list: searched, filtered by state, sorted, with counts by state."""
    q = request.query
    sort = q.get("sort") or "tenant"
    svc = ProfileService(request.app[STORE])
    every = await asyncio.to_thread(svc.list, kind=PROFILE, scope=scope(request), sort=sort)
    state, search = q.get("state") or None, (q.get("q") or "").lower()
    shown = [i for i in every if (not state or i.state == state)
             and (not search or any(search in (v or "") for v in (i.name, i.tenant, i.state, i.blade)))]
    counts: dict[str, int] = {}
    for i in every:
        counts[i.state] = counts.get(i.state, 0) + 1
    return {"profiles": shown, "total": len(every), "counts": counts, "q": q, "sort": sort,
            "sorts": PROFILE_SORTS, "state": state or "", "message": q.get("msg")}


@page()
async def profiles(request: web.Request) -> web.Response:
    return render(request, "profiles.html", text="", errors=[], lines=[], **await _profile_list(request))


def _annotated(text: str, exc: ValidationError) -> list[dict[str, Any]]:
    by_line: dict[int, list[str]] = {}
    for issue in exc.issues:
        by_line.setdefault(issue.line or 0, []).append(f"{issue.path}: {issue.reason}" if issue.path else issue.reason)
    return [{"n": i, "text": line, "errors": by_line.get(i, [])} for i, line in enumerate(text.splitlines(), 1)]


@page("operator", form=True)
async def profile_import(request: web.Request) -> web.StreamResponse:
    data = await request.post()
    upload = data.get("file")
    text = str(data.get("document", "") or "")
    if isinstance(upload, web.FileField) and upload.filename:
        text = upload.file.read(1024 * 1024 + 1).decode("utf-8", errors="replace")
    svc = ProfileService(request.app[STORE])
    user = request[USER]
    try:
        profile = await request.app[OFFLOAD].run(svc.parse, text, source="document",
                                                 parking_vlan=request.app[SETTINGS].network.parking_vlan)
        if user.tenant is not None and profile.metadata.tenant != user.tenant:
            raise ValidationError([Issue("metadata.tenant", f"you may import profiles of tenant {user.tenant!r} only")],
                                  source="document")
        info = await asyncio.to_thread(svc.save, profile, replace=data.get("replace") == "on", source="document")
    except ValidationError as exc:
        return render(request, "profiles.html", status=400, text=text, errors=exc.issues,
                      lines=_annotated(text, exc), **await _profile_list(request))
    if info.kind != PROFILE:
        raise web.HTTPSeeOther(f"/templates/{quote(info.tenant)}/{quote(info.name)}")
    warned = "?warn=" + quote(" ".join(info.warnings)) if info.warnings else ""
    raise web.HTTPSeeOther(f"/profiles/{quote(info.tenant)}/{quote(info.name)}{warned}")


def _profile(request: web.Request) -> Any:
    tenant = request.match_info["tenant"]
    if not scope(request).sees(tenant):
        # The page names a tenant: another tenant's is "not found", exactly as a missing one.
        raise NotFound("profile", request.match_info["name"], tenant=tenant)
    return ProfileService(request.app[STORE]).get(PROFILE, tenant, request.match_info["name"], scope=scope(request))


@page()
async def profile(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(_profile, request)
    fmt = "xml" if request.query.get("format") == "xml" else "yaml"
    text = to_xml(info.profile) if fmt == "xml" else to_yaml(info.profile)
    form = None
    if request[USER].allows("operator") and info.state == "unassigned":
        form = await asyncio.to_thread(_assign_form, request, info)
    jobs = [j for j in await asyncio.to_thread(JobService(request.app[STORE]).list, tenant=info.tenant, limit=200)
            if j.subject == f"profile {info.tenant}/{info.name}"][:5]
    bound = await asyncio.to_thread(Inventory(request.app[STORE]).blade_of, info.tenant, info.name)
    return render(request, "profile.html", info=info, text=text, fmt=fmt, form=form, jobs=jobs, bound=bound,
                  warning=request.query.get("warn"))


def _assign_form(request: web.Request, info: Any) -> Any:
    from appliance.console.assign import assign_form

    facts = {}
    if request[USER].tenant is None:
        facts = {b["name"]: b for b in Inventory(request.app[STORE]).page(BladeFilter(), limit=100_000)[0]}
    return assign_form(request.app[STORE], info, scope(request), facts)


@page()
async def profile_export(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(_profile, request)
    fmt = "xml" if request.query.get("format") == "xml" else "yaml"
    text = to_xml(info.profile) if fmt == "xml" else to_yaml(info.profile)
    resp = web.Response(text=text, content_type=f"application/{fmt}")
    resp.headers["Content-Disposition"] = f'attachment; filename="{info.name}.{fmt}"'
    return resp


@page("operator", form=True)
async def profile_assign(request: web.Request) -> web.StreamResponse:
    await asyncio.to_thread(_profile, request)
    data = await request.post()
    target = str(data.get("target", ""))
    blade_name = target[len("blade:"):] if target.startswith("blade:") else None
    if blade_name and request[USER].tenant is not None:
        return render(request, "error.html", status=403, title="Forbidden",
                      message="A tenant-scoped user chooses a blade pool, not a blade.")
    pool = target[len("pool:"):] if target.startswith("pool:") else None
    jobs = JobService(request.app[STORE])
    # The form offers only what fits; a stale page (the blade taken meanwhile) is told so here,
    # before a job is made to fail. A tenant hears the reason without the appliance's blades.
    pl = await asyncio.to_thread(jobs.dry_run, request.match_info["name"], tenant=request.match_info["tenant"],
                                 blade=blade_name, pool=pool, scope=scope(request))
    if pl.best is None:
        raise Conflict(explain(pl) if request[USER].tenant is None else NO_SPARE)
    info = await asyncio.to_thread(jobs.submit_assign, request.match_info["name"],
                                   tenant=request.match_info["tenant"], blade=blade_name, pool=pool,
                                   created_by=request[USER].who, scope=scope(request))
    _wake(request)
    raise web.HTTPSeeOther(f"/jobs/{info.id}")


@page("operator", form=True)
async def profile_release(request: web.Request) -> web.StreamResponse:
    await asyncio.to_thread(_profile, request)
    info = await asyncio.to_thread(JobService(request.app[STORE]).submit_release, request.match_info["name"],
                                   tenant=request.match_info["tenant"], created_by=request[USER].who,
                                   scope=scope(request))
    _wake(request)
    raise web.HTTPSeeOther(f"/jobs/{info.id}")


def _wake(request: web.Request) -> None:
    engine = request.app.get(ENGINE)
    if engine is not None:
        engine.wake()


# -- jobs and audit ------------------------------------------------------------------

JOB_KINDS = ("stamp", "unstamp", "failover", "host-stamp", "host-release")
JOB_STATES = ("pending", "running", "waiting", "succeeded", "failed", "rolling_back", "rolled_back", "cancelled")


@page()
async def jobs(request: web.Request) -> web.Response:
    q = request.query
    f = {k: (q.get(k) or "").strip()[:127] or None for k in ("state", "kind", "profile", "blade")}
    infos = await asyncio.to_thread(JobService(request.app[STORE]).list, limit=100, scope=scope(request), **f)
    return render(request, "jobs.html", jobs=infos, q=q, kinds=JOB_KINDS, states=JOB_STATES, took=duration_text)


@page()
async def job(request: web.Request) -> web.Response:
    info = await asyncio.to_thread(JobService(request.app[STORE]).get, request.match_info["id"], scope=scope(request))
    return render(request, "job.html", job=info, public=info.public())


@page()
async def audit(request: web.Request) -> web.Response:
    q = request.query
    f = AuditFilter(tenant=request[USER].tenant, resource=q.get("resource") or None, name=q.get("name") or None,
                    who=q.get("who") or None, action=q.get("action") or None)
    raw = q.get("offset", "0") or "0"
    if not raw.isdigit() or int(raw) > MAX_OFFSET:
        return render(request, "error.html", status=400, title="Invalid input",
                      message=f"offset: {raw[:40]!r} is not a whole number from 0 to {MAX_OFFSET:,}")
    offset = int(raw)
    entries, total = await asyncio.to_thread(AuditService(request.app[STORE]).list, f, limit=50, offset=offset)
    return render(request, "audit.html", entries=entries, total=total, offset=offset, q=q)


def setup_console(app: web.Application) -> None:
    app[JINJA] = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    app[THROTTLE] = AddressThrottle()
    r = app.router
    r.add_static("/static/", HERE / "static", name="static")
    r.add_get("/login", login_get)
    r.add_post("/login", login_post)
    r.add_post("/logout", logout)
    r.add_get("/", dashboard)
    r.add_get("/blades", blades)
    r.add_get("/blades/{name}", blade)
    r.add_post("/blades/{name}/power", blade_power)
    r.add_get("/profiles", profiles)
    r.add_post("/profiles", profile_import)
    r.add_get("/profiles/{tenant}/{name}", profile)
    r.add_get("/profiles/{tenant}/{name}/export", profile_export)
    r.add_post("/profiles/{tenant}/{name}/assign", profile_assign)
    r.add_post("/profiles/{tenant}/{name}/release", profile_release)
    r.add_get("/jobs", jobs)
    r.add_get("/jobs/{id}", job)
    r.add_get("/audit", audit)

    # Imported late: they build on this module.
    from appliance.console.access import setup_access_pages
    from appliance.console.capacity import setup_capacity_pages
    from appliance.console.discovered import setup_discovered_pages
    from appliance.console.domains import setup_domain_pages
    from appliance.console.failover import setup_failover_pages
    from appliance.console.host_pools import setup_host_pool_pages
    from appliance.console.pools import setup_pool_pages
    from appliance.console.racks import setup_rack_pages
    from appliance.console.sites import setup_site_pages
    from appliance.console.switches import setup_switch_pages
    from appliance.console.template_pages import setup_template_pages

    setup_failover_pages(app)
    setup_domain_pages(app)
    setup_pool_pages(app)
    setup_template_pages(app)
    setup_switch_pages(app)
    setup_rack_pages(app)
    setup_access_pages(app)
    setup_discovered_pages(app)
    setup_capacity_pages(app)
    setup_host_pool_pages(app)
    setup_site_pages(app)
