"""Users, passwords, throttling, console sessions and tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from appliance.errors import Conflict, ValidationError
from appliance.services.tokens import TokenService
from appliance.services.users import (
    MAX_DELAY,
    MAX_FAILURES,
    LoginThrottled,
    UserService,
    check_password,
    hash_password,
)
from appliance.store import Store


def test_passwords_are_scrypt_hashes_and_check_in_constant_form() -> None:
    h = hash_password("correct horse")
    assert h.startswith("scrypt$") and "correct" not in h
    assert check_password("correct horse", h)
    assert not check_password("wrong horse", h)
    assert not check_password("x", "garbage")


def test_user_add_checks_role_name_and_password(store: Store) -> None:
    svc = UserService(store)
    with pytest.raises(ValidationError) as exc:
        svc.add("Bad Name", "short", role="root")
    assert {i.path for i in exc.value.issues} == {"name", "password", "role"}
    svc.add("alice", "password1", role="operator", tenant="acme")
    with pytest.raises(Conflict):
        svc.add("alice", "password2", role="viewer")
    p = svc.authenticate("alice", "password1")
    assert p is not None and (p.role, p.tenant, p.who) == ("operator", "acme", "user:alice")
    assert svc.authenticate("alice", "nope-nope") is None
    assert svc.authenticate("nobody", "password1") is None


def test_repeated_failures_lock_that_address_out_of_the_user_even_with_the_right_password(store: Store) -> None:
    svc = UserService(store)
    svc.add("bob", "password1", role="viewer")
    for _ in range(MAX_FAILURES):
        assert svc.authenticate("bob", "wrong-pass", source="10.0.0.66") is None
    with pytest.raises(LoginThrottled):
        svc.authenticate("bob", "password1", source="10.0.0.66")

    class Later(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def,override]
            return datetime.now(UTC) + timedelta(minutes=5)

    assert UserService(store, clock=Later).authenticate("bob", "password1", source="10.0.0.66") is not None


def test_guessing_from_one_address_never_locks_the_user_out_elsewhere(store: Store) -> None:
    """8f9e50f locked the user itself: five wrong passwords from anywhere shut the admin out."""
    svc = UserService(store)
    svc.add("admin2", "password1", role="admin")
    assert svc.login_delay("admin2") == 0.0
    for i in range(MAX_FAILURES):
        assert svc.authenticate("admin2", f"guess-{i}", source="203.0.113.9") is None
    with pytest.raises(LoginThrottled):
        svc.authenticate("admin2", "password1", source="203.0.113.9")
    # The admin, from its own address, gets in; guessing elsewhere only slows it, by a bounded delay.
    assert 0.0 < svc.login_delay("admin2") <= MAX_DELAY
    assert svc.authenticate("admin2", "password1", source="192.0.2.10") is not None
    info = svc.get("admin2")
    assert info.locked_until is None or info.locked_until > datetime.now(UTC)   # informational only


def test_sessions_carry_a_csrf_token_and_end_with_a_new_password(store: Store) -> None:
    svc = UserService(store)
    svc.add("carol", "password1", role="admin")
    cookie, csrf = svc.open_session("carol")
    got = svc.resolve_session(cookie)
    assert got is not None and got[1] == csrf and got[0].name == "carol"
    assert svc.resolve_session("forged") is None
    svc.set_password("carol", "password2")
    assert svc.resolve_session(cookie) is None


def test_the_last_appliance_admin_cannot_be_deleted(store: Store) -> None:
    svc = UserService(store)
    svc.add("root1", "password1", role="admin")
    with pytest.raises(Conflict):
        svc.delete("root1")
    svc.add("root2", "password1", role="admin")
    svc.delete("root1")
    assert [u.name for u in svc.list()] == ["root2"]


def test_tokens_expire_and_revoke(store: Store) -> None:
    svc = TokenService(store)
    live = svc.create("ci", role="viewer", tenant="acme", ttl=timedelta(hours=1))
    gone = svc.create("old", role="admin", ttl=timedelta(seconds=-1))
    p = svc.authenticate(live)
    assert p is not None and (p.name, p.role, p.tenant) == ("ci", "viewer", "acme")
    assert svc.authenticate(gone) is None
    states = {t.name: t.state(datetime.now(UTC)) for t in svc.list()}
    assert states == {"ci": "active", "old": "expired"}
    svc.revoke("ci")
    assert svc.authenticate(live) is None
    with pytest.raises(ValidationError):
        svc.create("bad", role="god")


def test_an_address_with_many_failed_logins_is_held_back_for_a_window() -> None:
    from appliance.services.users import AddressThrottle

    now = [0.0]
    t = AddressThrottle(limit=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert not t.blocked("10.0.0.1")
        t.failed("10.0.0.1")
    assert t.blocked("10.0.0.1") and not t.blocked("10.0.0.2")
    now[0] = 61
    assert not t.blocked("10.0.0.1")
