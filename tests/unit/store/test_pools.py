"""Identity pools: allocation never hands out an identity twice; released ones come back."""

from __future__ import annotations

import pytest

from appliance.domain.identities import IdentityKind
from appliance.errors import Conflict, NotFound, PoolExhausted, ValidationError
from appliance.services.pools import PoolService
from appliance.store import Store
from appliance.store.repos import identities as ids


def test_allocations_are_distinct_and_in_range(store: Store) -> None:
    PoolService(store).create("macs", "mac", "02:00:00:00:00:00", "02:00:00:00:00:09")
    with store.write() as s:
        got = [ids.allocate(s, "macs", IdentityKind.MAC, profile_id=None, path=None) for _ in range(10)]
    assert got == [f"02:00:00:00:00:0{i}" for i in range(10)]
    with pytest.raises(PoolExhausted), store.write() as s:
        ids.allocate(s, "macs", IdentityKind.MAC, profile_id=None, path=None)


def test_iqn_pool_numbers_a_suffix(store: Store) -> None:
    info = PoolService(store).create("iqns", "iqn", "1", "3", prefix="iqn.2026-11.io.anvil:node-")
    assert info.size == 3
    with store.write() as s:
        assert ids.allocate(s, "iqns", IdentityKind.IQN, profile_id=None, path=None) == "iqn.2026-11.io.anvil:node-1"


def test_uuid_and_wwn_pools(store: Store) -> None:
    svc = PoolService(store)
    svc.create("uuids", "uuid", "4c4c4544-0000-0000-0000-000000000000", "4c4c4544-0000-0000-0000-0000000000ff")
    svc.create("wwpns", "wwpn", "20:00:00:25:b5:00:00:00", "20:00:00:25:b5:00:00:ff")
    with store.write() as s:
        assert ids.allocate(s, "uuids", IdentityKind.UUID, profile_id=None, path=None).endswith("000000000000")
        assert ids.allocate(s, "wwpns", IdentityKind.WWPN, profile_id=None, path=None) == "20:00:00:25:b5:00:00:00"
    assert [p.used for p in svc.list()] == [1, 1]


def test_pool_kind_must_match(store: Store) -> None:
    PoolService(store).create("macs", "mac", "02:00:00:00:00:00", "02:00:00:00:00:09")
    with pytest.raises(Conflict, match="holds mac identities, not wwpn"), store.write() as s:
        ids.allocate(s, "macs", IdentityKind.WWPN, profile_id=None, path=None)
    with pytest.raises(NotFound), store.write() as s:
        ids.allocate(s, "nope", IdentityKind.MAC, profile_id=None, path=None)


@pytest.mark.parametrize(
    ("kind", "start", "end", "prefix", "message"),
    [
        ("mac", "02:00:00:00:00:09", "02:00:00:00:00:00", None, "end: "),
        ("mac", "01:00:00:00:00:00", "01:00:00:00:00:09", None, "multicast"),
        ("mac", "02:zz:00:00:00:00", "02:00:00:00:00:09", None, "start: "),
        ("iqn", "1", "9", None, "prefix: "),
        ("wwpn", "20:00", "20:00:00:25:b5:00:00:ff", None, "start: "),
        ("disk", "1", "2", None, "kind: "),
    ],
)
def test_bad_pool_definitions_are_rejected_with_the_field(store: Store, kind: str, start: str, end: str,
                                                          prefix: str | None, message: str) -> None:
    svc = PoolService(store)
    with pytest.raises(ValidationError) as exc:
        svc.create("p", kind, start, end, prefix)
    assert message in str(exc.value)
    assert svc.list() == []


def test_duplicate_pool_name_conflicts(store: Store) -> None:
    svc = PoolService(store)
    svc.create("macs", "mac", "02:00:00:00:00:00", "02:00:00:00:00:09")
    with pytest.raises(Conflict):
        svc.create("macs", "mac", "02:00:00:00:01:00", "02:00:00:00:01:09")


def test_released_identities_return_only_when_free(store: Store) -> None:
    PoolService(store).create("macs", "mac", "02:00:00:00:00:00", "02:00:00:00:00:02")
    with store.write() as s:
        a, b, c = (ids.allocate(s, "macs", IdentityKind.MAC, profile_id=None, path=None) for _ in range(3))
    # Free the middle one: the next allocation finds it (after wrapping past the end).
    with store.write() as s:
        row = ids.holder_of(s, IdentityKind.MAC, b)
        assert row is not None
        s.delete(row[0])
    with store.write() as s:
        assert ids.allocate(s, "macs", IdentityKind.MAC, profile_id=None, path=None) == b
    with pytest.raises(PoolExhausted), store.write() as s:
        ids.allocate(s, "macs", IdentityKind.MAC, profile_id=None, path=None)
    assert {a, c} == {"02:00:00:00:00:00", "02:00:00:00:00:02"}


def test_identity_claimed_before_its_pool_is_skipped(store: Store) -> None:
    """A concrete identity already held is adopted by the pool, never handed out again."""
    from appliance.store.tables import IdentityRow

    with store.write() as s:
        s.add(IdentityRow(kind="mac", space="mac", value="02:00:00:00:00:00"))
    PoolService(store).create("macs", "mac", "02:00:00:00:00:00", "02:00:00:00:00:01")
    with store.write() as s:
        assert ids.allocate(s, "macs", IdentityKind.MAC, profile_id=None, path=None) == "02:00:00:00:00:01"
    with pytest.raises(PoolExhausted), store.write() as s:
        ids.allocate(s, "macs", IdentityKind.MAC, profile_id=None, path=None)


def test_wwpn_and_wwnn_share_one_namespace(store: Store) -> None:
    from sqlalchemy.exc import IntegrityError

    from appliance.store.tables import IdentityRow

    with pytest.raises(IntegrityError), store.write() as s:
        s.add(IdentityRow(kind="wwpn", space="wwn", value="20:00:00:25:b5:00:00:01"))
        s.flush()
        s.add(IdentityRow(kind="wwnn", space="wwn", value="20:00:00:25:b5:00:00:01"))
        s.flush()
