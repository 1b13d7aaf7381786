"""claimed_identities, pool_refs and with_identities: what a profile holds and how refs are filled."""

from __future__ import annotations

import pytest

from appliance.assets import asset_dir
from appliance.domain.identities import IdentityKind
from appliance.domain.profile import (
    IdentityClaim,
    PoolRef,
    Profile,
    claimed_identities,
    parse_xml,
    parse_yaml,
    pool_refs,
    to_xml,
    with_identities,
)
from appliance.errors import ValidationError


def example(name: str) -> Profile:
    return parse_yaml((asset_dir("profiles") / "examples" / name).read_text())


def test_claims_of_a_concrete_profile_in_document_order() -> None:
    assert claimed_identities(example("fc-01.yaml")) == [
        IdentityClaim(IdentityKind.UUID, "4c4c4544-0046-3510-8052-b4c04f384d11", "spec.identity.uuid"),
        IdentityClaim(IdentityKind.MAC, "02:a0:00:00:02:01", "spec.identity.nics[0].mac"),
        IdentityClaim(IdentityKind.WWPN, "20:00:00:25:b5:00:00:01", "spec.identity.hbas[0].wwpn"),
        IdentityClaim(IdentityKind.WWNN, "20:00:00:25:b5:00:01:01", "spec.identity.hbas[0].wwnn"),
        IdentityClaim(IdentityKind.WWPN, "20:00:00:25:b5:00:00:02", "spec.identity.hbas[1].wwpn"),
        IdentityClaim(IdentityKind.WWNN, "20:00:00:25:b5:00:01:02", "spec.identity.hbas[1].wwnn"),
    ]
    assert pool_refs(example("fc-01.yaml")) == []


def test_iscsi_initiator_is_claimed() -> None:
    claims = claimed_identities(example("db-01.yaml"))
    assert IdentityClaim(IdentityKind.IQN, "iqn.2026-11.io.anvil:db-01", "spec.identity.iscsiInitiator") in claims


def test_template_has_only_pool_refs() -> None:
    t = example("kvm-host-template.yaml")
    assert claimed_identities(t) == []
    assert pool_refs(t) == [
        PoolRef(IdentityKind.UUID, "uuids", "spec.identity.uuid"),
        PoolRef(IdentityKind.IQN, "iqns", "spec.identity.iscsiInitiator"),
        PoolRef(IdentityKind.MAC, "macs", "spec.identity.nics[0].mac"),
        PoolRef(IdentityKind.MAC, "macs", "spec.identity.nics[1].mac"),
    ]


def test_with_identities_fills_refs_and_returns_a_new_profile() -> None:
    t = example("kvm-host-template.yaml")
    values = {
        "spec.identity.uuid": "4C4C4544-0000-0000-0000-000000000001",
        "spec.identity.iscsiInitiator": "iqn.2026-11.io.anvil:node-1",
        "spec.identity.nics[0].mac": "02:a0:00:00:10:01",
        "spec.identity.nics[1].mac": "02:a0:00:00:10:02",
    }
    p = with_identities(t, values)
    assert pool_refs(p) == []
    assert [c.value for c in claimed_identities(p)] == [
        "4c4c4544-0000-0000-0000-000000000001",
        "iqn.2026-11.io.anvil:node-1",
        "02:a0:00:00:10:01",
        "02:a0:00:00:10:02",
    ]
    assert t.spec.identity.nics[0].mac == "pool:macs"  # the original is untouched
    assert p.kind == t.kind and p.spec.boot == t.spec.boot
    assert parse_xml(to_xml(p)) == p


def test_with_identities_may_fill_part_of_the_refs() -> None:
    p = with_identities(example("kvm-host-template.yaml"), {"spec.identity.nics[1].mac": "02:a0:00:00:10:02"})
    assert [r.path for r in pool_refs(p)] == [
        "spec.identity.uuid",
        "spec.identity.iscsiInitiator",
        "spec.identity.nics[0].mac",
    ]


def test_with_identities_refuses_a_path_that_is_not_a_pool_ref() -> None:
    with pytest.raises(ValidationError) as info:
        with_identities(example("fc-01.yaml"), {"spec.identity.nics[0].mac": "02:a0:00:00:10:02"})
    assert info.value.issues[0].path == "spec.identity.nics[0].mac"
    assert info.value.issues[0].reason == "is not a pool reference in this profile"


def test_with_identities_validates_values() -> None:
    t = example("kvm-host-template.yaml")
    with pytest.raises(ValidationError) as info:
        with_identities(t, {"spec.identity.nics[0].mac": "03:00:00:00:00:01"})
    assert info.value.issues[0].path == "spec.identity.nics[0].mac"
    with pytest.raises(ValidationError, match="already used"):
        with_identities(
            t, {"spec.identity.nics[0].mac": "02:00:00:00:00:01", "spec.identity.nics[1].mac": "02:00:00:00:00:01"}
        )
