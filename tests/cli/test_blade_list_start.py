"""`anvil blade list` starts without SQLAlchemy or pydantic (issue 20: ≤ 0.3 s; importing them is
most of that) by reading a local SQLite store with the standard library, and prints what the
full path prints; whatever that read does not cover goes the full way, with the same output."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from appliance.services.failover import FailoverService, HealthSample
from appliance.services.inventory import COMPLIANCE_FACT
from appliance.store import open_store
from appliance.store.migrate import HEAD, upgrade
from appliance.store.tables import BindingRow, BladeRow, ProfileRow
from tests.cli.conftest import Anvil
from tests.support.profiles import one_nic_profile

HEAVY = ("sqlalchemy", "pydantic", "yaml", "cryptography", "asyncio")
# Runs the command as the console script does, then says which heavy packages it imported.
RUN = """import atexit, sys
heavy = set(sys.argv.pop(1).split(","))
atexit.register(lambda: print("HEAVY", sorted({m.partition(".")[0] for m in sys.modules} & heavy), file=sys.stderr))
sys.argv[0] = "anvil"
from appliance.cli.main import main
main()
"""


def listing(env: dict[str, str], *args: str) -> tuple[str, list[str]]:
    """`anvil blade list ARGS`'s output, and which of HEAVY it imported."""
    proc = subprocess.run([sys.executable, "-c", RUN, ",".join(HEAVY), "blade", "list", *args], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = [x for x in proc.stderr.splitlines() if x.startswith("HEAVY ")][-1]
    return proc.stdout, json.loads(line[len("HEAVY "):].replace("'", '"'))


@pytest.fixture
def quick_env(anvil_env: dict[str, str]) -> dict[str, str]:
    """The CLI's environment with nothing set but the state directory and the config file's
    place (the test fixture's boot listen is a setting the quick start leaves to pydantic)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")}
    return {**env, "ANVIL_STATE_DIR": anvil_env["ANVIL_STATE_DIR"], "ANVIL_CONFIG": anvil_env["ANVIL_CONFIG"]}


def _fill(anvil: Anvil, state_dir: Path, tmp_path: Path) -> None:
    """Blades in several states and chassis, NICs cabled and not; two bound to profiles of two tenants;
    health samples; a compliance reading on one."""
    anvil("switch", "enroll", "tor", "--address", "snmp://10.0.0.2:161", "--password-stdin", input="public\n")
    for i in range(1, 5):
        anvil("blade", "enroll", f"blade-0{i}", "--bmc", f"ipmi://10.0.0.{i}", "--username", "admin",
              "--password-stdin", "--nic", f"eth0=52:54:00:00:0{i}:01@tor:ge-{i}", "--nic",
              f"eth1=52:54:00:00:0{i}:02", "--cpus", str(8 * i), "--memory-gib", "64", "--chassis", f"c{i % 2}",
              "--slot", str(5 - i), input="pw\n")
    anvil("blade", "maintenance", "blade-03", "on", "--reason", "fan swap")
    for n, (name, tenant) in enumerate((("web-01", "acme"), ("db-01", "globex")), 1):
        (tmp_path / f"{name}.yaml").write_text(one_nic_profile(name, tenant, n))
        anvil("profile", "import", str(tmp_path / f"{name}.yaml"))
    store = open_store(f"sqlite:///{state_dir / 'anvil.db'}", migrate=False)
    try:
        with store.write() as s:
            for blade, (tenant, profile) in (("blade-02", ("globex", "db-01")), ("blade-04", ("acme", "web-01"))):
                pid = s.scalar(select(ProfileRow.id).where(ProfileRow.tenant == tenant, ProfileRow.name == profile))
                row = s.scalar(select(BladeRow).where(BladeRow.name == blade))
                assert pid is not None and row is not None
                s.add(BindingRow(profile_id=pid, blade_id=row.id, generation=1, state="live"))
                row.state = "active"
            row = s.scalar(select(BladeRow).where(BladeRow.name == "blade-01"))
            assert row is not None
            row.facts = {**row.facts, COMPLIANCE_FACT: {"baseline": "lab-2026", "compliant": False, "summary": "BMC"}}
        now = datetime.now(UTC)   # ages away from a unit's edge: the table's "(1m)" reads the same a second later
        fo = FailoverService(store)
        fo.record_health("blade-02", HealthSample(ok=True, power="on", health="ok", at=now - timedelta(seconds=90)))
        fo.record_health("blade-04", HealthSample(ok=False, at=now - timedelta(hours=2, minutes=30)))
    finally:
        store.close()


def _rows(text: str, fmt: str) -> list[dict[str, Any]]:
    """JSON or YAML rows with the sample's age rounded off (the second may turn between runs)."""
    rows: list[dict[str, Any]] = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    return [{**r, "healthAge": None if r["healthAge"] is None else r["healthAge"] // 60} for r in rows]


def _audit(state_dir: Path) -> tuple[Any, bytes]:
    with sqlite3.connect(state_dir / "anvil.db") as conn:
        count = conn.execute("SELECT count(*), max(id) FROM audit_log").fetchone()
    return count, (state_dir / "audit.head").read_bytes()


CASES = [(), ("-o", "wide"), ("-o", "json"), ("-o", "yaml"), ("--sort", "tenant"), ("--sort", "chassis", "-o", "json"),
         ("--state", "active", "-o", "json"), ("--filter", "tenant=acme"), ("--filter", "profile=globex/db-01")]


def test_blade_list_reads_the_store_without_sqlalchemy_or_pydantic_and_prints_what_the_full_path_prints(
        anvil: Anvil, state_dir: Path, tmp_path: Path, quick_env: dict[str, str]) -> None:
    _fill(anvil, state_dir, tmp_path)
    before = _audit(state_dir)
    # The full path: a store URL the quick read does not take, for the same file.
    full_env = {**quick_env, "ANVIL_STORE_URL": f"sqlite+pysqlite:///{state_dir / 'anvil.db'}"}
    for args in CASES:
        fast, heavy = listing(quick_env, *args)
        assert heavy == (["yaml"] if "yaml" in args else []), (args, heavy)
        full, heavy = listing(full_env, *args)
        assert "sqlalchemy" in heavy, args
        fmt = args[args.index("-o") + 1] if "-o" in args else "table"
        if fmt in ("json", "yaml"):
            assert _rows(fast, fmt) == _rows(full, fmt), args
            assert fmt == "yaml" or list(json.loads(fast)[0]) == list(json.loads(full)[0])   # keys in order
        else:
            assert fast == full, args
    table = listing(quick_env)[0].splitlines()
    assert [line.split()[:3] for line in table[1:]] == [
        ["blade-01", "spare", "-"], ["blade-02", "active", "globex/db-01"], ["blade-03", "maintenance", "-"],
        ["blade-04", "active", "acme/web-01"]]
    assert table[2].split()[3:6] == ["on", "ok", "(1m)"] and table[4].split()[3:6] == ["-", "unreachable", "(2h)"]
    assert _audit(state_dir) == before     # a read: no audit entry, the sealed head untouched


def test_with_a_fuller_configuration_the_settings_are_validated_and_the_store_still_read_without_sqlalchemy(
        anvil: Anvil, state_dir: Path, tmp_path: Path, quick_env: dict[str, str]) -> None:
    _fill(anvil, state_dir, tmp_path)
    fast = listing(quick_env, "-o", "json")[0]
    Path(quick_env["ANVIL_CONFIG"]).write_text('[api]\nlisten = "127.0.0.1:9443"\n')
    out, heavy = listing(quick_env, "-o", "json")
    assert heavy == ["pydantic"] and _rows(out, "json") == _rows(fast, "json")
    Path(quick_env["ANVIL_CONFIG"]).write_text("[network]\nparking_vlan = 5000\n")    # still refused, as before
    res = subprocess.run([sys.executable, "-m", "appliance", "blade", "list"], capture_output=True, text=True,
                         env=quick_env, timeout=60)
    assert res.returncode == 1 and "network.parking_vlan" in res.stderr


def test_what_the_quick_read_does_not_cover_goes_the_full_way(anvil: Anvil, state_dir: Path, tmp_path: Path,
                                                              quick_env: dict[str, str]) -> None:
    # No store yet: the full path creates and migrates it (the quick read never creates one).
    out, heavy = listing(quick_env, "-o", "json")
    assert json.loads(out) == [] and "sqlalchemy" in heavy and (state_dir / "anvil.db").is_file()
    _fill(anvil, state_dir, tmp_path)
    every = _rows(listing(quick_env, "-o", "json")[0], "json")
    # A text search: the full path, the same rows.
    out, heavy = listing(quick_env, "--search", "blade-0", "-o", "json")
    assert "sqlalchemy" in heavy and _rows(out, "json") == every
    # A store at a revision this version does not know (a newer Anvil's): the full path says so.
    with sqlite3.connect(state_dir / "anvil.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (f"{int(HEAD) + 1:04d}",))
    proc = subprocess.run([sys.executable, "-m", "appliance", "blade", "list"], capture_output=True, text=True,
                          env=quick_env, timeout=60)
    assert proc.returncode != 0 and proc.stdout == "", proc.stdout


def test_a_store_behind_this_version_is_migrated_by_the_full_path(state_dir: Path, quick_env: dict[str, str]) -> None:
    from appliance.store.db import make_engine

    previous = f"{int(HEAD) - 1:04d}"
    engine = make_engine(f"sqlite:///{state_dir / 'anvil.db'}")
    try:
        upgrade(engine, previous)
    finally:
        engine.dispose()
    out, heavy = listing(quick_env, "-o", "json")
    assert json.loads(out) == [] and "sqlalchemy" in heavy
    with sqlite3.connect(state_dir / "anvil.db") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]


@pytest.mark.postgres
def test_a_postgresql_store_is_listed_by_the_full_path(anvil: Anvil, state_dir: Path, tmp_path: Path,
                                                       quick_env: dict[str, str], pg_url: str) -> None:
    enrol = ("blade", "enroll", "blade-01", "--bmc", "ipmi://10.0.0.1", "--username", "admin", "--password-stdin",
             "--nic", "eth0=52:54:00:00:01:01", "--chassis", "c1", "--slot", "1")
    anvil(*enrol, input="pw\n")
    anvil(*enrol, input="pw\n", env={"ANVIL_STORE_URL": pg_url})
    out, heavy = listing({**quick_env, "ANVIL_STORE_URL": pg_url}, "-o", "json")
    assert "sqlalchemy" in heavy
    assert _rows(out, "json") == _rows(listing(quick_env, "-o", "json")[0], "json")
