"""anvil user …, anvil token …, anvil audit … through the real command."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

from tests.cli.conftest import Anvil


def test_users_tokens_and_the_audit_trail(anvil: Anvil) -> None:
    anvil("user", "add", "admin", "--role", "admin", "--password-stdin", input="s3cret-pass\n")
    anvil("user", "add", "olga", "--role", "operator", "--tenant", "acme", "--password-stdin", input="pass-word-1\n")
    users = json.loads(anvil("user", "list", "-o", "json").out)
    assert [(u["name"], u["role"], u["tenant"]) for u in users] == [("admin", "admin", None),
                                                                    ("olga", "operator", "acme")]
    assert "s3cret" not in anvil("user", "list", "-o", "yaml").out
    anvil("user", "passwd", "olga", "--password-stdin", input="pass-word-2\n")
    bad = anvil("user", "add", "x", "--role", "admin", "--password-stdin", input="short\n", check=False)
    assert bad.code != 0 and "must be 8 to" in bad.err

    token = anvil("token", "create", "ci", "--role", "viewer", "--expires", "2h").out.strip()
    assert token.startswith("anvil_")
    listed = anvil("token", "list").out
    assert "ci" in listed and token not in listed
    anvil("token", "revoke", "ci")
    assert json.loads(anvil("token", "list", "-o", "json").out)[0]["state"] == "revoked"
    anvil("user", "delete", "olga")

    entries = json.loads(anvil("audit", "list", "-o", "json").out)
    assert {(e["action"], e["resource"], e["name"]) for e in entries} >= {
        ("create", "user", "admin"), ("update", "user", "olga"), ("create", "token", "ci"),
        ("update", "token", "ci"), ("delete", "user", "olga")}
    assert all(e["who"].startswith("local:") and e["origin"] == "cli" for e in entries)
    assert "intact" in anvil("audit", "verify").out
    lines = anvil("audit", "export").out.splitlines()
    assert len(lines) == len(entries) and json.loads(lines[0])["action"] == "create"


def test_audit_verify_catches_a_database_writer(anvil: Anvil, state_dir: Path) -> None:
    """Someone who can write anvil.db (not secrets.key) cuts off the newest entries: verify fails."""
    for name in ("ann", "bob", "cid"):
        anvil("user", "add", name, "--role", "viewer", "--password-stdin", input="pass-word-1\n")
    ok = anvil("audit", "verify").out
    assert "intact (3 entries, 3 keyed; signed head: 3 entries" in ok
    head = state_dir / "audit.head"
    assert head.exists() and stat.S_IMODE(head.stat().st_mode) == 0o600
    with sqlite3.connect(state_dir / "anvil.db") as db:
        db.execute("DROP TRIGGER audit_log_no_delete")
        db.execute("DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)")
    bad = anvil("audit", "verify", check=False)
    assert bad.code != 0 and "entries were cut off" in bad.err
