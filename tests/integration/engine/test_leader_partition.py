"""Controller HA (issue 18 item 1): a leader cut off from PostgreSQL by a *silent* partition
(packets dropped, no reset: a pulled cable, a dead switch) while a step commit of it is open.

The commit's transaction share-locks the lease row (the fencing check) and the leader's session
holds the advisory lock; both stay held on the server for as long as it thinks the session is
alive, and TCP alone would think so for hours, so no standby could take over. The store's
connections make the server probe idle sessions (keepalives) and drop a silent one within
about 4 s (appliance/store/db.py): the standby takes over soon after the lease runs out, and
the cut-off leader's open commit can never land.

The database runs in a network namespace of its own and the leader in another, joined by a
veth pair the test takes down on the leader's side; the standby (this process) reaches the
database through its unix socket. Everything is created here and removed by PID / by name.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from appliance.engine.leader import LEASE_SECONDS, Leadership
from appliance.lab import netns
from appliance.store import Store, open_store
from tests.support.postgres import pg_bin

TAKEOVER_LIMIT = LEASE_SECONDS + 5.0   # the lease, then the server's keepalive verdict (~4 s) overlapping it
GIVE_UP = 30.0                         # without keepalives nothing would happen in this time (TCP: hours)

LEADER = """
import sys, time
from appliance.engine.leader import Leadership
from appliance.store import open_store
store = open_store(sys.argv[1], migrate=False)
lead = Leadership(store, owner="cut-leader")
assert lead.try_acquire(), "the leader did not lead"
with store.write() as s:
    assert lead.holds(s.connection())      # a step commit under way: the lease row share-locked
    print("holding", flush=True)
    time.sleep(600)
"""


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 `ip` is not installed"
    if pg_bin() is None:
        return "PostgreSQL binaries not found (apt-get install postgresql)"
    return None


@dataclass
class Split:
    db_ns: str
    node_ns: str
    node_if: str
    db_addr: str
    root: Path
    port: int

    def pg(self, *args: str, ns: bool = False) -> str:
        argv = ["runuser", "-u", "postgres", "--", *args]
        if ns:
            argv = ["ip", "netns", "exec", self.db_ns, *argv]
        return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout

    @property
    def socket_url(self) -> str:
        return f"postgresql+psycopg://postgres@/anvil?host={self.root}&port={self.port}"

    @property
    def tcp_url(self) -> str:
        return f"postgresql+psycopg://postgres@{self.db_addr}:{self.port}/anvil"


@pytest.fixture
def split() -> Iterator[Split]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    bindir = pg_bin()
    assert bindir is not None
    prefix = netns.unique_prefix("ha")
    net = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
    root = Path(tempfile.mkdtemp(prefix="anvil-pgsplit-"))
    shutil.chown(root, "postgres", "postgres")
    sp = Split(db_ns=prefix + "db", node_ns=prefix + "node", node_if=prefix + "n", db_addr=f"{net}.1", root=root,
               port=5432)
    started = False
    try:
        netns.add(sp.db_ns)
        netns.add(sp.node_ns)
        netns.add_veth(sp.db_ns, prefix + "d", sp.node_ns, sp.node_if)
        netns.add_address(sp.db_ns, prefix + "d", f"{net}.1/30")
        netns.add_address(sp.node_ns, sp.node_if, f"{net}.2/30")
        netns.link_set(sp.db_ns, prefix + "d", up=True)
        netns.link_set(sp.node_ns, sp.node_if, up=True)
        assert netns.ping(sp.node_ns, sp.db_addr), "the veth pair does not pass packets"
        data = root / "data"
        sp.pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
              "--locale=C.UTF-8", "--no-sync")
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {net}.0/30 trust\n")
        opts = f"-p {sp.port} -k {root} -c listen_addresses={sp.db_addr} -c fsync=off"
        sp.pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "pg.log"), "-w", "-t", "30", "-o", opts,
              "start", ns=True)
        started = True
        sp.pg(str(bindir / "psql"), "-h", str(root), "-p", str(sp.port), "-U", "postgres", "-qc",
              "CREATE DATABASE anvil")
        yield sp
    finally:
        if started:
            subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(root / "data"),
                            "-m", "immediate", "-w", "-t", "30", "stop"], capture_output=True, timeout=60)
        netns.delete_all([sp.node_ns, sp.db_ns])
        shutil.rmtree(root, ignore_errors=True)


def _sessions_from(store: Store, addr: str) -> int:
    with store.read() as s:
        return int(s.execute(text("SELECT count(*) FROM pg_stat_activity WHERE host(client_addr) = :a"),
                             {"a": addr}).scalar_one())


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_a_standby_takes_over_from_a_leader_silently_cut_off_mid_commit(split: Split) -> None:
    store = open_store(split.socket_url)    # migrates
    leader: subprocess.Popen[str] | None = None
    try:
        leader = subprocess.Popen(["ip", "netns", "exec", split.node_ns, sys.executable, "-c", LEADER,
                                   split.tcp_url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  cwd=Path(__file__).resolve().parents[3])
        assert leader.stdout is not None
        line = leader.stdout.readline()
        assert line.strip() == "holding", f"the leader did not start: {line}{leader.stdout.read()[-2000:]}"
        node_addr = split.db_addr.rsplit(".", 1)[0] + ".2"
        assert _sessions_from(store, node_addr) == 2   # the advisory-lock session and the open commit
        standby = Leadership(store, owner="standby")
        assert not standby.try_acquire(), "a standby took over while the leader's lease ran"

        netns.link_set(split.node_ns, split.node_if, up=False)   # silent: nothing is reset, packets vanish
        t0 = time.monotonic()
        took = -1.0
        while time.monotonic() - t0 < GIVE_UP:
            try:
                if standby.try_acquire():
                    took = time.monotonic() - t0
                    break
            except OperationalError:   # the row lock not granted within the lease's lock wait
                pass
            time.sleep(0.5)
        gone = _sessions_from(store, node_addr)
        print(f"silent partition: the cut-off leader's sessions dropped by the server and a standby leads "
              f"{took:.2f} s after the cut (lease {LEASE_SECONDS:g} s)")
        assert took >= 0, f"no standby took over in {GIVE_UP:g} s: the cut-off leader's locks stayed held"
        assert took <= TAKEOVER_LIMIT, took
        assert gone == 0, "the server still keeps a session of the cut-off leader"
        standby.release()
    finally:
        if leader is not None and leader.poll() is None:
            leader.kill()
            leader.wait(timeout=10)
        store.close()
