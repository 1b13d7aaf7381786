"""DR plans: validation names the bad field, selection, pools, and the recovery order."""

from __future__ import annotations

import pytest

from appliance.dr import mapping
from appliance.dr.plan import CycleError, Member, members, parse, pool_for, waves
from appliance.errors import ValidationError

PLAN = """
apiVersion: anvil/v1
kind: DrPlan
metadata: {name: prod-to-b}
spec:
  recoverySite: site-b
  profiles:
    - tenant: acme
    - labels: {tier: web}
  pools:
    - {profiles: "db-*", pool: db-spares}
    - {pool: b-spares}
  vlans: {20: 220, 21: 221}
  rehearsalVlans: {20: 920, 21: 921}
  storage:
    - target: iqn.2026-11.io.anvil.san:db-01
      lun: 1
      replica: {name: db-01-r, portal: "10.78.0.1:3260", target: "iqn.2026-11.io.anvil.b:db-01", lun: 1}
  priorities: {"db-*": 100, "web-*": 10}
  dependencies: ["db-01 before web-*"]
"""


def _issue(text: str) -> str:
    with pytest.raises(ValidationError) as err:
        parse(text)
    return str(err.value)


def test_a_plan_parses_with_its_maps() -> None:
    plan = parse(PLAN)
    assert plan.name == "prod-to-b" and plan.recovery_site == "site-b"
    assert plan.vlans == {20: 220, 21: 221} and plan.rehearsal_vlans == {20: 920, 21: 921}
    assert plan.document["spec"]["vlans"] == {"20": 220, "21": 221} or plan.document["spec"]["vlans"]


def test_a_rehearsal_vlan_that_is_a_production_vlan_is_refused_naming_it() -> None:
    text = PLAN.replace("rehearsalVlans: {20: 920, 21: 921}", "rehearsalVlans: {20: 920, 21: 220}")
    msg = _issue(text)
    assert "spec.rehearsalVlans.21" in msg and "VLAN 220 is a production VLAN" in msg
    # a VLAN of the primary site is production too
    msg = _issue(PLAN.replace("rehearsalVlans: {20: 920, 21: 921}", "rehearsalVlans: {20: 21, 21: 921}"))
    assert "VLAN 21 is a production VLAN" in msg


def test_an_unknown_field_and_a_missing_one_are_named() -> None:
    assert "spec.vlanz" in _issue(PLAN.replace("vlans: {20: 220", "vlanz: {20: 220"))
    assert "spec.recoverySite" in _issue(PLAN.replace("  recoverySite: site-b\n", ""))
    assert "spec.vlans" in _issue(PLAN.replace("vlans: {20: 220, 21: 221}", "vlans: {20: 5000, 21: 221}"))


def test_a_bad_dependency_and_a_bad_selector_are_named() -> None:
    assert "spec.dependencies.0" in _issue(PLAN.replace("db-01 before web-*", "db-01 after web-*"))
    assert "spec.profiles.0" in _issue(PLAN.replace("- tenant: acme", "- {tenant: acme, all: true}"))


def test_a_catch_all_pool_rule_must_be_last() -> None:
    text = PLAN.replace('- {profiles: "db-*", pool: db-spares}\n    - {pool: b-spares}',
                        '- {pool: b-spares}\n    - {profiles: "db-*", pool: db-spares}')
    assert "spec.pools.0" in _issue(text)


def test_not_yaml_is_a_clear_error() -> None:
    assert "not valid YAML" in _issue("spec: [")
    assert "a DR plan is a mapping" in _issue("- 1")


ALL = [Member("acme", "db-01"), Member("acme", "web-01"), Member("acme", "web-02"),
       Member("other", "web-09", {"tier": "web"}), Member("other", "cache-01")]


def test_selection_and_pools() -> None:
    plan = parse(PLAN)
    chosen = members(plan, ALL)
    assert [m.key for m in chosen] == ["acme/db-01", "acme/web-01", "acme/web-02", "other/web-09"]
    assert pool_for(plan, ALL[0]) == "db-spares" and pool_for(plan, ALL[1]) == "b-spares"


def test_dependencies_win_over_priorities_and_equal_ones_come_up_together() -> None:
    # the first matching pattern gives the priority; a tenant/ pattern matches tenant/name
    text = (PLAN.replace('{"db-*": 100, "web-*": 10}', '{"web-09": 50, "db-*": 1, "web-*": 10}')
            .replace('"db-01 before web-*"', '"db-01 before acme/web-*"'))
    plan = parse(text)
    order = [[m.key for m in w] for w in waves(plan, members(plan, ALL))]
    # web-09 (50) and db-01 (1) are ready first: web-09 first; db-01 before the other web-*, though they
    # rank higher; then both web-0x together.
    assert order == [["other/web-09"], ["acme/db-01"], ["acme/web-01", "acme/web-02"]]


def test_a_dependency_cycle_is_refused_naming_its_profiles() -> None:
    text = PLAN.replace('["db-01 before web-*"]', '["db-01 before web-01", "web-01 before web-02", '
                                                   '"web-02 before db-01"]')
    plan = parse(text)
    with pytest.raises(CycleError) as err:
        waves(plan, members(plan, ALL))
    msg = str(err.value)
    assert "spec.dependencies" in msg
    for name in ("acme/db-01", "acme/web-01", "acme/web-02"):
        assert name in msg


DOC = {"apiVersion": "anvil/v1", "kind": "ServerProfile",
       "metadata": {"name": "db-01", "tenant": "acme"},
       "spec": {"identity": {"uuid": "4c4c4544-0042-3510-8052-b4c04f384d32",
                             "iscsiInitiator": "iqn.2026-11.io.anvil:db-01",
                             "nics": [{"name": "eth0", "mac": "02:a0:00:00:00:01",
                                       "vlans": {"native": 20, "tagged": [21]}}]},
                "boot": {"mode": "uefi", "source": {"type": "iscsi", "portal": "10.77.0.1:3260",
                                                    "target": "iqn.2026-11.io.anvil.san:db-01", "lun": 1}},
                "failover": {"domain": "prod", "priority": 1, "policy": "n+1"}}}


def test_an_activation_maps_vlans_and_the_boot_lun_and_keeps_identities() -> None:
    out = mapping.recovery_document(DOC, parse(PLAN))
    nic = out["spec"]["identity"]["nics"][0]
    assert nic["vlans"] == {"native": 220, "tagged": [221]} and nic["mac"] == "02:a0:00:00:00:01"
    assert out["spec"]["boot"]["source"] == {"type": "iscsi", "portal": "10.78.0.1:3260",
                                             "target": "iqn.2026-11.io.anvil.b:db-01", "lun": 1}
    assert DOC["spec"]["identity"]["nics"][0]["vlans"]["native"] == 20   # the input is untouched


def test_a_rehearsal_clone_has_its_own_name_identities_vlans_and_lun_copy() -> None:
    out = mapping.recovery_document(DOC, parse(PLAN), rehearsal_run="ab12")
    ident = out["spec"]["identity"]
    assert out["metadata"]["name"] == "db-01-rh-ab12"
    assert ident["nics"][0]["vlans"] == {"native": 920, "tagged": [921]}
    assert ident["nics"][0]["mac"] != "02:a0:00:00:00:01" and ident["nics"][0]["mac"].startswith("0a:")
    assert ident["uuid"] != DOC["spec"]["identity"]["uuid"]
    assert ident["iscsiInitiator"] == "iqn.2026-11.io.anvil:db-01.rh-ab12"
    assert out["spec"]["boot"]["source"]["target"] == "iqn.2026-11.io.anvil.b:db-01.rh-ab12"
    assert "failover" not in out["spec"]
    # stable for one run (a resumed rehearsal derives the same), different for another
    assert mapping.recovery_document(DOC, parse(PLAN), rehearsal_run="ab12") == out
    assert mapping.recovery_document(DOC, parse(PLAN), rehearsal_run="cd34")["spec"]["identity"] != ident


def test_an_unmapped_vlan_or_lun_is_named_with_its_profile() -> None:
    plan = parse(PLAN.replace("vlans: {20: 220, 21: 221}", "vlans: {20: 220, 21: 221, 22: 222}")
                 .replace("rehearsalVlans: {20: 920, 21: 921}", "rehearsalVlans: {20: 920}"))
    with pytest.raises(ValidationError) as err:
        mapping.recovery_document(DOC, plan, rehearsal_run="ab12")
    assert "acme/db-01" in str(err.value) and "VLAN 21" in str(err.value)
    other = dict(DOC, spec=dict(DOC["spec"], boot={"source": {"type": "iscsi", "portal": "10.77.0.1:3260",
                                                              "target": "iqn.2026-11.io.anvil.san:x", "lun": 1}}))
    with pytest.raises(ValidationError) as err:
        mapping.recovery_document(other, parse(PLAN))
    assert "spec.storage does not map" in str(err.value)
