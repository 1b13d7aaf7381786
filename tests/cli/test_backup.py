"""anvil backup → wipe → anvil restore on a fresh state directory gives back the same blades,
profiles and identities, a readable BMC credential and an intact audit chain; a wrong
passphrase is a clear error and changes nothing; `anvil version` names version and schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from appliance import __version__
from appliance.store.migrate import HEAD
from tests.cli.conftest import Anvil
from tests.cli.test_profiles import EXAMPLES

PASS = "correct horse battery staple"
BMC = "redfish+http://127.0.0.1:8000/redfish/v1/Systems/00000000-0000-0000-0000-000000000001"


def _fill(anvil: Anvil) -> None:
    anvil("blade", "enroll", "blade01", "--bmc", BMC, "--username", "admin", "--password-stdin",
          "--nic", "eth0=52:54:00:00:01:01", "--cpus", "16", "--memory-gib", "128", input="bmc-Pw-1\n")
    anvil("profile", "import", str(EXAMPLES / "web-01.yaml"), str(EXAMPLES / "db-01.yaml"))
    anvil("user", "add", "ann", "--role", "viewer", "--password-stdin", input="pass-word-1\n")


def _picture(anvil: Anvil, env: dict[str, str] | None = None) -> dict[str, object]:
    def out(*args: str) -> str:
        return anvil(*args, env=env).out

    return {"blades": json.loads(out("blade", "list", "-o", "json")),
            "profiles": json.loads(out("profile", "list", "-o", "json")),
            "web-01": out("profile", "show", "web-01", "--tenant", "acme", "-o", "yaml"),
            "db-01": out("profile", "show", "db-01", "--tenant", "acme", "-o", "yaml"),
            "users": json.loads(out("user", "list", "-o", "json"))}


def test_backup_wipe_restore_gives_everything_back(anvil: Anvil, state_dir: Path, tmp_path: Path) -> None:
    _fill(anvil)
    before = _picture(anvil)
    verify_before = anvil("audit", "verify").out
    (tmp_path / "pass").write_text(PASS + "\n")
    archive = tmp_path / "site.anvil-backup"
    res = anvil("backup", str(archive), "--passphrase-file", str(tmp_path / "pass"))
    assert f"at schema {HEAD}" in res.out and archive.stat().st_mode & 0o777 == 0o600
    blob = archive.read_bytes()
    assert b"web-01" not in blob and (state_dir / "secrets.key").read_bytes().strip() not in blob
    key = (state_dir / "secrets.key").read_bytes()
    shutil.rmtree(state_dir)                                   # the appliance is gone

    res = anvil("restore", str(archive), env={"ANVIL_BACKUP_PASSPHRASE": PASS})
    assert "restored" in res.out
    assert (state_dir / "secrets.key").read_bytes() == key
    assert _picture(anvil) == before
    verify_after = anvil("audit", "verify").out
    assert "intact" in verify_after and verify_after == verify_before
    # The restored secrets key still opens the stored BMC credential, and the chain goes on.
    anvil("user", "add", "bob", "--role", "viewer", "--password-stdin", input="pass-word-2\n")
    assert "intact" in anvil("audit", "verify").out


def test_wrong_passphrase_is_named_and_changes_nothing(anvil: Anvil, state_dir: Path, tmp_path: Path) -> None:
    _fill(anvil)
    archive = tmp_path / "b.anvil-backup"
    anvil("backup", str(archive), env={"ANVIL_BACKUP_PASSPHRASE": PASS})
    fresh = tmp_path / "fresh"
    env = {"ANVIL_STATE_DIR": str(fresh), "ANVIL_CONFIG": str(fresh / "anvil.toml"),
           "ANVIL_BACKUP_PASSPHRASE": "not the passphrase"}
    res = anvil("restore", str(archive), env=env, check=False)
    assert res.code != 0
    assert res.err.strip() == f"anvil: error: {archive}: wrong backup passphrase (or the archive is damaged)"
    assert not fresh.exists()
    # A damaged archive is refused the same way, and a store with data is never overwritten.
    bad = tmp_path / "bad"
    bad.write_bytes(archive.read_bytes()[:-1] + bytes([archive.read_bytes()[-1] ^ 1]))
    res = anvil("restore", str(bad), env={**env, "ANVIL_BACKUP_PASSPHRASE": PASS}, check=False)
    assert res.code != 0 and "wrong backup passphrase (or the archive is damaged)" in res.err
    assert not fresh.exists()
    before = _picture(anvil)
    res = anvil("restore", str(archive), env={"ANVIL_BACKUP_PASSPHRASE": PASS}, check=False)
    assert res.code != 0 and "already holds blades, profiles or audit entries" in res.err
    assert _picture(anvil) == before


def test_restore_into_another_state_dir_keeps_the_original(anvil: Anvil, tmp_path: Path) -> None:
    _fill(anvil)
    before = _picture(anvil)
    archive = tmp_path / "b.anvil-backup"
    anvil("backup", str(archive), env={"ANVIL_BACKUP_PASSPHRASE": PASS})
    other = tmp_path / "other"
    env = {"ANVIL_STATE_DIR": str(other), "ANVIL_CONFIG": str(other / "anvil.toml")}
    anvil("restore", str(archive), env={**env, "ANVIL_BACKUP_PASSPHRASE": PASS})
    assert _picture(anvil, env) == before
    assert "intact" in anvil("audit", "verify", env=env).out


def test_version_names_the_package_and_the_schema(anvil: Anvil) -> None:
    out = anvil("version").out
    assert f"anvil {__version__}" in out and "store schema none yet" in out
    anvil("profile", "list")
    assert f"store schema {HEAD} (this version's head: {HEAD})" in anvil("version").out


def test_backup_and_restore_show_progress_on_a_terminal_only(anvil: Anvil, anvil_env: dict[str, str],
                                                            state_dir: Path, tmp_path: Path) -> None:
    import os

    from tests.support.pty_run import run_on_pty

    _fill(anvil)
    env = {**os.environ, **anvil_env, "ANVIL_BACKUP_PASSPHRASE": PASS}
    plain = anvil("backup", str(tmp_path / "plain.anvil-backup"), env={"ANVIL_BACKUP_PASSPHRASE": PASS})
    assert plain.err == ""                       # a script sees only the result line
    res = run_on_pty(["backup", str(tmp_path / "tty.anvil-backup")], env)
    assert res.code == 0, res.tty
    assert res.out.startswith("backup written to ") and res.out.count("\n") == 1   # stdout as before
    lines = [line.rsplit("\r\033[K", 1)[-1] for line in res.tty.split("\n") if line]
    assert lines[0] == "backup: reading the store (one transaction) and the state files"
    assert any(line.startswith("  [####################] tables read ") for line in lines), res.tty
    assert any(line.startswith("backup: compressing and encrypting ") for line in lines), res.tty
    assert lines[-1].startswith("backup: writing ") and lines[-1].endswith("tty.anvil-backup")

    shutil.rmtree(state_dir)
    res = run_on_pty(["restore", str(tmp_path / "tty.anvil-backup")], env)
    assert res.code == 0, res.tty
    assert res.out.startswith("restored ")
    lines = [line.rsplit("\r\033[K", 1)[-1] for line in res.tty.split("\n") if line]
    assert lines[0].startswith("restore: decrypting and checking ")
    assert any(ln.startswith("restore: writing ") and ln.endswith(" state files") for ln in lines), res.tty
    rows = [ln for ln in lines if " rows loaded " in ln]
    assert rows and rows[-1].split()[-1].split("/")[0] == rows[-1].split()[-1].split("/")[1], res.tty
