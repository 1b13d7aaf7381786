"""Replication records: signatures, version order, the registry, and applying at the receiver."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select

from appliance.drivers.protocols import Secret
from appliance.errors import ValidationError
from appliance.secrets import SecretBox
from appliance.sites import records as rec
from appliance.sites.kinds import default_registry
from appliance.sites.registry import RecordKind, Registry
from appliance.sites.replication import enqueue, outbox_records, receive
from appliance.store import Store
from appliance.store.tables import (
    ApiTokenRow,
    IdentityRow,
    LocalSiteRow,
    ProfileRow,
    ReplicationOutboxRow,
    SiteRow,
)

KEY = b"k" * 32


def record(seq: int, **kw: object) -> rec.Record:
    base = rec.Record("a", "b", seq, "profile", "acme/web-01", "put", {"x": seq}, "2026-01-01T00:00:00+00:00")
    return rec.sign(KEY, replace(base, **kw))  # type: ignore[arg-type]


def test_a_signed_record_verifies_and_any_change_breaks_it() -> None:
    r = record(1)
    assert rec.verifies(KEY, r)
    assert not rec.verifies(b"x" * 32, r)
    for change in ({"seq": 2}, {"data": {"x": 2}}, {"target": "c"}, {"origin": "b"}, {"op": "delete"},
                   {"key": "acme/web-02"}):
        assert not rec.verifies(KEY, replace(r, **change)), change  # type: ignore[arg-type]


def test_versions_must_follow_on() -> None:
    rec.check_next(record(8), 7)
    with pytest.raises(rec.RecordRefused, match=r"replay.*repeats or goes back") as got:
        rec.check_next(record(7), 7)
    assert got.value.reason == "replay" and got.value.last_applied == 7
    with pytest.raises(rec.RecordRefused, match="replay"):
        rec.check_next(record(3), 7)
    with pytest.raises(rec.RecordRefused, match="skips ahead: expected version 8") as got:
        rec.check_next(record(9), 7)
    assert got.value.reason == "gap"


def test_parse_names_what_is_wrong() -> None:
    good = record(1).to_json()
    assert rec.parse(good, "r") == record(1)
    with pytest.raises(ValueError, match=r"r\.seq: is missing or not a int"):
        rec.parse({**good, "seq": "1"}, "r")
    with pytest.raises(ValueError, match=r"r\.data: a delete carries none"):
        rec.parse({**good, "op": "delete"}, "r")
    with pytest.raises(ValueError, match="unknown fields extra"):
        rec.parse({**good, "extra": 1}, "r")


def test_the_registry_is_pluggable_and_refuses_a_kind_twice() -> None:
    reg = default_registry()
    assert reg.names == ("identity_pool", "template", "failover_domain", "profile", "dr_plan")
    extra = RecordKind("example", lambda s: {}, lambda s, c, k, d: None)
    more = reg.with_kind(extra)
    assert more.get("example") is extra and reg.get("example") is None
    with pytest.raises(ValueError, match="repeat"):
        Registry((extra, extra))
    with pytest.raises(ValueError, match="repeat"):
        reg.with_kind(RecordKind("dr_plan", lambda s: {}, lambda s, c, k, d: None))


# -- sender and receiver on two stores --------------------------------------------------

PROFILE = {"apiVersion": "anvil/v1", "kind": "ServerProfile",
           "metadata": {"name": "web-01", "tenant": "acme"},
           "spec": {"identity": {"nics": [{"name": "eth0", "mac": "02:aa:00:00:00:01"}]}}}


def _pair(origin: Store, target: Store, box: SecretBox) -> int:
    """Site rows as pairing leaves them; the DR token id target issued to origin."""
    with origin.write() as s:
        s.add(LocalSiteRow(name="a"))
        s.add(SiteRow(name="b", url="https://b", cert_fingerprint="0" * 64, cert_pem="", push=True,
                      token_enc=box.encrypt(Secret("t")), key_enc=box.encrypt(Secret(KEY.hex()))))
    with target.write() as s:
        s.add(LocalSiteRow(name="b"))
        tok = ApiTokenRow(name="site-a", token_hash="h" * 64, role="site")
        s.add(tok)
        s.flush()
        s.add(SiteRow(name="a", url="https://a", cert_fingerprint="0" * 64, cert_pem="", their_token_id=tok.id,
                      token_enc=box.encrypt(Secret("t")), key_enc=box.encrypt(Secret(KEY.hex()))))
        return tok.id


def _batch(origin: Store) -> list[dict[str, object]]:
    with origin.write() as s:
        site = s.scalar(select(SiteRow))
        assert site is not None
        enqueue(s, site, default_registry(), KEY, "a")
    with origin.read() as s:
        site = s.scalar(select(SiteRow))
        assert site is not None
        return [r.to_json() for r in outbox_records(s, site, "a")]


def test_a_batch_applies_once_and_its_repeat_is_refused_as_a_replay(tmp_path: Path) -> None:
    from appliance.store import open_store

    origin = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    target = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    box = SecretBox(tmp_path / "key")
    token = _pair(origin, target, box)
    with origin.write() as s:
        s.add(ProfileRow(kind="ServerProfile", tenant="acme", name="web-01", document=PROFILE))
        s.flush()
        pid = s.scalar(select(ProfileRow.id))
        s.add(IdentityRow(kind="mac", space="mac", value="02:aa:00:00:00:01", profile_id=pid, path="p"))
    batch = _batch(origin)
    assert [(r["seq"], r["kind"], r["key"]) for r in batch] == [(1, "profile", "acme/web-01")]
    assert _batch(origin) == batch          # nothing changed: nothing new is queued
    ack = receive(target, box, default_registry(), token, {"origin": "a", "records": batch})
    assert ack == {"acked": 1, "applied": 1}
    with pytest.raises(rec.RecordRefused, match="replay") as got:
        receive(target, box, default_registry(), token, {"origin": "a", "records": batch})
    assert got.value.last_applied == 1
    with target.read() as s:
        row = s.scalar(select(ProfileRow))
        assert row is not None and row.site_lease == "a" and row.document == PROFILE
        assert s.scalar(select(func.count()).select_from(ProfileRow)) == 1
        assert list(s.scalars(select(IdentityRow.value))) == ["02:aa:00:00:00:01"]
    # A deletion at the origin reaches the target as a delete record.
    with origin.write() as s:
        s.query(IdentityRow).delete()
        s.query(ProfileRow).delete()
    with origin.write() as s:
        s.query(ReplicationOutboxRow).delete()   # as if acknowledged
        site = s.scalar(select(SiteRow))
        assert site is not None
        site.acked_seq = 1
    batch = _batch(origin)
    assert [(r["seq"], r["op"]) for r in batch] == [(2, "delete")]
    receive(target, box, default_registry(), token, {"origin": "a", "records": batch})
    with target.read() as s:
        assert s.scalar(select(func.count()).select_from(ProfileRow)) == 0
        assert s.scalar(select(func.count()).select_from(IdentityRow)) == 0
    origin.close()
    target.close()


def test_a_forged_record_in_a_batch_refuses_the_whole_batch(tmp_path: Path) -> None:
    from appliance.store import open_store

    origin = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    target = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    box = SecretBox(tmp_path / "key")
    token = _pair(origin, target, box)
    with origin.write() as s:
        for n in ("web-01", "web-02"):
            s.add(ProfileRow(kind="ServerProfile", tenant="acme", name=n, document={**PROFILE, "n": n}))
    batch = _batch(origin)
    batch[1] = {**batch[1], "data": {**batch[1]["data"], "document": {"evil": True}}}  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="signature does not verify"):
        receive(target, box, default_registry(), token, {"origin": "a", "records": batch})
    with target.read() as s:
        assert s.scalar(select(func.count()).select_from(ProfileRow)) == 0
        assert s.scalar(select(SiteRow.inbox_seq)) == 0
    origin.close()
    target.close()
