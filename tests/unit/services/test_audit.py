"""The audit trail: who changed what, before and after, in a hash chain that verify checks."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from appliance.services.audit import AuditFilter, AuditService
from appliance.services.pools import PoolService
from appliance.services.profiles import PROFILE, ProfileService
from appliance.services.users import UserService
from appliance.store import Store
from appliance.store.audit import Actor, acting_as

DOC = """apiVersion: anvil/v1
kind: ServerProfile
metadata: {name: web-01, tenant: acme}
spec:
  identity:
    nics:
      - {name: eth0, mac: "02:a0:00:00:00:01"}
"""


def test_changes_made_as_an_actor_are_recorded_with_before_and_after(store: Store) -> None:
    with acting_as(Actor("user:alice", "api 10.0.0.9")):
        ProfileService(store).import_document(DOC)
        ProfileService(store).import_document(DOC.replace("tenant: acme}", "tenant: acme, labels: {tier: web}}"),
                                              replace=True)
        ProfileService(store).delete(PROFILE, "acme", "web-01")
    entries, total = AuditService(store).list(AuditFilter(resource="profile"))
    assert total == 3
    delete, update, create = entries
    assert (create["action"], create["who"], create["origin"], create["tenant"]) == (
        "create", "user:alice", "api 10.0.0.9", "acme")
    assert create["before"] is None and create["after"]["name"] == "web-01"
    assert "labels" not in (update["before"]["document"]["metadata"])
    assert update["after"]["document"]["metadata"]["labels"] == {"tier": "web"}
    assert delete["after"] is None and delete["before"]["name"] == "web-01"


def test_without_an_actor_nothing_is_recorded_and_a_rollback_records_nothing(store: Store) -> None:
    PoolService(store).create("macs", "mac", "02:00:00:00:00:01", "02:00:00:00:00:10")
    with acting_as(Actor("local:bob", "cli")), pytest.raises(Exception):  # noqa: B017 - a duplicate: rolled back
        PoolService(store).create("macs", "mac", "02:00:00:00:00:01", "02:00:00:00:00:10")
    assert AuditService(store).list()[1] == 0


def test_secrets_never_reach_the_trail(store: Store) -> None:
    with acting_as(Actor("local:root", "cli")):
        UserService(store).add("carol", "password1", role="admin")
    (entry,), _ = AuditService(store).list()
    assert entry["after"]["password_hash"] == "***"
    assert "password1" not in str(entry)


def test_chain_verifies_and_tenant_filter_hides_other_tenants(store: Store) -> None:
    with acting_as(Actor("local:root", "cli")):
        ProfileService(store).import_document(DOC)
        ProfileService(store).import_document(DOC.replace("acme", "globex").replace(":01\"", ":02\""))
    svc = AuditService(store)
    res = svc.verify()
    assert res.ok and res.checked == 2
    entries, total = svc.list(AuditFilter(tenant="globex"))
    assert total == 1 and entries[0]["tenant"] == "globex"
    lines = list(svc.export())
    assert len(lines) == 2 and '"prevHash": "' + "0" * 64 in lines[0]


def test_the_log_is_append_only(store: Store) -> None:
    with acting_as(Actor("local:root", "cli")):
        UserService(store).add("dave", "password1", role="viewer")
    with pytest.raises(DBAPIError), store.write() as s:
        s.execute(text("UPDATE audit_log SET who = 'someone-else'"))
    with pytest.raises(DBAPIError), store.write() as s:
        s.execute(text("DELETE FROM audit_log"))


def test_verify_names_a_tampered_entry(store: Store) -> None:
    with acting_as(Actor("local:root", "cli")):
        UserService(store).add("erin", "password1", role="viewer")
        UserService(store).add("fred", "password1", role="viewer")
    with store.write() as s:   # an attacker with database access drops the guard
        if store.is_sqlite:
            s.execute(text("DROP TRIGGER audit_log_no_update"))
        else:
            s.execute(text("DROP TRIGGER audit_log_append_only ON audit_log"))
        s.execute(text("UPDATE audit_log SET who = 'local:mallory' WHERE name = 'erin'"))
    res = AuditService(store).verify()
    assert not res.ok and res.first_bad == 1 and "content" in (res.reason or "")
