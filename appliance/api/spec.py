"""One route table: each :class:`Op` registers a route AND describes it in the OpenAPI document.

Because the router is filled from the same list the document is generated from,
the two cannot drift. An op states the least role that may call it and whether
it is an appliance-wide change (refused to tenant-scoped callers); its query
parameters and JSON body are checked against the schemas it publishes, so what
the document promises is what the server enforces.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator

from appliance import __version__, safejson
from appliance.api.keys import BODY, BODY_TYPE, PRINCIPAL, QUERY
from appliance.errors import AnvilError, Issue, ValidationError
from appliance.services.scope import Scope
from appliance.services.users import Principal

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PREFIX = "/api/v1"
JSON = "application/json"
PROBLEM = "application/problem+json"
SITE_ROLE = "site"     # a paired site's DR token (appliance.sites.service)


class Forbidden(AnvilError):
    """The caller's role or tenant scope does not allow this."""


def nullable(t: str, **extra: Any) -> dict[str, Any]:
    return {"type": [t, "null"], **extra}


NAME = {"type": "string", "pattern": r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"}
STR = {"type": "string"}


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    schema: dict[str, Any]
    where: str = "query"     # query | path | header
    required: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class Op:
    method: str
    path: str                               # below /api/v1
    handler: Handler
    summary: str
    tag: str
    role: str = "viewer"                    # least role: viewer | operator | admin; or site (DR tokens only)
    appliance_wide: bool = False            # an appliance-level change: no tenant-scoped caller
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None      # JSON Schema of a JSON body
    body_types: tuple[str, ...] = ()        # other accepted body media types (schema: string)
    body_required: bool = True
    responses: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # status → (description, schema)
    response_types: dict[int, tuple[str, ...]] = field(default_factory=dict)         # extra media types
    stream: str | None = None               # a streamed media type (text/event-stream)
    public: bool = False                    # no bearer: the body carries its credential (site pairing)

    @property
    def full_path(self) -> str:
        return PREFIX + self.path

    @property
    def operation_id(self) -> str:
        words = re.sub(r"[{}]", "", self.path).strip("/").replace("-", "/").split("/")
        return self.method.lower() + "".join(w.capitalize() for w in words if w)


# -- request checking ------------------------------------------------------------

def _coerce(name: str, raw: str, schema: dict[str, Any]) -> Any:
    t = schema.get("type")
    types = t if isinstance(t, list) else [t]
    if "integer" in types:
        if not re.fullmatch(r"-?\d{1,18}", raw):
            raise ValidationError([Issue(f"query.{name}", f"{raw!r} is not an integer")])
        return int(raw)
    if "boolean" in types:
        if raw not in ("true", "false"):
            raise ValidationError([Issue(f"query.{name}", f"{raw!r} is not true or false")])
        return raw == "true"
    return raw


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _issues(prefix: str, validator: Draft202012Validator, value: Any) -> list[Issue]:
    out = []
    for err in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        path = ".".join([prefix, *(str(p) for p in err.absolute_path)])
        out.append(Issue(path, err.message[:300]))
    return out


def query(request: web.Request, name: str) -> Any:
    """A query parameter, already checked and converted (None when absent)."""
    return request.get(QUERY, {}).get(name)


def body(request: web.Request) -> Any:
    return request.get(BODY)


def caller(request: web.Request) -> Principal:
    principal: Principal = request[PRINCIPAL]
    return principal


def scope_of(request: web.Request) -> Scope:
    """What the caller may see, for the tenant-aware look-ups (appliance.services.scope)."""
    p = caller(request)
    return Scope(p.tenant, p.key)


def tenant_of(request: web.Request, asked: str | None = None) -> str:
    """The tenant a name resolves in: the caller's own, or (unscoped callers) ``asked`` or ``default``."""
    return scope_of(request).home(asked or query(request, "tenant"))


def tenant_filter(request: web.Request) -> str | None:
    """Which tenant a listing is limited to: the caller's own, or the one asked for (unscoped callers)."""
    return scope_of(request).listing(query(request, "tenant"))


def _wrap(op: Op, params: Sequence[Param]) -> Handler:
    qparams = [p for p in params if p.where == "query"]
    qvalidators = {p.name: _validator(p.schema) for p in qparams}
    bvalidator = _validator(op.body) if op.body is not None else None
    known = {p.name for p in qparams}

    async def handler(request: web.Request) -> web.StreamResponse:
        principal = None if op.public else caller(request)
        if principal is None:
            pass   # its own credential is in the body (app.PUBLIC_PATHS lists it)
        elif op.role == SITE_ROLE or principal.role == SITE_ROLE:
            # A paired site's DR token calls the DR routes and nothing else; nobody else calls those.
            if principal.role != op.role:
                raise Forbidden(f"{op.method} {op.path} is a route for paired sites' DR tokens only"
                                if op.role == SITE_ROLE else
                                f"a site's DR token may call only DR and replication routes, not "
                                f"{op.method} {op.path}")
        elif not principal.allows(op.role):
            raise Forbidden(f"{op.method} {op.path} needs the {op.role} role (you are {principal.role})")
        if op.appliance_wide and principal is not None and principal.tenant is not None:
            raise Forbidden(f"{op.method} {op.path} changes the whole appliance; a tenant-scoped "
                            f"{principal.kind} may not")
        issues: list[Issue] = []
        values: dict[str, Any] = {}
        issues += [Issue(f"query.{k}", "is not a parameter of this operation") for k in sorted(set(request.query))
                   if k not in known]
        for p in qparams:
            raw = request.query.getall(p.name, [])
            if not raw:
                if p.required:
                    issues.append(Issue(f"query.{p.name}", "is required"))
                continue
            if len(raw) > 1:
                issues.append(Issue(f"query.{p.name}", "is given more than once"))
                continue
            try:
                val = _coerce(p.name, raw[0], p.schema)
            except ValidationError as exc:
                issues += exc.issues
                continue
            issues += _issues(f"query.{p.name}", qvalidators[p.name], val)
            values[p.name] = val
        request[QUERY] = values
        if op.body is not None or op.body_types:
            ctype = request.content_type if request.can_read_body else ""
            if not request.can_read_body or (ctype == "application/octet-stream" and not request.body_exists):
                if op.body_required:
                    issues.append(Issue("body", "is required"))
            elif ctype == JSON and bvalidator is not None:
                data = safejson.loads(await request.read() or b"null")
                issues += _issues("body", bvalidator, data)
                request[BODY] = data
            elif ctype in op.body_types or (ctype == JSON and bvalidator is None):
                request[BODY] = await request.read()
                request[BODY_TYPE] = ctype
            else:
                accepted = ([JSON] if bvalidator is not None else []) + list(op.body_types)
                raise UnsupportedMediaType(ctype, accepted)
        if issues:
            raise ValidationError(issues)
        return await op.handler(request)

    return handler


class UnsupportedMediaType(AnvilError):
    def __init__(self, got: str, accepted: Iterable[str]) -> None:
        self.accepted = list(accepted)
        super().__init__(f"content type {got or 'none'!r} is not accepted here ({', '.join(self.accepted)})")


def path_params(op: Op) -> list[Param]:
    names = re.findall(r"{(\w+)}", op.path)
    declared = {p.name for p in op.params if p.where == "path"}
    return [Param(n, dict(STR), "path", True) for n in names if n not in declared] + [
        p for p in op.params if p.where == "path"]


def register(app: web.Application, ops: Iterable[Op]) -> None:
    for op in ops:
        app.router.add_route(op.method, op.full_path, _wrap(op, op.params), name=op.operation_id)


def register_alias(app: web.Application, path: str, op: Op) -> None:
    """``op`` at a second path outside /api/v1, with the same checks (the caller must still be
    authenticated by the app's middleware for that path)."""
    app.router.add_route(op.method, path, _wrap(op, op.params))


# -- the document ----------------------------------------------------------------

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["type", "title", "status"],
    "properties": {
        "type": STR, "title": STR, "status": {"type": "integer"}, "detail": STR,
        "errors": {"type": "array", "items": {"type": "object", "required": ["path", "reason"], "properties": {
            "path": STR, "reason": STR, "line": nullable("integer")}}},
    },
}


def _problem(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def document(ops: Sequence[Op]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        params = [*path_params(op), *(p for p in op.params if p.where != "path")]
        item: dict[str, Any] = {
            "operationId": op.operation_id, "summary": op.summary, "tags": [op.tag],
            "description": f"Least role: {op.role}." + (" Not for tenant-scoped callers." if op.appliance_wide
                                                        else ""),
            "parameters": [{"name": p.name, "in": p.where, "required": p.required or p.where == "path",
                            "schema": p.schema, **({"description": p.description} if p.description else {})}
                           for p in params],
            "responses": {},
        }
        if op.public:
            item["security"] = []
            item["description"] = "No bearer token: the body carries a one-time credential."
        if op.body is not None or op.body_types:
            content: dict[str, Any] = {}
            if op.body is not None:
                content[JSON] = {"schema": op.body}
            for t in op.body_types:
                content[t] = {"schema": {"type": "string"}}
            item["requestBody"] = {"required": op.body_required, "content": content}
        for status, (desc, schema) in op.responses.items():
            if status == 204:
                item["responses"][str(status)] = {"description": desc}
                continue
            if op.stream and status == 200:
                content = {op.stream: {"schema": {"type": "string"}}}
            else:
                content = {JSON: {"schema": schema}}
            for t in op.response_types.get(status, ()):
                content[t] = {"schema": {"type": "string"}}
            item["responses"][str(status)] = {"description": desc, "content": content}
        errs = item["responses"]
        errs["400"] = _problem("Invalid input (errors carry the field path)")
        errs["401"] = _problem("No valid credentials")
        errs["403"] = _problem("The caller's role or tenant does not allow this")
        errs["404"] = _problem("Not found (or not visible to the caller's tenant)")
        if op.method in ("POST", "PUT", "DELETE"):
            errs["409"] = _problem("Conflicts with the current state")
        if op.body is not None or op.body_types:
            errs["415"] = _problem("Unsupported body media type")
        if op.tag in ("blades",) and op.method == "POST":
            errs["502"] = _problem("The blade's BMC failed")
        paths.setdefault(op.full_path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "Anvil appliance API", "version": __version__,
                 "description": "Bare-metal provisioning: blades, server profiles, jobs. Every route needs a "
                                "bearer token (or a console session)."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Problem": PROBLEM_SCHEMA},
        },
    }
