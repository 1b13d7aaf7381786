"""The dnsmasq supervisor against a stand-in binary (started, reloaded by SIGHUP, restarted after
it dies, stopped by PID) and the reservation watcher against a real store; no root needed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.boot.dhcp import DhcpSettings, Dnsmasq, DnsmasqError, ReservationSync, write_atomic
from appliance.store.tables import BindingRow, BladeNicRow, ProfileRow
from tests.unit.boot.conftest import IMAGE, Inventory, profile_doc

# Answers `--test`, writes its PID file like dnsmasq, and counts SIGHUPs.
FAKE = """#!/bin/sh
[ "$1" = "--test" ] && exit 0
conf=${2#--conf-file=}
pidfile=$(sed -n 's/^pid-file=//p' "$conf")
trap 'echo hup >> "$pidfile.hups"' HUP
trap 'exit 0' TERM
echo $$ > "$pidfile"
while :; do sleep 0.05; done
"""


def _settings(tmp_path: Path) -> DhcpSettings:
    s = DhcpSettings(interface="lo", server="127.0.0.1", run_dir=tmp_path / "run", http_base="http://127.0.0.1:8080")
    write_atomic(s.config_path, f"pid-file={s.pidfile}\n")
    return s


def _fake(tmp_path: Path, body: str = FAKE) -> str:
    path = tmp_path / "fake-dnsmasq"
    path.write_text(body)
    path.chmod(0o755)
    return str(path)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


# Each wait below takes 0.05-0.3 s on an idle machine: a SIGHUP is handled once the stand-in's
# `sleep 0.05` returns, and a restart is the 0.05 s backoff plus a fork/exec of setpriv and sh
# that writes the PID file. A full run on a loaded 2-core machine once took 5.017 s for one of
# them, so the bound is for a stuck supervisor, not for a slow machine.
LOADED_MACHINE_DEADLINE = 60.0


async def _until(what: str, check: Callable[[], object], timeout: float = LOADED_MACHINE_DEADLINE) -> float:
    """Poll ``check`` until true; the seconds it took, or an assertion naming ``what``."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def test_supervisor_reloads_restarts_and_stops_by_pid(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    d = Dnsmasq(s, binary=_fake(tmp_path), min_backoff=0.05, max_backoff=0.2)
    pid = await d.start()
    try:
        assert d.pid == pid and int(s.pidfile.read_text()) == pid
        assert d.reload()
        hups = Path(f"{s.pidfile}.hups")
        await _until("the SIGHUP reaches dnsmasq", hups.exists)
        assert d.pid == pid and d.restarts == 0   # a reload is no restart
        os.kill(pid, signal.SIGKILL)
        await _until("dnsmasq restarted after SIGKILL", lambda: d.restarts == 1 and d.pid is not None)
        assert d.pid not in (None, pid) and int(s.pidfile.read_text()) == d.pid
        second = d.pid
    finally:
        await d.stop()
    assert second is not None and _gone(second) and d.pid is None and not s.pidfile.exists()
    assert not d.reload()


async def test_a_dnsmasq_that_exits_at_start_is_reported_with_its_words(tmp_path: Path) -> None:
    d = Dnsmasq(_settings(tmp_path), binary=_fake(tmp_path, '#!/bin/sh\n[ "$1" = "--test" ] && exit 0\n'
                                                            'echo "failed to bind DHCP server socket" >&2\nexit 2\n'))
    with pytest.raises(DnsmasqError, match=r"exit status 2.*failed to bind DHCP server socket"):
        await d.start()
    assert d.pid is None


async def test_a_config_dnsmasq_rejects_is_reported(tmp_path: Path) -> None:
    d = Dnsmasq(_settings(tmp_path), binary=_fake(tmp_path, '#!/bin/sh\necho "bad option at line 1" >&2\nexit 1\n'))
    with pytest.raises(DnsmasqError, match="bad option at line 1"):
        await d.start()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_reservations_follow_bindings_profile_edits_and_in_place_nic_changes(inventory: Inventory,
                                                                              tmp_path: Path) -> None:
    clock = Clock()
    s = _settings(tmp_path)
    sync = ReservationSync(inventory.store, s, full_every=60, clock=clock)
    assert sync.check() and sync.count == 4
    assert not sync.check()
    inventory.add_blade("blade-9", ("52:54:00:00:09:01",))
    inventory.add_profile(profile_doc("img-09", IMAGE, macs=("02:a0:00:00:09:01",)))
    inventory.bind("img-09", "blade-9")
    assert sync.check() and "02:a0:00:00:09:01,52:54:00:00:09:01,10.100.0.11,img-09\n" in s.hostsfile.read_text()
    with inventory.store.write() as session:     # a bound profile's address is edited
        row = session.scalars(select(ProfileRow).where(ProfileRow.name == "img-09")).one()
        doc = profile_doc("img-09", IMAGE, macs=("02:a0:00:00:09:01",))
        doc["spec"]["identity"]["nics"][0]["ipv4"] = "10.100.0.99/24"
        row.document = doc
    assert sync.check() and ",10.100.0.99,img-09" in s.hostsfile.read_text()
    with inventory.store.write() as session:     # a NIC's MAC changed in place: only the full pass sees it
        nic = session.scalars(select(BladeNicRow).where(BladeNicRow.mac == "52:54:00:00:09:01")).one()
        nic.mac = "52:54:00:00:09:02"
    assert not sync.check()
    clock.now += 61
    assert sync.check() and "52:54:00:00:09:02" in s.hostsfile.read_text()
    with inventory.store.write() as session:
        session.get(BindingRow, inventory.bindings["img-09"]).state = "released"  # type: ignore[union-attr]
    assert sync.check() and "img-09" not in s.hostsfile.read_text()


def test_one_bad_address_does_not_cost_the_other_reservations(inventory: Inventory, tmp_path: Path) -> None:
    doc = profile_doc("bad-01", IMAGE, macs=("02:a0:00:00:0b:01",))
    doc["spec"]["identity"]["nics"][0]["ipv4"] = "10.100.0.300/24"
    inventory.add_blade("blade-b", ("52:54:00:00:0b:01",))
    inventory.add_profile(doc)
    inventory.bind("bad-01", "blade-b")
    s = _settings(tmp_path)
    sync = ReservationSync(inventory.store, s)
    assert sync.check() and sync.count == 4 and "bad-01" not in s.hostsfile.read_text()
