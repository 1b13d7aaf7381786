"""``anvil blade list`` straight from a local SQLite store, with the standard library's sqlite3.

Importing SQLAlchemy and the store's models costs ~0.4 s, most of the command's start-up
(issue 20: ≤ 0.3 s), while listing blades is three plain SELECTs. The rows are
:meth:`Inventory.page`'s: the same columns under the same conditions and order, built by the
same code (appliance.services.blade_rows); tests/unit/services/test_inventory_lite.py compares
the two on a store holding every kind of blade, for every sort and filter read here.

The read changes nothing: the file is opened read-only (``mode=ro``: a missing store is never
created), in one read transaction, and only when the store is at the schema revision this
code knows (``HEAD``, whose store the tests read). Anything else answers None and the caller
takes the full path, which creates or migrates the store, or says what is wrong: another
revision, a store it cannot read, a text search (:func:`read_blades` takes no ``search``).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from appliance.services.blade_rows import COMPLIANCE_FACT, NO_HEALTH, blade_item, health_rows
from appliance.store.migrate import HEAD

# A blade and its live binding's profile: at most one live binding per blade (a unique index).
_FROM = ("FROM blades LEFT OUTER JOIN (SELECT bindings.blade_id AS blade_id, profiles.tenant AS ptenant, "
         "profiles.name AS pname FROM bindings JOIN profiles ON profiles.id = bindings.profile_id "
         "WHERE bindings.state = 'live') AS live ON live.blade_id = blades.id")
_BLADES = ("SELECT blades.id, blades.name, blades.state, blades.driver, blades.bmc_address, blades.chassis, "
           "blades.slot, blades.cpus, blades.memory_gib, blades.state_reason, "
           "json_quote(json_extract(blades.facts, :fact)), live.ptenant, live.pname "
           f"{_FROM} WHERE {{where}} ORDER BY {{order}}")
_NICS = ("SELECT blade_nics.blade_id, blade_nics.name, blade_nics.mac, switches.name, blade_nics.port "
         "FROM blade_nics LEFT OUTER JOIN switches ON switches.id = blade_nics.switch_id "
         f"WHERE blade_nics.blade_id IN (SELECT blades.id {_FROM} WHERE {{where}}) "
         "ORDER BY blade_nics.blade_id, blade_nics.position")
_HEALTH = ("SELECT blade_health.blade_id, blade_health.at, blade_health.ok, blade_health.power, "
           "blade_health.health, blade_health.detail FROM blade_health WHERE blade_health.id IN "
           "(SELECT max(blade_health.id) FROM blade_health WHERE blade_health.blade_id IN "
           f"(SELECT blades.id {_FROM} WHERE {{where}}) GROUP BY blade_health.blade_id)")
# Inventory's orders (appliance.services.inventory._order), NULLs last; one per SORTS (a test checks).
_ORDER = {
    "name": "blades.name",
    "state": "blades.state, blades.name",
    "chassis": "blades.chassis IS NULL, blades.chassis, blades.slot IS NULL, blades.slot, blades.name",
    "profile": "live.pname IS NULL, live.pname, live.ptenant, blades.name",
    "tenant": "live.ptenant IS NULL, live.ptenant, live.pname, blades.name",
}
_TIMEOUT_S = 30.0     # as the full path's busy timeout: a writer's checkpoint may hold a reader briefly


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` store URL (as SQLAlchemy reads it); None for any other
    URL (PostgreSQL, a driver or query options, an in-memory database, escapes)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url[len(prefix):]
    if not path or path == ":memory:" or any(c in path for c in "?#%\0"):
        return None
    return Path(path)


def _where(state: str | None, chassis: str | None, profile: str | None,
           tenant: str | None) -> tuple[str, dict[str, str]]:
    """Inventory's filters (appliance.services.inventory._filtered) as SQL and its parameters."""
    conds, args = [], {}
    if state:
        conds.append("blades.state = :state")
        args["state"] = state
    if chassis:
        conds.append("blades.chassis = :chassis")
        args["chassis"] = chassis
    if profile:
        ptenant, slash, pname = profile.rpartition("/")
        conds.append("live.pname = :pname")
        args["pname"] = pname
        if slash:
            conds.append("live.ptenant = :ptenant")
            args["ptenant"] = ptenant
    if tenant:
        conds.append("live.ptenant = :tenant")
        args["tenant"] = tenant
    return " AND ".join(conds) or "1", args


def read_blades(db: Path, *, state: str | None = None, chassis: str | None = None, profile: str | None = None,
                tenant: str | None = None, sort: str = "name",
                now: datetime | None = None) -> list[dict[str, Any]] | None:
    """Every blade as :meth:`Inventory.page` lists it (``profile`` NAME or TENANT/NAME, ``tenant``
    of the bound profile), or None when this read cannot answer: the caller takes the full path."""
    if sort not in _ORDER or not db.is_file():
        return None
    where, args = _where(state, chassis, profile, tenant)
    uri = f"file:{quote(str(db.absolute()), safe='/')}?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True, timeout=_TIMEOUT_S, isolation_level=None)) as conn:
            conn.execute("BEGIN")   # one snapshot for the three reads
            got = conn.execute("SELECT version_num FROM alembic_version").fetchall()
            if got != [(HEAD,)]:
                return None
            rows = conn.execute(_BLADES.format(where=where, order=_ORDER[sort]),
                                {**args, "fact": f'$."{COMPLIANCE_FACT}"'}).fetchall()
            nics: dict[int, list[dict[str, Any]]] = {r[0]: [] for r in rows}
            for blade_id, name, mac, switch, port in conn.execute(_NICS.format(where=where), args):
                nics[blade_id].append({"name": name, "mac": mac, "switch": switch, "port": port})
            health = health_rows(conn.execute(_HEALTH.format(where=where), args).fetchall(), now or datetime.now(UTC))
    except sqlite3.Error:    # no such table, not a database, locked too long: the full path says what
        return None
    return [blade_item(r[:11], nics[r[0]], (r[11], r[12]) if r[12] is not None else None,
                       health.get(r[0], NO_HEALTH)) for r in rows]
