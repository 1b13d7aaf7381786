"""The audit trail against someone who can write the database but not read secrets.key.

8f9e50f chained entries with plain SHA-256: recomputing the chain after an edit, or cutting
off the newest entries, still passed `anvil audit verify`. Each case below reproduces what
such a writer would do — triggers dropped, rows changed with SQL — and verify must fail.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from appliance.services.audit import AuditService
from appliance.services.profiles import ProfileService
from appliance.store import Store, open_store
from appliance.store.audit import Actor, acting_as, hashed_fields
from appliance.store.audit_seal import GENESIS, AuditSeal, derive_key, unkeyed_hash
from appliance.store.tables import AuditRow
from tests.api.conftest import profile_doc


@pytest.fixture
def sealed(store_url: str, tmp_path: Path) -> Iterator[Store]:
    seal = AuditSeal(derive_key(secrets.token_bytes(32)), tmp_path / "audit.head")
    store = open_store(store_url, seal=seal)
    with acting_as(Actor("local:root", "cli")):
        for i in range(6):
            ProfileService(store).import_document(profile_doc(f"p-{i}", "acme", 0x60 + i))
    try:
        yield store
    finally:
        store.close()


def _as_attacker(store: Store, *statements: str) -> None:
    """What a database writer does: drop the append-only triggers, then change rows."""
    with store.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_delete"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log"))
        for sql in statements:
            conn.execute(text(sql))


def _ids(store: Store) -> list[int]:
    with store.read() as s:
        return list(s.scalars(select(AuditRow.id).order_by(AuditRow.id)))


def test_a_sealed_trail_verifies_against_its_head(sealed: Store) -> None:
    res = AuditService(sealed).verify()
    assert res.ok and res.checked == 6 and res.keyed == 6
    assert res.head is not None and (res.head.count, res.head.last_id) == (6, _ids(sealed)[-1])


def test_edit_and_recompute_the_chain_fails(sealed: Store) -> None:
    ids = _ids(sealed)
    _as_attacker(sealed, f"UPDATE audit_log SET who = 'local:mallory' WHERE id = {ids[2]}")
    # Recompute every hash from the edited entry on, the way 8f9e50f's chain allowed.
    with sealed.read() as s:
        rows = list(s.scalars(select(AuditRow).order_by(AuditRow.id)))
    prev, fixes = GENESIS, []
    for r in rows:
        h = unkeyed_hash(prev, hashed_fields(r))
        fixes.append(f"UPDATE audit_log SET prev_hash = '{prev}', hash = '{h}', keyed = false WHERE id = {r.id}")
        prev = h
    _as_attacker(sealed, *fixes)
    res = AuditService(sealed).verify()
    assert not res.ok and "signed head" in (res.reason or ""), res


def test_recomputing_with_a_guessed_key_fails_at_the_first_entry(sealed: Store) -> None:
    wrong = AuditSeal(derive_key(b"not the key"), Path("/nonexistent"))
    with sealed.read() as s:
        rows = list(s.scalars(select(AuditRow).order_by(AuditRow.id)))
    prev, fixes = GENESIS, []
    for r in rows:
        h = wrong.entry_hash(prev, hashed_fields(r))
        fixes.append(f"UPDATE audit_log SET prev_hash = '{prev}', hash = '{h}' WHERE id = {r.id}")
        prev = h
    _as_attacker(sealed, *fixes)
    res = AuditService(sealed).verify()
    assert not res.ok and res.first_bad == rows[0].id and "keyed hash" in (res.reason or "")


def test_cutting_off_the_newest_entries_fails(sealed: Store) -> None:
    ids = _ids(sealed)
    _as_attacker(sealed, f"DELETE FROM audit_log WHERE id >= {ids[-2]}")
    res = AuditService(sealed).verify()
    assert not res.ok and "cut off" in (res.reason or "") and res.checked == 4


def test_deleting_an_entry_in_the_middle_fails(sealed: Store) -> None:
    ids = _ids(sealed)
    _as_attacker(sealed, f"DELETE FROM audit_log WHERE id = {ids[3]}")
    res = AuditService(sealed).verify()
    assert not res.ok and res.first_bad == ids[4] and "previous-hash" in (res.reason or "")


def test_removing_the_head_and_truncating_fails(sealed: Store) -> None:
    assert sealed.seal is not None
    ids = _ids(sealed)
    _as_attacker(sealed, f"DELETE FROM audit_log WHERE id = {ids[-1]}")
    sealed.seal.head_path.unlink()
    res = AuditService(sealed).verify()
    assert not res.ok and "no signed head" in (res.reason or "")
    assert AuditService(sealed).adopt() is None      # a missing head over a keyed trail is never re-signed


def test_an_edited_head_fails(sealed: Store) -> None:
    assert sealed.seal is not None
    ids = _ids(sealed)
    _as_attacker(sealed, f"DELETE FROM audit_log WHERE id = {ids[-1]}")
    head = json.loads(sealed.seal.head_path.read_text())
    head.update(count=5, lastId=ids[-2])
    sealed.seal.head_path.write_text(json.dumps(head))
    res = AuditService(sealed).verify()
    assert not res.ok and "cannot be trusted" in (res.reason or "")


def test_an_unkeyed_trail_is_adopted_once_then_kept_keyed(store_url: str, tmp_path: Path) -> None:
    plain = open_store(store_url)           # as written before the chain was keyed
    with acting_as(Actor("local:root", "cli")):
        ProfileService(plain).import_document(profile_doc("old", "acme", 0x70))
    plain.close()
    seal = AuditSeal(derive_key(secrets.token_bytes(32)), tmp_path / "audit.head")
    store = open_store(store_url, seal=seal)
    try:
        head = AuditService(store).adopt()
        assert head is not None and head.count == 1
        with acting_as(Actor("local:root", "cli")):
            ProfileService(store).import_document(profile_doc("new", "acme", 0x71))
        res = AuditService(store).verify()
        assert res.ok and (res.checked, res.keyed) == (2, 1) and res.head is not None and res.head.count == 2
        # An entry appended later without the key (by a database writer) is refused.
        with acting_as(Actor("local:mallory", "sql")):
            ProfileService(open_store(store_url)).import_document(profile_doc("forged", "acme", 0x72))
        bad = AuditService(store).verify()
        assert not bad.ok and "without the appliance's key" in (bad.reason or "")
    finally:
        store.close()


def test_the_head_is_written_outside_the_writer_lock_and_counted_from_memory(
        store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under SQLite every writer of the process queues on the store's writer lock: the head's
    file (write, rename, under a busy disk several ms) is written once the lock is free, and
    the next commit counts its entries from the head this process committed, not the file."""
    seal = AuditSeal(derive_key(secrets.token_bytes(32)), tmp_path / "audit.head")
    store = open_store(store_url, seal=seal)
    held: list[bool] = []
    reads: list[int] = []
    advance, read_head = AuditSeal.advance, AuditSeal.read_head

    def spy_advance(self: AuditSeal, head: object) -> None:
        held.append(store._writers is not None and store._writers._is_owned())  # type: ignore[attr-defined]
        advance(self, head)  # type: ignore[arg-type]

    def spy_read(self: AuditSeal) -> object:
        if store._writers is not None and store._writers._is_owned():  # type: ignore[attr-defined]
            reads.append(1)   # read in a commit
        return read_head(self)

    monkeypatch.setattr(AuditSeal, "advance", spy_advance)
    monkeypatch.setattr(AuditSeal, "read_head", spy_read)
    try:
        with acting_as(Actor("local:root", "cli")):
            for i in range(5):
                ProfileService(store).import_document(profile_doc(f"q-{i}", "acme", 0x40 + i))
        assert held and not any(held)
        assert len(reads) <= 1            # the first commit may read the file; the others count from memory
        res = AuditService(store).verify()
        assert res.ok and res.head is not None and res.head.count == res.checked == 5
    finally:
        store.close()


def test_requests_that_committed_together_write_the_head_once(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Sixteen requests commit, then each publishes its head: the first writes the newest head
    the process committed, the others find theirs covered (the file's lock and rename were the
    submits' wait once the head left the writer lock)."""
    from appliance.store.audit_seal import Head

    seal = AuditSeal(derive_key(secrets.token_bytes(32)), tmp_path / "audit.head")
    heads = [Head(i, i, f"{i:064x}") for i in range(1, 17)]
    for head in heads:
        seal.committed(head)
    renames: list[Path] = []
    replace = Path.replace

    def counted(self: Path, target: Path) -> Path:
        renames.append(target)
        return replace(self, target)

    monkeypatch.setattr(Path, "replace", counted)
    for head in heads:
        seal.advance(head)
    assert seal.read_head() == heads[-1]
    assert len(renames) == 1
    seal.advance(Head(17, 17, "1" * 64))      # a head this process did not note is written as given
    assert seal.read_head() == Head(17, 17, "1" * 64) and len(renames) == 2
