"""Importing profiles into the store: a rejected import changes nothing.

Most rejections happen while parsing or checking, before the transaction writes anything;
the ``*_inside_the_transaction`` and ``*_midway`` tests fail after rows were written (the
profile, some of its identities, pool offsets moved) and compare every table, row by row.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from appliance.assets import asset_dir
from appliance.errors import Conflict, NotFound, PoolExhausted, ValidationError
from appliance.services import profiles as profile_service
from appliance.services.pools import PoolService
from appliance.services.profiles import PROFILE, TEMPLATE, ProfileService
from appliance.store import Store
from appliance.store.tables import Base, IdentityPoolRow, IdentityRow, ProfileRow

EXAMPLES = asset_dir("profiles") / "examples"

WEB = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {name: NAME, tenant: acme}
spec:
  identity:
    uuid: UUID
    nics:
      - {name: eth0, mac: "MAC0", vlans: {native: 100}, pxe: true}
      - {name: eth1, mac: "MAC1"}
  boot: {source: {type: local}}
"""


def doc(name: str, uuid: str, mac0: str, mac1: str) -> str:
    return WEB.replace("NAME", name).replace("UUID", uuid).replace("MAC0", mac0).replace("MAC1", mac1)


def counts(store: Store) -> tuple[int, int]:
    with store.read() as s:
        return (s.scalar(select(func.count()).select_from(ProfileRow)) or 0,
                s.scalar(select(func.count()).select_from(IdentityRow)) or 0)


def snapshot(store: Store) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, in a stable order."""
    with store.read() as s:
        return {t.name: sorted((tuple(r) for r in s.execute(t.select())), key=repr)
                for t in Base.metadata.sorted_tables}


def next_offsets(store: Store) -> dict[str, int]:
    with store.read() as s:
        return dict(s.execute(select(IdentityPoolRow.name, IdentityPoolRow.next_offset)).all())


def _pools(store: Store) -> None:
    svc = PoolService(store)
    svc.create("macs", "mac", "02:a0:00:00:00:00", "02:a0:00:00:ff:ff")
    svc.create("iqns", "iqn", "1", "999", prefix="iqn.2026-11.io.anvil:host-")
    svc.create("uuids", "uuid", "4c4c4544-0000-0000-0000-000000000000", "4c4c4544-0000-0000-0000-00000000ffff")


def test_every_example_imports_and_exports_losslessly(store: Store) -> None:
    _pools(store)
    svc = ProfileService(store)
    for path in sorted(EXAMPLES.glob("*.yaml")):
        info = svc.import_document(path.read_bytes(), source=str(path))
        for fmt in ("yaml", "xml"):
            text = svc.export(info.kind, info.tenant, info.name, fmt)
            assert ProfileService.parse(text) == info.profile


def test_two_profiles_claiming_one_identity_are_refused_with_the_path(store: Store) -> None:
    svc = ProfileService(store)
    svc.import_document(doc("web-01", "4c4c4544-0042-3510-8052-b4c04f384d32", "02:a0:00:00:00:01",
                            "02:a0:00:00:00:02"))
    before = counts(store)
    with pytest.raises(ValidationError) as exc:
        svc.import_document(doc("web-02", "4c4c4544-0042-3510-8052-b4c04f384d33", "02:a0:00:00:00:09",
                                "02:A0:00:00:00:02"), source="web-02.yaml")
    issue = exc.value.issues[0]
    assert issue.path == "spec.identity.nics[1].mac"
    assert "02:a0:00:00:00:02" in issue.reason and "acme/web-01" in issue.reason
    assert counts(store) == before


@pytest.mark.parametrize(
    ("mutation", "path", "reason"),
    [
        (("02:a0:00:00:00:01", "02:zz:00:00:00:01"), "spec.identity.nics[0].mac", "is not a MAC address"),
        (("02:a0:00:00:00:01", "01:00:5e:00:00:01"), "spec.identity.nics[0].mac", "multicast"),
        (("native: 100", "native: 5000"), "spec.identity.nics[0].vlans.native", ""),
        (("native: 100}", "native: 100, tagged: [100]}"), "spec.identity.nics[0].vlans", ""),
        (("name: eth1", "name: eth0"), "spec.identity.nics[1].name", "is already the name of nics[0]"),
        (("apiVersion: anvil/v1", "apiVersion: anvil/v9"), "apiVersion", ""),
        (("kind: ServerProfile", "kind: Blade"), "kind", ""),
        (("pxe: true}", "pxe: true, speed: 10}"), "spec.identity.nics[0].speed", ""),
        (("uuid: 4c4c", "uuid: 4x4c"), "spec.identity.uuid", "is not a UUID"),
    ],
)
def test_rejected_imports_name_path_and_change_nothing(store: Store, mutation: tuple[str, str], path: str,
                                                       reason: str) -> None:
    svc = ProfileService(store)
    svc.import_document(doc("web-00", "4c4c4544-0042-3510-8052-b4c04f384d30", "02:a0:00:00:00:10",
                            "02:a0:00:00:00:11"))
    before = counts(store)
    text = doc("web-01", "4c4c4544-0042-3510-8052-b4c04f384d32", "02:a0:00:00:00:01", "02:a0:00:00:00:02")
    assert mutation[0] in text
    with pytest.raises(ValidationError) as exc:
        svc.import_document(text.replace(mutation[0], mutation[1]), source="bad.yaml")
    assert any(i.path.startswith(path) and reason in i.reason for i in exc.value.issues), exc.value.issues
    assert all(i.line is not None for i in exc.value.issues)
    assert counts(store) == before


def test_unknown_or_wrong_pool_is_refused(store: Store) -> None:
    _pools(store)
    svc = ProfileService(store)
    text = doc("web-01", "pool:uuids", "pool:nomacs", "pool:iqns")
    with pytest.raises(ValidationError) as exc:
        svc.import_document(text)
    got = {(i.path, i.reason) for i in exc.value.issues}
    assert ("spec.identity.nics[0].mac", "identity pool 'nomacs' does not exist") in got
    assert ("spec.identity.nics[1].mac", "identity pool 'iqns' holds iqn identities, not mac") in got
    assert counts(store) == (0, 0)


def test_duplicate_name_conflicts_unless_replaced(store: Store) -> None:
    svc = ProfileService(store)
    a = doc("web-01", "4c4c4544-0042-3510-8052-b4c04f384d32", "02:a0:00:00:00:01", "02:a0:00:00:00:02")
    svc.import_document(a)
    with pytest.raises(Conflict, match="already exists"):
        svc.import_document(a)
    b = a.replace("02:a0:00:00:00:02", "02:a0:00:00:00:03")
    svc.import_document(b, replace=True)
    held = {v for _p, _k, v in svc.get(PROFILE, "acme", "web-01").identities}
    assert "02:a0:00:00:00:03" in held and "02:a0:00:00:00:02" not in held
    # The freed MAC can now be claimed by another profile.
    svc.import_document(doc("web-02", "4c4c4544-0042-3510-8052-b4c04f384d33", "02:a0:00:00:00:02",
                            "02:a0:00:00:00:04"))


def test_same_name_in_two_tenants(store: Store) -> None:
    svc = ProfileService(store)
    a = doc("web-01", "4c4c4544-0042-3510-8052-b4c04f384d32", "02:a0:00:00:00:01", "02:a0:00:00:00:02")
    svc.import_document(a)
    svc.import_document(doc("web-01", "4c4c4544-0042-3510-8052-b4c04f384d33", "02:a0:00:00:00:05",
                            "02:a0:00:00:00:06").replace("tenant: acme", "tenant: globex"))
    assert {p.tenant for p in svc.list()} == {"acme", "globex"}


def test_template_instantiation_allocates_and_delete_returns_identities(store: Store) -> None:
    _pools(store)
    svc = ProfileService(store)
    svc.import_document((EXAMPLES / "kvm-host-template.yaml").read_bytes())
    one = svc.instantiate("kvm-host", "kvm-01")
    two = svc.instantiate("kvm-host", "kvm-02")
    vals1 = {v for _p, _k, v in one.identities}
    vals2 = {v for _p, _k, v in two.identities}
    assert len(vals1) == 4 and not vals1 & vals2
    assert one.profile.kind == PROFILE and not one.profile.is_template
    assert one.profile.spec.identity.nics[0].mac == "02:a0:00:00:00:00"
    used = {p.name: p.used for p in PoolService(store).list()}
    assert used == {"macs": 4, "iqns": 2, "uuids": 2}
    svc.delete(PROFILE, "default", "kvm-01")
    # kvm-01's identities went back to their pools...
    assert {p.name: p.used for p in PoolService(store).list()} == {"macs": 2, "iqns": 1, "uuids": 1}
    # ...so another profile may now claim them.
    svc.import_document(doc("web-09", one.profile.spec.identity.uuid or "", "02:a0:00:00:00:00",
                            "02:a0:00:00:00:01"))
    with pytest.raises(NotFound):
        svc.instantiate("no-such-template", "x")
    with pytest.raises(Conflict):
        svc.instantiate("kvm-host", "kvm-02")
    assert svc.get(TEMPLATE, "default", "kvm-host").identities == ()


class WritesSeen:
    """Wraps the calls of the profile service that write inside its transaction (``ids.claim``,
    ``ids.allocate``, ``allocate_pool_identities``), and records what the transaction had written
    when one of them failed: a test of "changes nothing" must fail after something was written."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.at_failure: tuple[int, int] | None = None   # (profiles, identities) inside the transaction
        for owner, name in ((profile_service.ids, "claim"), (profile_service.ids, "allocate"),
                            (ProfileService, "allocate_pool_identities")):
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name)))

    def _wrap(self, fn: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object, **kw: object) -> object:
            try:
                return fn(*args, **kw)
            except Exception:
                session = next(a for a in args if isinstance(a, Session))
                if self.at_failure is None:
                    self.at_failure = (session.scalar(text("SELECT count(*) FROM profiles")) or 0,
                                       session.scalar(text("SELECT count(*) FROM identities")) or 0)
                raise

        return call


def test_template_instantiation_failing_midway_changes_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The MAC pool runs out at the new host's second MAC, after its UUID, IQN and first MAC
    were allocated inside the transaction."""
    svc = PoolService(store)
    svc.create("macs", "mac", "02:a0:00:00:00:00", "02:a0:00:00:00:02")  # room for one host's two MACs, plus one
    svc.create("iqns", "iqn", "1", "999", prefix="iqn.2026-11.io.anvil:host-")
    svc.create("uuids", "uuid", "4c4c4544-0000-0000-0000-000000000000", "4c4c4544-0000-0000-0000-00000000ffff")
    profiles = ProfileService(store)
    profiles.import_document((EXAMPLES / "kvm-host-template.yaml").read_bytes())
    profiles.instantiate("kvm-host", "kvm-01")
    before, offsets = snapshot(store), next_offsets(store)
    seen = WritesSeen(monkeypatch)
    with pytest.raises(PoolExhausted):
        profiles.instantiate("kvm-host", "kvm-02")
    assert seen.at_failure == (3, 4 + 3)   # template, kvm-01, kvm-02; kvm-01's 4, kvm-02's uuid, iqn, one MAC
    assert snapshot(store) == before
    assert next_offsets(store) == offsets == {"macs": 2, "iqns": 1, "uuids": 1}


def test_template_whose_third_nic_clashes_inside_the_transaction_changes_nothing(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 3rd NIC's fixed MAC is free when checked, but the pool hands that very MAC to the
    1st NIC; the clash is found once the allocated values are filled in, after the allocations."""
    _pools(store)
    tpl = (EXAMPLES / "kvm-host-template.yaml").read_text().replace(
        "  boot:\n", '      - {name: eth2, mac: "02:a0:00:00:00:00"}\n  boot:\n', 1)
    profiles = ProfileService(store)
    profiles.import_document(tpl)
    before, offsets = snapshot(store), next_offsets(store)
    seen = WritesSeen(monkeypatch)
    with pytest.raises(ValidationError) as exc:
        profiles.instantiate("kvm-host", "kvm-01")
    assert [(i.path, i.reason) for i in exc.value.issues] == [
        ("spec.identity.nics[2].mac", '"02:a0:00:00:00:00" is already used at spec.identity.nics[0].mac')]
    assert seen.at_failure == (2, 4)   # the template and kvm-01; kvm-01's uuid, iqn and two pool MACs
    assert snapshot(store) == before
    assert next_offsets(store) == offsets == {"macs": 0, "iqns": 0, "uuids": 0}


def test_import_whose_third_nic_clashes_inside_the_transaction_changes_nothing(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer claims the 3rd NIC's MAC between the import's check and its insert (two
    imports can interleave so on PostgreSQL); here the check is made to miss it, so the unique
    constraint meets it after the profile row and the UUID and first two MACs were written."""
    _pools(store)
    svc = ProfileService(store)
    svc.import_document(doc("web-00", "4c4c4544-0042-3510-8052-b4c04f384d30", "02:a0:00:00:00:10",
                            "02:a0:00:00:00:11"))
    three = doc("web-01", "4c4c4544-0042-3510-8052-b4c04f384d32", "02:a0:00:00:00:01", "02:a0:00:00:00:02").replace(
        "  boot:", '      - {name: eth2, mac: "02:A0:00:00:00:11"}\n  boot:')
    with pytest.raises(ValidationError) as exc:   # as a user meets it: the check names the holder
        svc.import_document(three)
    assert "acme/web-00" in exc.value.issues[0].reason
    before, offsets = snapshot(store), next_offsets(store)
    monkeypatch.setattr(profile_service, "_check_claims", lambda *a, **kw: [])
    seen = WritesSeen(monkeypatch)
    with pytest.raises(ValidationError) as exc:
        svc.import_document(three, source="web-01.yaml")
    assert [(i.path, i.reason) for i in exc.value.issues] == [
        ("spec.identity.nics[2].mac", '"02:a0:00:00:00:11" is already in use')]
    assert seen.at_failure == (2, 3 + 3)   # web-00 and web-01; web-00's 3 and web-01's uuid, eth0, eth1
    assert snapshot(store) == before
    assert next_offsets(store) == offsets


def test_xml_import(store: Store, tmp_path: Path) -> None:
    svc = ProfileService(store)
    info = svc.import_document((EXAMPLES / "web-01.xml").read_bytes(), source="web-01.xml")
    assert info.name == "web-01"
    assert ProfileService.parse((EXAMPLES / "web-01.yaml").read_bytes()) == info.profile


def test_two_profiles_on_one_iscsi_target_are_refused_because_its_acl_would_admit_both(store: Store) -> None:
    """tgt's access list belongs to the target, not the LUN: a second profile on the same
    target would let each initiator into the other's disk."""
    svc = ProfileService(store)
    first = (EXAMPLES / "db-01.yaml").read_text()
    svc.import_document(first)
    before = counts(store)
    second = (first.replace("name: db-01", "name: db-02").replace("io.anvil:db-01", "io.anvil:db-02")
              .replace("02:a0:00:00:01:", "02:a0:00:00:02:"))
    second = "\n".join(line for line in second.splitlines() if "uuid:" not in line) + "\n"
    with pytest.raises(ValidationError) as err:
        svc.import_document(second)
    assert [i.path for i in err.value.issues] == ["spec.boot.source.target"], err.value.issues
    assert "iqn.2026-11.io.anvil.san:db-01" in str(err.value) and "db-01" in str(err.value)
    assert counts(store) == before
    svc.import_document(second.replace("san:db-01", "san:db-02"))   # its own target: fine
    svc.import_document(first, replace=True)                      # re-importing keeps its own claim


FC = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {name: NAME, tenant: acme}
spec:
  identity:
    hbas:
      - {name: fc0, wwpn: "WWPN0", wwnn: "WWNN"}
      - {name: fc1, wwpn: "WWPN1", wwnn: "WWNN"}
  boot: {source: {type: local}}
  failover: {policy: none}
"""


def fc(name: str, wwpn0: str, wwpn1: str, wwnn: str) -> str:
    return FC.replace("NAME", name).replace("WWPN0", wwpn0).replace("WWPN1", wwpn1).replace("WWNN", wwnn)


def test_hbas_of_one_profile_share_a_wwnn_that_no_other_profile_may_take(store: Store) -> None:
    """UCS-style: one WWNN per server, shared by its vHBAs; it still identifies that server only."""
    svc = ProfileService(store)
    info = svc.import_document(fc("fc-01", "20:00:00:25:b5:00:00:01", "20:00:00:25:b5:00:00:02",
                                  "20:00:00:25:b5:00:01:01"), source="fc-01.yaml")
    assert sorted((k, v) for _p, k, v in info.identities) == [
        ("wwnn", "20:00:00:25:b5:00:01:01"), ("wwpn", "20:00:00:25:b5:00:00:01"), ("wwpn", "20:00:00:25:b5:00:00:02")]
    svc.import_document(fc("fc-01", "20:00:00:25:b5:00:00:01", "20:00:00:25:b5:00:00:02",
                           "20:00:00:25:b5:00:01:01"), replace=True)   # re-import keeps its own WWNN
    before = counts(store)
    with pytest.raises(ValidationError) as err:   # the same WWNN on another server
        svc.import_document(fc("fc-02", "20:00:00:25:b5:00:00:03", "20:00:00:25:b5:00:00:04",
                               "20:00:00:25:b5:00:01:01"))
    assert [i.path for i in err.value.issues] == ["spec.identity.hbas[0].wwnn", "spec.identity.hbas[1].wwnn"]
    assert all("profile acme/fc-01" in i.reason for i in err.value.issues)
    with pytest.raises(ValidationError) as err:   # another server's WWPN as this one's WWNN
        svc.import_document(fc("fc-02", "20:00:00:25:b5:00:00:03", "20:00:00:25:b5:00:00:04",
                               "20:00:00:25:b5:00:00:02"))
    assert [i.path for i in err.value.issues] == ["spec.identity.hbas[0].wwnn", "spec.identity.hbas[1].wwnn"]
    with pytest.raises(ValidationError) as err:   # another server's WWNN as this one's WWPN
        svc.import_document(fc("fc-02", "20:00:00:25:b5:00:01:01", "20:00:00:25:b5:00:00:04",
                               "20:00:00:25:b5:00:01:02"))
    assert [i.path for i in err.value.issues] == ["spec.identity.hbas[0].wwpn"]
    assert counts(store) == before
    svc.delete(PROFILE, "acme", "fc-01")   # the WWNN returns: another server may take it now
    svc.import_document(fc("fc-02", "20:00:00:25:b5:00:00:03", "20:00:00:25:b5:00:00:04",
                           "20:00:00:25:b5:00:01:01"))


def test_import_refuses_the_configured_parking_vlan(store: Store) -> None:
    svc = ProfileService(store)
    text = doc("web-01", "4c4c4544-0042-3510-8052-b4c04f384d32", "02:a0:00:00:00:01", "02:a0:00:00:00:02")
    with pytest.raises(ValidationError) as err:
        svc.import_document(text, source="web-01.yaml", parking_vlan=100)
    [issue] = err.value.issues
    assert issue.path == "spec.identity.nics[0].vlans.native" and "VLAN 100 is the parking VLAN" in issue.reason
    assert "network.parking_vlan" in issue.reason
    assert counts(store) == (0, 0)
    info = svc.import_document(text.replace("native: 100", "native: 4094"), parking_vlan=100)
    assert info.profile.spec.identity.nics[0].vlans.native == 4094


def test_check_finds_what_import_would_refuse_and_writes_nothing(store: Store) -> None:
    svc = ProfileService(store)
    PoolService(store).create("iqns", "iqn", "1", "999", prefix="iqn.2026-11.io.anvil:host-")
    template = (EXAMPLES / "kvm-host-template.yaml").read_text().replace("pool:iqns", "pool:nowhere")
    template = template.replace("mac: pool:macs\n        vlans:\n          native: 40", "mac: pool:iqns\n"
                                "        vlans:\n          native: 40")
    tpl = ProfileService.parse(template)
    with pytest.raises(ValidationError) as err:
        svc.check(tpl, source="kvm.yaml")
    got = [(i.path, i.reason) for i in err.value.issues]
    assert got == [
        ("spec.identity.uuid", "identity pool 'uuids' does not exist"),
        ("spec.identity.iscsiInitiator", "identity pool 'nowhere' does not exist"),
        ("spec.identity.nics[0].mac", "identity pool 'macs' does not exist"),
        ("spec.identity.nics[1].mac", "identity pool 'iqns' holds iqn identities, not mac"),
    ]
    with pytest.raises(ValidationError) as imported:
        svc.import_document(template)
    assert [(i.path, i.reason) for i in imported.value.issues] == got   # exactly what import says
    web = doc("web-01", "4c4c4544-0042-3510-8052-b4c04f384d32", "02:a0:00:00:00:01", "02:a0:00:00:00:02")
    svc.import_document(web)
    before = counts(store)
    svc.check(ProfileService.parse(web))   # the stored one is the one it would replace
    other = ProfileService.parse(web.replace("web-01", "web-02").replace("d32", "d33"))
    with pytest.raises(ValidationError) as held:
        svc.check(other, show_holders=False)
    assert [(i.path, i.reason) for i in held.value.issues] == [
        ("spec.identity.nics[0].mac", '"02:a0:00:00:00:01" is already in use'),
        ("spec.identity.nics[1].mac", '"02:a0:00:00:00:02" is already in use')]
    assert counts(store) == before
