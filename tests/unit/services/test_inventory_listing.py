"""Blade lists carry state, binding, power and health (the monitor's last sample, with its
age), and are searched, filtered and sorted in the store, page by page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.drivers.protocols import Secret
from appliance.errors import ValidationError
from appliance.secrets import SecretBox, ensure_key
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.failover import FailoverService, HealthSample
from appliance.services.inventory import COMPLIANCE_FACT, BladeFilter, Inventory, age_text
from appliance.services.profiles import ProfileService
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeRow, ProfileRow
from tests.support.profiles import one_nic_profile


def bind(store: Store, tenant: str, profile: str, blade: str) -> None:
    with store.write() as s:
        pid = s.scalar(select(ProfileRow.id).where(ProfileRow.tenant == tenant, ProfileRow.name == profile))
        row = s.scalar(select(BladeRow).where(BladeRow.name == blade))
        assert pid is not None and row is not None
        s.add(BindingRow(profile_id=pid, blade_id=row.id, generation=1, state="live"))
        row.state = "active"


@pytest.fixture
def rack(store: Store, tmp_path: Path) -> Store:
    ensure_key(tmp_path / "k")
    blades = BladeService(store, SecretBox(tmp_path / "k"))
    for i, chassis in zip(range(1, 6), ["c2", "c1", "c2", "c1", None], strict=True):
        blades.enroll(Enrollment(name=f"bl-{i:02d}", bmc=f"fake://bl-{i:02d}", username="u", password=Secret("p"),
                                 chassis=chassis, slot=10 - i if chassis else None,
                                 nics=(NicSpec("eth0", f"aa:00:00:00:00:{i:02x}"),)))
    profiles = ProfileService(store)
    for n, (name, tenant) in enumerate((("web-01", "acme"), ("db-01", "globex"), ("app-01", "acme")), 1):
        profiles.import_document(one_nic_profile(name, tenant, n))
    bind(store, "acme", "web-01", "bl-04")
    bind(store, "globex", "db-01", "bl-02")
    bind(store, "acme", "app-01", "bl-05")
    fo = FailoverService(store)
    now = datetime.now(UTC)
    fo.record_health("bl-04", HealthSample(ok=True, at=now - timedelta(minutes=5), power="off", health="ok"))
    fo.record_health("bl-04", HealthSample(ok=True, at=now - timedelta(seconds=20), power="on", health="warning"))
    fo.record_health("bl-02", HealthSample(ok=False, at=now - timedelta(hours=2), detail="BMC unreachable: timeout"))
    return store


def names(items: list[dict[str, object]]) -> list[object]:
    return [b["name"] for b in items]


def test_each_blade_shows_its_profile_and_the_last_sample_with_its_age(rack: Store) -> None:
    items, _, total = Inventory(rack).page(BladeFilter())
    by = {b["name"]: b for b in items}
    assert total == 5
    assert (by["bl-04"]["profile"], by["bl-04"]["tenant"], by["bl-04"]["power"], by["bl-04"]["health"]) == (
        "acme/web-01", "acme", "on", "warning")
    assert 19 <= by["bl-04"]["healthAge"] <= 80 and age_text(by["bl-04"]["healthAge"]).endswith(("s", "m"))
    assert (by["bl-02"]["power"], by["bl-02"]["health"], by["bl-02"]["healthOk"]) == (None, "unreachable", False)
    assert by["bl-02"]["healthOk"] is False and by["bl-04"]["healthOk"] is True   # not SQLite's 0/1
    assert age_text(by["bl-02"]["healthAge"]) == "2h"
    assert by["bl-01"]["health"] is None and by["bl-01"]["healthAge"] is None   # never sampled
    rack_view = {b["name"]: b for ch in Inventory(rack).rack() for b in ch["blades"]}
    assert (rack_view["bl-04"]["power"], rack_view["bl-04"]["health"]) == ("on", "warning")


def test_lists_sort_by_state_chassis_profile_and_tenant(rack: Store) -> None:
    inv = Inventory(rack)
    assert names(inv.page(BladeFilter(), sort="name")[0]) == ["bl-01", "bl-02", "bl-03", "bl-04", "bl-05"]
    assert names(inv.page(BladeFilter(), sort="state")[0]) == ["bl-02", "bl-04", "bl-05", "bl-01", "bl-03"]
    # chassis c1 (slots 6, 8), c2 (slots 7, 9), then the unplaced one
    assert names(inv.page(BladeFilter(), sort="chassis")[0]) == ["bl-04", "bl-02", "bl-03", "bl-01", "bl-05"]
    assert names(inv.page(BladeFilter(), sort="profile")[0]) == ["bl-05", "bl-02", "bl-04", "bl-01", "bl-03"]
    assert names(inv.page(BladeFilter(), sort="tenant")[0]) == ["bl-05", "bl-04", "bl-02", "bl-01", "bl-03"]
    page, cursor, total = inv.page(BladeFilter(), sort="tenant", limit=2, offset=2)
    assert names(page) == ["bl-02", "bl-01"] and cursor is None and total == 5
    with pytest.raises(ValidationError, match="'power' is not one of name, state, chassis, profile, tenant"):
        inv.page(BladeFilter(), sort="power")


def test_search_and_filters_find_blades_by_profile_tenant_chassis_and_state(rack: Store) -> None:
    inv = Inventory(rack)
    assert names(inv.page(BladeFilter(search="web"))[0]) == ["bl-04"]
    assert names(inv.page(BladeFilter(search="acme"))[0]) == ["bl-04", "bl-05"]
    assert names(inv.page(BladeFilter(search="acme/app"))[0]) == ["bl-05"]
    assert names(inv.page(BladeFilter(search="C1"))[0]) == ["bl-02", "bl-04"]
    assert names(inv.page(BladeFilter(search="spare"))[0]) == ["bl-01", "bl-03"]
    assert names(inv.page(BladeFilter(profile="globex/db-01"))[0]) == ["bl-02"]
    assert names(inv.page(BladeFilter(profile="db-01"))[0]) == ["bl-02"]
    assert names(inv.page(BladeFilter(bound_tenant="acme"))[0]) == ["bl-04", "bl-05"]
    items, _, total = inv.page(BladeFilter(search="bl-0", state="spare"), limit=1)
    assert names(items) == ["bl-01"] and total == 2
    # A tenant's view: its own blades only, whatever it searches for.
    assert names(inv.page(BladeFilter(tenant="acme", search="globex"))[0]) == []
    assert names(inv.page(BladeFilter(tenant="acme", search="bl"))[0]) == ["bl-04", "bl-05"]


def test_profile_lists_show_the_blade_and_sort_and_search(rack: Store) -> None:
    svc = ProfileService(rack)
    rows = svc.list()
    assert [(i.tenant, i.name, i.blade) for i in rows] == [("acme", "app-01", "bl-05"), ("acme", "web-01", "bl-04"),
                                                           ("globex", "db-01", "bl-02")]
    assert [i.name for i in svc.list(sort="blade")] == ["db-01", "web-01", "app-01"]
    assert [i.name for i in svc.list(search="bl-04")] == ["web-01"]
    assert [i.name for i in svc.list(blade="bl-02")] == ["db-01"]


def test_the_page_shows_the_last_firmware_compliance_reading_and_nothing_where_there_is_none(rack: Store) -> None:
    with rack.write() as s:
        row = s.scalar(select(BladeRow).where(BladeRow.name == "bl-03"))
        assert row is not None
        row.facts = {**row.facts, COMPLIANCE_FACT: {"baseline": "lab-2026", "compliant": True}}
    for after in (None, "bl-01"):     # the first page and a page after a name: statements of their own
        items, _, _ = Inventory(rack).page(BladeFilter(), after=after)
        cells = {b["name"]: b["firmware"] for b in items}
        assert cells["bl-03"] == "lab-2026 ✓" and cells["bl-04"] is None
