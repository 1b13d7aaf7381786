"""A blade of the inventory as the API, console and CLI list it, built from the store's columns.

Pure (no SQLAlchemy): appliance.services.inventory builds its pages with it, and
appliance.services.inventory_lite the CLI's list from a SQLite store read with the
standard library, so both give the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

COMPLIANCE_FACT = "firmwareCompliance"   # a blade's facts key: its last firmware compliance reading
SORTS = ("name", "state", "chassis", "profile", "tenant")
NO_HEALTH = {"power": None, "health": None, "healthOk": None, "healthDetail": None, "healthAt": None,
             "healthAge": None}


def firmware_cell(got: Any) -> str | None:
    """A blade list cell from the last compliance reading: ``lab-2026 ✓`` or ``lab-2026: BIOS 1.0.0
    (want 2.19.1)``; None when the blade was never checked."""
    if not isinstance(got, dict):
        return None
    return f"{got.get('baseline')} ✓" if got.get("compliant") else f"{got.get('baseline')}: {got.get('summary')}"


def compliance(raw: Any) -> Any:
    """The facts' compliance reading: JSON text where the driver gives text (SQLite, ``null`` when
    absent), already decoded where it decodes JSON itself (psycopg, a JSON-aggregated page)."""
    if isinstance(raw, str):
        return None if raw == "null" else json.loads(raw)
    return raw


def age_text(seconds: float | None) -> str:
    """``12s``, ``4m``, ``3h``, ``2d``: how old a sample is, short enough for a table cell."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def health_rows(rows: Iterable[Any], now: datetime) -> dict[int, dict[str, Any]]:
    """The monitor's last sample of each blade, from ``(blade id, at, ok, power, health, detail)``
    rows: power, health, when, and its age in seconds. Health reads as the BMC's own rollup, or
    ``unreachable`` when the BMC did not answer."""
    out: dict[int, dict[str, Any]] = {}
    parse, naive = datetime.fromisoformat, now.astimezone(UTC).replace(tzinfo=None)
    for blade_id, raw, ok, power, health, detail in rows:
        if isinstance(raw, str) and len(raw) == 26 and raw[10] == " " and raw[19] == ".":
            # SQLite's text of a UTC time (``2026-12-07 03:29:25.123456``), re-written as
            # isoformat() would: a page's hundred samples in a third of the time, which counted
            # under list-page load (0.18 ms of a page's ~1.4 ms of CPU).
            delta = naive - parse(raw)
            at = f"{raw[:10]}T{raw[11:19] if raw.endswith('.000000') else raw[11:]}+00:00"
        else:
            when = parse(raw) if isinstance(raw, str) else raw
            if when.tzinfo is None:   # stored in UTC
                when = when.replace(tzinfo=UTC)
            delta, at = now - when, when.isoformat()
        age = delta.days * 86400 + delta.seconds   # whole seconds, as int(total_seconds()) when positive
        out[blade_id] = {"power": power, "health": health or ("unreachable" if not ok else None),
                         "healthOk": bool(ok),   # SQLite's driver gives 0/1
                         "healthDetail": detail or None, "healthAt": at, "healthAge": age if age > 0 else 0}
    return out


def blade_item(cols: Sequence[Any], nics: list[dict[str, Any]], bound: tuple[str, str] | None,
               health: dict[str, Any]) -> dict[str, Any]:
    """One blade: ``cols`` are (id, name, state, driver, BMC address, chassis, slot, CPUs, memory
    GiB, state reason, compliance as read), ``bound`` the (tenant, name) of its live profile."""
    _bid, name, state, driver, bmc, chassis, slot, cpus, mem, reason, got = cols
    return {"name": name, "state": state, "driver": driver, "bmc": bmc, "chassis": chassis,
            "slot": slot, "cpus": cpus, "memoryGiB": mem, "nics": nics,
            "profile": f"{bound[0]}/{bound[1]}" if bound else None, "tenant": bound[0] if bound else None,
            "stateReason": reason, "firmware": firmware_cell(compliance(got)), **health}
