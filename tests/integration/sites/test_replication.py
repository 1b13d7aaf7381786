"""Issue 16 items 1 and 2 with two real appliances: pairing, replication of 20 profiles with their
identities reserved at the recovery site, the lag, a partition, kill -9 of either side
mid-stream, forged and replayed records, and the DR token's reach."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from appliance.domain.identities import IdentityKind
from appliance.secrets import SecretBox
from appliance.sites import records as rec
from appliance.store.repos import identities as ids
from appliance.store.tables import AuditRow, IdentityRow, ProfileRow, SiteRow
from tests.integration.sites.two_sites import Site, import_profiles, pair, wait_for

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    a, b = Site("site-a", tmp_path / "a"), Site("site-b", tmp_path / "b")
    for s in (a, b):
        s.root.mkdir()
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.close()
        b.close()


def profiles(site: Site) -> dict[str, dict[str, object]]:
    """tenant/name → (lease, labels) of every profile."""
    with site.store().read() as s:
        return {f"{r.tenant}/{r.name}": {"lease": r.site_lease, "labels": r.document["metadata"].get("labels")}
                for r in s.scalars(select(ProfileRow).where(ProfileRow.kind == "ServerProfile"))}


def site_row(site: Site, name: str) -> SiteRow:
    with site.store().read() as s:
        row = s.scalar(select(SiteRow).where(SiteRow.name == name))
        assert row is not None
        s.expunge(row)
        return row


def caught_up(a: Site, b: Site) -> bool:
    want = {k: v["labels"] for k, v in profiles(a).items()}
    got = {k: v["labels"] for k, v in profiles(b).items()}
    return want == got and site_row(a, b.name).acked_seq == site_row(a, b.name).outbox_seq


def creates_per_profile(b: Site) -> dict[str, int]:
    """How many times B's audit trail saw each profile row inserted: a record applied twice would
    insert twice (or fail), so every count must be 1."""
    with b.store().read() as s:
        rows = s.execute(select(AuditRow.name, func.count()).where(AuditRow.resource == "profile",
                                                                   AuditRow.action == "create")
                         .group_by(AuditRow.name)).all()
    return {n: c for n, c in rows}


def test_pair_replicate_reserve_refuse_and_lag(sites: tuple[Site, Site], tmp_path: Path) -> None:
    a, b = sites
    a.cli("pool", "create", "macs", "--kind", "mac", "--start", "02:aa:00:00:00:00", "--end", "02:aa:00:00:00:ff")
    import_profiles(a, tmp_path, range(20))
    pair(a, b)
    wait_for("20 profiles at B", lambda: len(profiles(b)) == 20)
    wait_for("A to see B's acknowledgement", lambda: caught_up(a, b))
    # Same tenant, name and identities, leased to A: B will not stamp them.
    assert all(v["lease"] == "site-a" for v in profiles(b).values())
    with b.store().read() as s:
        held = sorted(s.scalars(select(IdentityRow.value).where(IdentityRow.profile_id.is_not(None))))
    assert held == [f"02:aa:00:00:00:{i:02x}" for i in range(20)]
    got = b.cli("profile", "assign", "web-003", "--tenant", "acme", "--blade", "b01", ok=False)
    assert got.returncode != 0 and "profile web-003 is held by site site-a" in got.stderr
    # A local allocation at B from the replicated pool skips every identity A's profiles hold.
    with b.store().write() as s:
        assert ids.allocate(s, "macs", IdentityKind.MAC, profile_id=None, path="test") == "02:aa:00:00:00:14"
        s.rollback()
    # The lag: A shows what B applied last and how long ago; B shows what it applied from A.
    show = a.cli("site", "show", b.name).stdout
    assert "reachable" in show and "yes" in show.split("reachable", 1)[1].splitlines()[0]
    assert "0 pending" in show and "profile acme/web-019" in show
    show_b = b.cli("site", "show", a.name).stdout
    assert "applied here from it" in show_b and "profile acme/web-019" in show_b

    # The DR token B gave A: DR routes only.
    box_a = SecretBox(a.state / "secrets.key", create=False)
    row = site_row(a, b.name)
    dr_token = box_a.decrypt(row.token_enc).reveal()
    assert b.call("GET", "/api/v1/blades", dr_token)[0] == 403
    assert b.call("GET", "/api/v1/profiles", dr_token)[0] == 403
    assert b.call("GET", "/api/v1/site-link/status", dr_token)[0] == 200
    assert b.call("GET", "/api/v1/site-link/status", b.admin_token())[0] == 403

    # A forged record (signed with another key) and a replayed one (an old version) posted
    # straight to B's endpoint: refused, with a clear reason, and nothing changes.
    key = bytes.fromhex(box_a.decrypt(row.key_enc).reveal())
    inbox = site_row(b, a.name).inbox_seq
    before = profiles(b)
    now = datetime.now(UTC).isoformat()
    evil = {"tenant": "acme", "name": "web-001", "document": {"hacked": True}, "identities": []}
    forged = rec.sign(b"\x00" * 32, rec.Record("site-a", "site-b", inbox + 1, "profile", "acme/web-001", "put",
                                               evil, now))
    status, body = b.call("POST", "/api/v1/site-link/replication", dr_token,
                          {"origin": "site-a", "records": [forged.to_json()]})
    assert status == 400 and "signature does not verify" in body["errors"][0]["reason"], body
    replay = rec.sign(key, rec.Record("site-a", "site-b", 3, "profile", "acme/web-001", "put", evil, now))
    status, body = b.call("POST", "/api/v1/site-link/replication", dr_token,
                          {"origin": "site-a", "records": [replay.to_json()]})
    assert status == 409 and body["reason"] == "replay" and "repeats or goes back" in body["detail"], body
    assert body["lastApplied"] == inbox
    assert profiles(b) == before and site_row(b, a.name).inbox_seq == inbox
    # A record may not be redirected either: one for another target is refused.
    other = rec.sign(key, rec.Record("site-a", "site-c", inbox + 1, "profile", "acme/web-001", "put", evil, now))
    status, body = b.call("POST", "/api/v1/site-link/replication", dr_token,
                          {"origin": "site-a", "records": [other.to_json()]})
    assert status == 400 and profiles(b) == before
    assert creates_per_profile(b) == {f"web-{i:03d}": 1 for i in range(20)}


def test_a_partition_catches_up_without_loss(sites: tuple[Site, Site], tmp_path: Path) -> None:
    a, b = sites
    import_profiles(a, tmp_path, range(20))
    pair(a, b)
    wait_for("B caught up", lambda: caught_up(a, b))
    b.stop()                                               # the link is cut
    import_profiles(a, tmp_path, range(5), rev="2", replace=True)
    import_profiles(a, tmp_path, range(20, 23))
    a.cli("profile", "delete", "web-019", "--tenant", "acme")
    wait_for("A to notice B is gone", lambda: site_row(a, b.name).last_error is not None, timeout=30)
    assert "unreachable" in (site_row(a, b.name).last_error or "")
    assert site_row(a, b.name).outbox_seq > site_row(a, b.name).acked_seq
    b.start()
    wait_for("B caught up after the partition", lambda: caught_up(a, b))
    got = profiles(b)
    assert len(got) == 22 and "acme/web-019" not in got
    assert got["acme/web-000"]["labels"] == {"rev": "2"} and got["acme/web-010"]["labels"] == {"rev": "1"}


@pytest.mark.parametrize("victim", ["sender", "receiver"])
def test_kill_9_mid_stream_loses_nothing_and_applies_nothing_twice(
        sites: tuple[Site, Site], tmp_path: Path, victim: str) -> None:
    a, b = sites
    pair(a, b)
    import_profiles(a, tmp_path, range(150))
    # Kill once B has applied part of the stream, not all of it.
    wait_for("B mid-stream", lambda: len(profiles(b)) > 0, timeout=60)
    (a if victim == "sender" else b).kill9()
    mid = len(profiles(b))
    assert 0 < mid < 150, mid        # the kill landed mid-stream
    (a if victim == "sender" else b).start()
    wait_for("B caught up after kill -9", lambda: caught_up(a, b), timeout=120)
    assert len(profiles(b)) == 150
    assert creates_per_profile(b) == {f"web-{i:03d}": 1 for i in range(150)}
    with b.store().read() as s:
        inbox = s.scalar(select(SiteRow.inbox_seq).where(SiteRow.name == a.name))
    assert inbox == site_row(a, b.name).outbox_seq
    print(f"killed the {victim} with {mid} of 150 profiles applied at B")
