"""`anvil blade list`'s read of a SQLite store without SQLAlchemy (appliance.services.inventory_lite)
gives Inventory.page's rows, for every sort and filter it reads, and answers None (the caller
then takes the full path) for anything it does not know."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from appliance.drivers.protocols import Secret
from appliance.secrets import SecretBox, ensure_key
from appliance.services import inventory_lite
from appliance.services.blade_rows import SORTS
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.failover import FailoverService, HealthSample
from appliance.services.inventory import COMPLIANCE_FACT, BladeFilter, Inventory
from appliance.services.inventory_lite import read_blades, sqlite_file
from appliance.services.profiles import ProfileService
from appliance.services.switches import SwitchService
from appliance.store import Store, open_store
from appliance.store.migrate import HEAD
from appliance.store.tables import BindingRow, BladeRow, ProfileRow
from tests.support.profiles import one_nic_profile


def _bind(store: Store, tenant: str, profile: str, blade: str, state: str = "live", blade_state: str = "active",
          generation: int = 1) -> None:
    with store.write() as s:
        pid = s.scalar(select(ProfileRow.id).where(ProfileRow.tenant == tenant, ProfileRow.name == profile))
        row = s.scalar(select(BladeRow).where(BladeRow.name == blade))
        assert pid is not None and row is not None
        s.add(BindingRow(profile_id=pid, blade_id=row.id, generation=generation, state=state))
        row.state = blade_state


def _set(store: Store, blade: str, **values: Any) -> None:
    with store.write() as s:
        row = s.scalar(select(BladeRow).where(BladeRow.name == blade))
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    """A SQLite store with blades in several states and chassis, bound to profiles of two tenants
    (and one binding that ended), NICs cabled and not, health samples old and new, reachable and
    not, and firmware compliance readings good, bad, malformed and absent."""
    path = tmp_path / "anvil.db"
    store = open_store(f"sqlite:///{path}")
    try:
        ensure_key(tmp_path / "k")
        box = SecretBox(tmp_path / "k")
        SwitchService(store, box).enroll("tor", "snmp://10.0.0.2:161", password=Secret("public"))
        blades = BladeService(store, box)
        layout = [("c2", 3), ("c1", 8), ("c2", 1), ("c1", 2), (None, None), ("c1", None), ("c3", 4)]
        for i, (chassis, slot) in enumerate(layout, 1):
            nics = [NicSpec("eth0", f"aa:00:00:00:00:{i:02x}", "tor" if i % 2 else None, f"ge-{i}" if i % 2 else None)]
            if i in (2, 3):
                nics.append(NicSpec("eth1", f"aa:00:00:00:01:{i:02x}"))
            blades.enroll(Enrollment(name=f"bl-{i:02d}", bmc=f"fake://bl-{i:02d}", username="u", password=Secret("p"),
                                     chassis=chassis, slot=slot, cpus=8 * i if i != 6 else None,
                                     memory_gib=32 if i != 6 else None, nics=tuple(nics)))
        profiles = ProfileService(store)
        for n, (name, tenant) in enumerate((("web-01", "acme"), ("db-01", "globex"), ("app-01", "acme"),
                                            ("web-01", "globex"), ("old-01", "acme")), 1):
            profiles.import_document(one_nic_profile(name, tenant, n))
        _bind(store, "acme", "web-01", "bl-04")
        _bind(store, "globex", "db-01", "bl-02")
        _bind(store, "acme", "app-01", "bl-05", blade_state="stamping")
        _bind(store, "globex", "web-01", "bl-07", blade_state="fenced")
        _bind(store, "acme", "old-01", "bl-01", state="ended", blade_state="spare")   # not its profile any more
        blades.set_maintenance("bl-03", True, reason="fan swap")
        _set(store, "bl-06", state="failed", state_reason="BMC unreachable for 3 polls")
        _set(store, "bl-01", facts={COMPLIANCE_FACT: {"baseline": "lab-2026", "compliant": True}})
        _set(store, "bl-02", facts={"model": "x", COMPLIANCE_FACT: {"baseline": "lab-2026", "compliant": False,
                                                                     "summary": "BIOS 1.0.0 (want 2.19.1)"}})
        _set(store, "bl-03", facts={COMPLIANCE_FACT: "not a reading"})
        fo = FailoverService(store)
        now = datetime.now(UTC)
        fo.record_health("bl-04", HealthSample(ok=True, at=now - timedelta(minutes=5), power="off", health="ok"))
        fo.record_health("bl-04", HealthSample(ok=True, at=now - timedelta(seconds=20), power="on", health="warning",
                                               detail="PSU 2 degraded"))
        fo.record_health("bl-02", HealthSample(ok=False, at=now - timedelta(hours=2), detail="BMC unreachable"))
        fo.record_health("bl-07", HealthSample(ok=True, at=now - timedelta(days=3), power="on"))
        fo.record_health("bl-06", HealthSample(ok=False, source="probe", at=now - timedelta(seconds=50)))
    finally:
        store.close()
    yield path


def same(fast: list[dict[str, Any]] | None, full: list[dict[str, Any]]) -> None:
    """Equal rows, keys in the same order (the JSON output); the sample's age may have moved on by
    the second between the two reads."""
    assert fast is not None
    assert [list(r) for r in fast] == [list(r) for r in full]
    for a, b in zip(fast, full, strict=True):
        if a["healthAge"] is not None or b["healthAge"] is not None:
            assert abs(a["healthAge"] - b["healthAge"]) <= 2, (a, b)
        assert {**a, "healthAge": None} == {**b, "healthAge": None}


FILTERS: list[dict[str, str]] = [
    {}, {"state": "active"}, {"state": "spare"}, {"state": "none-such"}, {"chassis": "c1"},
    {"profile": "web-01"}, {"profile": "acme/web-01"}, {"profile": "initech/web-01"}, {"tenant": "acme"},
    {"tenant": "globex", "state": "fenced"}, {"chassis": "c2", "state": "maintenance"},
]


@pytest.mark.parametrize("sort", SORTS)
def test_the_rows_are_inventory_pages_for_every_sort_and_filter(db: Path, sort: str) -> None:
    store = open_store(f"sqlite:///{db}", migrate=False)
    try:
        inv = Inventory(store)
        for f in FILTERS:
            full = inv.page(BladeFilter(state=f.get("state"), chassis=f.get("chassis"), profile=f.get("profile"),
                                        bound_tenant=f.get("tenant")), limit=1_000_000, sort=sort)[0]
            same(read_blades(db, sort=sort, **f), full)
    finally:
        store.close()


def test_the_store_holds_what_the_comparison_needs(db: Path) -> None:
    """Every kind of cell is in the comparison: bound and not, cabled NICs, every health shape,
    compliance good, bad and absent."""
    rows = {b["name"]: b for b in read_blades(db) or []}
    assert len(rows) == 7 and {b["state"] for b in rows.values()} == {"spare", "active", "maintenance", "failed",
                                                                     "stamping", "fenced"}
    assert (rows["bl-04"]["profile"], rows["bl-04"]["tenant"]) == ("acme/web-01", "acme")
    assert rows["bl-01"]["profile"] is None    # its binding ended
    assert rows["bl-03"]["nics"] == [{"name": "eth0", "mac": "aa:00:00:00:00:03", "switch": "tor", "port": "ge-3"},
                                     {"name": "eth1", "mac": "aa:00:00:00:01:03", "switch": None, "port": None}]
    assert (rows["bl-04"]["power"], rows["bl-04"]["health"], rows["bl-04"]["healthDetail"]) == (
        "on", "warning", "PSU 2 degraded")
    assert (rows["bl-02"]["health"], rows["bl-02"]["healthOk"]) == ("unreachable", False)
    assert rows["bl-01"]["firmware"] == "lab-2026 ✓"
    assert rows["bl-02"]["firmware"] == "lab-2026: BIOS 1.0.0 (want 2.19.1)"
    assert rows["bl-03"]["firmware"] is None and rows["bl-05"]["firmware"] is None
    assert rows["bl-05"]["healthAt"] is None and rows["bl-06"]["cpus"] is None


def test_orders_are_the_inventorys_sorts() -> None:
    assert set(inventory_lite._ORDER) == set(SORTS)


def test_a_store_at_another_revision_or_unreadable_is_left_to_the_full_path(db: Path, tmp_path: Path) -> None:
    assert read_blades(db, sort="power") is None              # a sort it does not know
    missing = tmp_path / "none" / "anvil.db"
    assert read_blades(missing) is None and not missing.exists() and not missing.parent.exists()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    assert read_blades(garbage) is None
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert read_blades(empty) is None                         # no schema at all
    store = open_store(f"sqlite:///{db}", migrate=False)
    try:
        for revision in ("0001", f"{int(HEAD) + 1:04d}"):     # older (to migrate), newer (another version's)
            with store.engine.begin() as conn:
                conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
            assert read_blades(db) is None
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": HEAD})
        assert read_blades(db) is not None
    finally:
        store.close()


def test_the_read_changes_nothing_in_the_store(db: Path) -> None:
    before = db.read_bytes()
    audit = sqlite3.connect(db).execute("SELECT count(*) FROM audit_log").fetchone()
    assert read_blades(db)
    assert db.read_bytes() == before
    assert sqlite3.connect(db).execute("SELECT count(*) FROM audit_log").fetchone() == audit


@pytest.mark.parametrize("url", ["sqlite:////var/lib/anvil/anvil.db", "sqlite:///anvil.db", "sqlite:///a dir/a.db",
                                 "sqlite:///./rel/x.db"])
def test_the_file_of_a_sqlite_url_is_sqlalchemys(url: str) -> None:
    assert sqlite_file(url) == Path(str(make_url(url).database))


@pytest.mark.parametrize("url", ["postgresql+psycopg://anvil:pw@db:5432/anvil", "sqlite://", "sqlite:///:memory:",
                                 "sqlite+pysqlite:///x.db", "sqlite:///x.db?mode=ro", "sqlite:///x%20y.db",
                                 "sqlite:///file:x.db?uri=true"])
def test_other_store_urls_are_left_to_the_full_path(url: str) -> None:
    assert sqlite_file(url) is None
