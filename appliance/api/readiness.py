"""``/readyz``: whether this appliance can do its work now, and if not, why.

``/healthz`` says the process is alive and its store answers; ``/readyz`` is what a load balancer
or an orchestrator should route by: the store reachable *and* at this version's schema, an engine
leader holding the lease (this process's or another node's), and the boot HTTP service answering
when this process runs one or the configuration names where blades reach it. Unauthenticated, like
``/healthz``: it names what is wrong, never an address with credentials or a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from appliance.engine.leader import leader_alive
from appliance.store import Store
from appliance.store.migrate import HEAD, current_revision

BOOT_TIMEOUT = 2.0


@dataclass(slots=True)
class Readiness:
    """What /readyz checks beyond the store; filled in once the process knows (serve sets
    ``boot_url`` after starting the boot services)."""

    boot_url: str | None = None


def _store_checks(store: Store) -> tuple[dict[str, str], list[str]]:
    checks: dict[str, str] = {}
    reasons: list[str] = []
    try:
        revision = current_revision(store.engine)
    except Exception as exc:  # report, don't crash: this is the readiness endpoint
        checks["store"] = f"error: {exc.__class__.__name__}"
        reasons.append(f"the store is not reachable ({exc.__class__.__name__})")
        return checks, reasons
    if revision is None:
        checks["store"] = "error: no schema"
        reasons.append("the store is reachable but has no schema (run `anvil serve` once to migrate it)")
        return checks, reasons
    if revision != HEAD:
        checks["store"] = f"error: schema {revision}"
        reasons.append(f"the store's schema is at revision {revision}, this version needs {HEAD}")
        return checks, reasons
    checks["store"] = "ok"
    try:
        leader = leader_alive(store)
    except Exception as exc:
        checks["leader"] = f"error: {exc.__class__.__name__}"
        reasons.append(f"the engine leader lease could not be read ({exc.__class__.__name__})")
        return checks, reasons
    checks["leader"] = "ok" if leader else "none"
    if not leader:
        reasons.append("no engine leader holds the lease (no engine running, or one is taking over)")
    return checks, reasons


async def _boot_check(url: str) -> str | None:
    """None when something listens at the boot URL's address; else why not."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        async with asyncio.timeout(BOOT_TIMEOUT):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        return f"boot HTTP at {parts.scheme}://{host}:{port} is not reachable ({exc.__class__.__name__})"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def readiness(store: Store, ready: Readiness) -> tuple[bool, dict[str, object]]:
    checks, reasons = await asyncio.to_thread(_store_checks, store)
    if ready.boot_url:
        why = await _boot_check(ready.boot_url)
        checks["boot"] = "ok" if why is None else "error: unreachable"
        if why is not None:
            reasons.append(why)
    ok = not reasons
    return ok, {"status": "ready" if ok else "not ready", "checks": checks, "reasons": reasons}

