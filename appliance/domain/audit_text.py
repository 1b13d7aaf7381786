"""Audit entries as sentences: "operator alice assigned acme/web-01 to rf-02, job 46ed6afe".

Pure: an entry is the trail's public dict (who, action, resource, name, tenant, before,
after); the actor's words (``operator alice``) come from :func:`actor_text`. What is not
known gets a plain sentence from the entry's own fields, never a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Entry = Mapping[str, Any]


def actor_text(who: str, roles: Mapping[str, str]) -> str:
    """``user:alice`` → ``operator alice``; ``token:ci#3`` → ``viewer token ci``; ``local:root`` →
    ``local admin root``. ``roles`` maps ``user:NAME`` and ``token:ID`` to a role where known."""
    kind, _, rest = who.partition(":")
    if kind == "user":
        return f"{roles.get(who, 'user')} {rest}".strip()
    if kind == "token":
        name, _, tid = rest.partition("#")
        role = roles.get(f"token:{tid}")
        return f"{role} token {name}" if role else f"token {name}"
    if kind == "local":
        return f"local admin {rest}"
    if kind == "system":
        return "the appliance"
    return who


def _short(job_id: str) -> str:
    return job_id[:8]


def _job(e: Entry) -> str | None:
    after = e.get("after") or {}
    if e.get("action") != "create":
        return None
    params = after.get("params") or {}
    target = f"{params.get('tenant') or e.get('tenant')}/{params.get('profile')}" if params.get("profile") else \
        str(after.get("subject", "")).removeprefix("profile ")
    job = f"job {_short(str(e.get('name', '')))}"
    kind = after.get("kind")
    if kind == "stamp":
        where = f"blade {params['blade']}" if params.get("blade") else \
            f"the best spare of pool {params.get('pool') or 'spares'}"
        return f"assigned {target} to {where}, {job}"
    if kind == "unstamp":
        return f"released {target} from its blade, {job}"
    if kind == "failover":
        to = f" to {params['to']}" if params.get("to") else ""
        return f"started a failover of {target}{to}, {job}"
    return f"started a {kind} job of {target}, {job}"


def _changed(e: Entry, keys: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
    before, after = e.get("before") or {}, e.get("after") or {}
    return {k: (before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)}


def _blade(e: Entry) -> str | None:
    name, action, after = e.get("name"), e.get("action"), e.get("after") or {}
    if action == "create":
        return f"enrolled blade {name}"
    if action == "delete":
        return f"removed blade {name}"
    if action == "power":
        return f"powered blade {name} {after.get('action', '')}".rstrip()
    if action == "boot":
        return f"set blade {name} to boot from {after.get('device', '?')}"
    if action == "clear-failed":
        return f"returned blade {name} to the spares after repair"
    if action == "confirm-fenced":
        return f"confirmed blade {name} fenced by hand"
    state = _changed(e, ("state",)).get("state")
    if state and state[1] == "maintenance":
        why = after.get("state_reason")
        return f"put blade {name} into maintenance" + (f" ({why})" if why else "")
    if state and state[0] == "maintenance":
        return f"returned blade {name} from maintenance"
    return None


def _profile(e: Entry) -> str | None:
    after, before = e.get("after") or {}, e.get("before") or {}
    what = "template" if (after or before).get("kind") == "ServerProfileTemplate" else "profile"
    full = f"{e.get('tenant')}/{e.get('name')}" if e.get("tenant") else str(e.get("name"))
    return {"create": f"imported {what} {full}", "update": f"changed {what} {full}",
            "delete": f"deleted {what} {full}"}.get(str(e.get("action")))


def _token(e: Entry) -> str | None:
    after = e.get("after") or e.get("before") or {}
    scope = f", tenant {after['tenant']}" if after.get("tenant") else ""
    if e.get("action") == "create":
        return f"created token {e.get('name')} ({after.get('role', '?')}{scope})"
    if e.get("action") == "update" and (e.get("after") or {}).get("revoked_at"):
        return f"revoked token {e.get('name')}"
    return None


def _user(e: Entry) -> str | None:
    after = e.get("after") or {}
    name, action = e.get("name"), e.get("action")
    if action == "create":
        scope = f", tenant {after['tenant']}" if after.get("tenant") else ""
        return f"added user {name} ({after.get('role', '?')}{scope})"
    if action == "delete":
        return f"deleted user {name}"
    if _changed(e, ("role", "tenant")):
        return f"changed the role or tenant of user {name}"
    return f"changed user {name} (password or lock)"


def _blade_pool(e: Entry) -> str | None:
    name, action = e.get("name"), e.get("action")
    if action == "create":
        return f"created blade pool {name}"
    if action == "delete":
        return f"deleted blade pool {name}"
    grant = _changed(e, ("tenant",)).get("tenant")
    if grant:
        return f"granted blade pool {name} to tenant {grant[1]}" if grant[1] else \
            f"took blade pool {name}'s grant to tenant {grant[0]} back"
    return f"changed blade pool {name}"


def _simple(noun: str) -> Callable[[Entry], str | None]:
    def say(e: Entry) -> str | None:
        verb = {"create": "created", "update": "changed", "delete": "deleted"}.get(str(e.get("action")))
        return f"{verb} {noun} {e.get('name')}" if verb else None
    return say


DESCRIBE: dict[str, Callable[[Entry], str | None]] = {
    "job": _job, "blade": _blade, "profile": _profile, "token": _token, "user": _user,
    "blade-pool": _blade_pool, "identity-pool": _simple("identity pool"), "switch": _simple("switch"),
    "failover-domain": _simple("failover domain"),
}


def describe(entry: Entry, actor: str) -> str:
    """What happened, as one sentence, starting with who did it."""
    say = DESCRIBE.get(str(entry.get("resource")))
    what = say(entry) if say else None
    if what is None:
        tenant = f" (tenant {entry['tenant']})" if entry.get("tenant") else ""
        what = f"{entry.get('action')} {entry.get('resource')} {entry.get('name')}{tenant}"
    return f"{actor} {what}"
