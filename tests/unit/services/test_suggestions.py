"""A name not found says what the caller may have meant, and never what it may not see."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.drivers.protocols import Secret
from appliance.errors import NotFound
from appliance.secrets import SecretBox, ensure_key
from appliance.services.blade_pools import BladePoolService
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.failover import FailoverService
from appliance.services.jobs import JobService
from appliance.services.pools import PoolService
from appliance.services.profiles import PROFILE, ProfileService
from appliance.services.scope import Scope
from appliance.store import Store
from tests.support.profiles import one_nic_profile


@pytest.fixture
def seeded(store: Store, tmp_path: Path) -> Store:
    svc = ProfileService(store)
    for i, (name, tenant) in enumerate((("web-01", "acme"), ("web-02", "acme"), ("db-01", "globex")), 1):
        svc.import_document(one_nic_profile(name, tenant, i))
    ensure_key(tmp_path / "secrets.key")
    blades = BladeService(store, SecretBox(tmp_path / "secrets.key"))
    for i in (1, 2):
        blades.enroll(Enrollment(name=f"rf-0{i}", bmc=f"fake://rf-0{i}", username="u", password=Secret("p"),
                                 nics=(NicSpec("eth0", f"aa:00:00:00:00:0{i}"),)))
    BladePoolService(store).create("globex-pool", tenant="globex")
    BladePoolService(store).create("web", tenant="acme")
    PoolService(store).create("macs", "mac", "02:b0:00:00:00:00", "02:b0:00:00:00:ff")
    return store


def message(fn: object, *args: object, **kw: object) -> str:
    with pytest.raises(NotFound) as got:
        fn(*args, **kw)  # type: ignore[operator]
    return str(got.value)


def test_an_appliance_wide_caller_is_told_which_tenant_holds_the_name(seeded: Store) -> None:
    svc = ProfileService(seeded)
    said = message(svc.get, PROFILE, None, "web-01")
    assert said == "profile 'web-01' not found in tenant 'default'; web-01 exists in tenant acme"
    assert message(svc.get, PROFILE, "acme", "web-1") .endswith("did you mean web-01?")
    assert message(svc.get, PROFILE, "acm", "nothing").endswith("tenant acm has no profiles; did you mean "
                                                                "tenant acme?")


def test_a_tenant_scoped_caller_hears_only_of_its_own_names(seeded: Store) -> None:
    acme = Scope("acme", "user:1")
    svc = ProfileService(seeded)
    # globex/db-01 exists: acme is told nothing of it, only of its own close names.
    said = message(svc.get, PROFILE, None, "db-01", scope=acme)
    assert "globex" not in said and "exists" not in said
    assert said == "profile 'db-01' not found in tenant 'acme'; did you mean web-01?"
    assert message(svc.get, PROFILE, None, "zz-01", scope=acme) == "profile 'zz-01' not found in tenant 'acme'"
    jobs = JobService(seeded)
    # Blades: a tenant sees only those bound to its profiles (none here); pools: its grants and spares.
    assert message(jobs.dry_run, "web-01", blade="rf-1", scope=acme) == "blade 'rf-1' not found"
    assert message(jobs.dry_run, "web-01", pool="globex-pool", scope=acme) == (
        "blade pool 'globex-pool' not found")
    assert message(jobs.dry_run, "web-01", pool="webb", scope=acme).endswith("did you mean web?")


def test_blades_pools_switches_and_domains_suggest_close_names(seeded: Store, tmp_path: Path) -> None:
    box = SecretBox(tmp_path / "secrets.key")
    assert message(BladeService(seeded, box).get, "rf-1").endswith("did you mean rf-01?")
    assert message(JobService(seeded).dry_run, "web-01", tenant="acme", blade="rf01").endswith(
        "did you mean rf-01?")
    assert message(BladePoolService(seeded).add, "globex-poll", ("rf-01",)).endswith("did you mean globex-pool?")
    assert message(PoolService(seeded).get, "mac").endswith("did you mean macs?")
    FailoverService(seeded).create_domain("prod-web")
    assert message(FailoverService(seeded).get_domain, "prod").endswith("did you mean prod-web?")
