"""The tgt driver against a real tgtd, seen by real initiators: libiscsi's tools and our
own small one (``iscsi_client``, which can write and keep a session open)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from appliance.drivers.protocols import DiskSpec, LunRef
from appliance.drivers.tgt import TgtDriver, create
from appliance.lab import procs
from appliance.lab import tgt as lab_tgt
from tests.integration.storage.conftest import SECTOR, start_tgtd
from tests.integration.storage.iscsi_client import IscsiError, Session

pytestmark = pytest.mark.timeout(60)

DISK = LunRef("iqn.2026-11.io.anvil.san:web-01", 1)
A = "iqn.2026-11.io.anvil:web-01"
B = "iqn.2026-11.io.anvil:intruder"
C = "iqn.2026-11.io.anvil:spare-07"
LOGIN_TARGET_NOT_FOUND = 0x0203   # what tgt answers an initiator its ACL leaves out


def _tool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL)


def _lun_url(tgtd: lab_tgt.TgtdHandle, lun: LunRef) -> str:
    return f"iscsi://{tgtd.portal}/{lun.target}/{lun.lun}"


async def _eventually(probe: Callable[[], Awaitable[frozenset[str]]], want: frozenset[str],
                      timeout: float = 5.0) -> frozenset[str]:
    """Poll ``await probe()`` until it equals ``want`` (tgtd tears sessions down asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await probe()
        if got == want or time.monotonic() >= deadline:
            return got
        await asyncio.sleep(0.05)


async def test_seeded_lun_is_seen_by_the_bound_initiator_only(
        driver: TgtDriver, tgtd: lab_tgt.TgtdHandle, disks: Path, seed: Path) -> None:
    disk = DiskSpec(disks / "web-01.img", 1 << 20, seed=seed)
    await driver.ensure_lun(DISK, disk)
    await driver.bind(DISK, A)
    assert await driver.bindings(DISK) == {A}
    assert disk.path.stat().st_size == 1 << 20 and disk.path.stat().st_mode & 0o777 == 0o600

    seen = _tool("iscsi-ls", "-s", "-i", A, f"iscsi://{tgtd.portal}")
    assert seen.returncode == 0, seen.stderr
    assert f"Target:{DISK.target} Portal:{tgtd.portal}" in seen.stdout
    assert "Lun:1    Type:DIRECT_ACCESS" in seen.stdout
    inq = _tool("iscsi-inq", "-i", A, _lun_url(tgtd, DISK))
    assert inq.returncode == 0 and "Peripheral Device Type:DIRECT_ACCESS" in inq.stdout, inq.stderr

    hidden = _tool("iscsi-ls", "-s", "-i", B, f"iscsi://{tgtd.portal}")
    assert DISK.target not in hidden.stdout
    refused = _tool("iscsi-inq", "-i", B, _lun_url(tgtd, DISK))
    assert refused.returncode != 0 and "Login Failed" in refused.stdout + refused.stderr
    with pytest.raises(IscsiError) as info:
        Session("127.0.0.1", tgtd.portal_port, DISK.target, B)
    assert info.value.login_status == LOGIN_TARGET_NOT_FOUND

    with Session("127.0.0.1", tgtd.portal_port, DISK.target, A) as s:
        assert s.read(0).startswith(b"SEED-SECTOR-0")
        assert s.read(2047) == bytes(SECTOR)   # the last sector: grown past the seed, zero


async def test_written_data_survives_release_and_tgtd_restart(
        driver: TgtDriver, tgtd: lab_tgt.TgtdHandle, disks: Path, seed: Path, tmp_path: Path) -> None:
    disk = DiskSpec(disks / "web-01.img", 1 << 20, seed=seed)
    marker = b"WRITTEN-BY-A".ljust(SECTOR, b"!")
    await driver.ensure_lun(DISK, disk)
    await driver.bind(DISK, A)
    with Session("127.0.0.1", tgtd.portal_port, DISK.target, A) as s:
        s.write(5, marker)

    await driver.unbind(DISK, A)
    assert await driver.bindings(DISK) == frozenset()
    with pytest.raises(IscsiError):
        Session("127.0.0.1", tgtd.portal_port, DISK.target, A)
    await driver.remove_lun(DISK)
    assert "Target 1" not in _tool("tgtadm", "-C", str(tgtd.control_port), "--op", "show", "--mode", "target").stdout
    assert disk.path.read_bytes()[5 * SECTOR:6 * SECTOR] == marker   # release keeps the file

    # A restarted tgtd knows no targets; ensure_lun brings the same disk back (no re-seed).
    lab_tgt.stop(tgtd)
    assert not tgtd.proc.alive()
    again = start_tgtd(tmp_path / "run2", port=tgtd.portal_port, control_port=tgtd.control_port)
    try:
        assert await driver.bindings(DISK) == frozenset()
        await driver.ensure_lun(DISK, disk)
        await driver.bind(DISK, C)
        with Session("127.0.0.1", again.portal_port, DISK.target, C) as s:
            assert s.read(5) == marker
            assert s.read(0).startswith(b"SEED-SECTOR-0")
    finally:
        lab_tgt.stop(again)


async def test_sessions_show_who_is_logged_in_now(driver: TgtDriver, tgtd: lab_tgt.TgtdHandle,
                                                  disks: Path, tmp_path: Path) -> None:
    await driver.ensure_lun(DISK, DiskSpec(disks / "web-01.img", 1 << 20))
    await driver.bind(DISK, A)
    await driver.bind(DISK, C)
    assert await driver.sessions(DISK) == frozenset()

    with Session("127.0.0.1", tgtd.portal_port, DISK.target, A):
        assert await driver.sessions(DISK) == {A}
    assert await _eventually(lambda: driver.sessions(DISK), frozenset()) == frozenset()

    # libiscsi's iscsi-perf keeps its session until it is stopped: a third-party initiator.
    perf = procs.start(["iscsi-perf", "-m", "1", "-i", C, _lun_url(tgtd, DISK)], tmp_path / "perf.log")
    try:
        assert await _eventually(lambda: driver.sessions(DISK), frozenset({C})) == {C}, perf.log_tail()
    finally:
        procs.stop(perf)
    assert await _eventually(lambda: driver.sessions(DISK), frozenset()) == frozenset()


async def test_unbind_closes_the_open_session_of_that_initiator_only(
        driver: TgtDriver, tgtd: lab_tgt.TgtdHandle, disks: Path) -> None:
    await driver.ensure_lun(DISK, DiskSpec(disks / "web-01.img", 1 << 20))
    await driver.bind(DISK, A)
    await driver.bind(DISK, C)
    a = Session("127.0.0.1", tgtd.portal_port, DISK.target, A)
    c = Session("127.0.0.1", tgtd.portal_port, DISK.target, C)
    try:
        assert await driver.sessions(DISK) == {A, C}
        await driver.unbind(DISK, A)
        assert await driver.sessions(DISK) == {C}
        assert await driver.bindings(DISK) == {C}
        with pytest.raises((IscsiError, OSError)):
            a.read(0)
        c.read(0)
    finally:
        a.close()
        c.close()


async def test_remove_lun_revokes_everyone_and_keeps_the_file(
        driver: TgtDriver, tgtd: lab_tgt.TgtdHandle, disks: Path) -> None:
    disk = DiskSpec(disks / "web-01.img", 1 << 20)
    await driver.ensure_lun(DISK, disk)
    await driver.bind(DISK, A)
    with Session("127.0.0.1", tgtd.portal_port, DISK.target, A) as s:
        s.write(1, b"KEEP".ljust(SECTOR, b"\0"))
        held = Session("127.0.0.1", tgtd.portal_port, DISK.target, A)
    try:
        await driver.remove_lun(DISK)      # tgt refuses while a session is open: the driver closes it
        assert await driver.sessions(DISK) == frozenset() and await driver.bindings(DISK) == frozenset()
        with pytest.raises(IscsiError):
            Session("127.0.0.1", tgtd.portal_port, DISK.target, A)
    finally:
        held.close()
    assert disk.path.read_bytes()[SECTOR:SECTOR + 4] == b"KEEP"


async def test_every_operation_twice_converges(driver: TgtDriver, tgtd: lab_tgt.TgtdHandle,
                                               disks: Path, seed: Path) -> None:
    other = LunRef("iqn.2026-11.io.anvil.san:db-01", 1)
    disk = DiskSpec(disks / "web-01.img", 1 << 20, seed=seed)
    for _ in range(2):
        await driver.ensure_lun(DISK, disk)
        await driver.ensure_lun(other, DiskSpec(disks / "db-01.img", 1 << 20))
        await driver.bind(DISK, A)
        await driver.bind(DISK, C)
    assert await driver.bindings(DISK) == {A, C}
    assert await driver.bindings(other) == frozenset()
    seed.write_bytes(b"CHANGED".ljust(SECTOR, b"\0"))     # an existing disk is never re-seeded
    await driver.ensure_lun(DISK, disk)
    assert disk.path.read_bytes().startswith(b"SEED-SECTOR-0")
    for _ in range(2):
        await driver.unbind(DISK, A)
    assert await driver.bindings(DISK) == {C}
    for _ in range(2):
        await driver.remove_lun(DISK)
        await driver.unbind(DISK, C)
    assert await driver.bindings(DISK) == frozenset() and await driver.sessions(DISK) == frozenset()
    assert await driver.bindings(other) == frozenset()   # the other target is untouched
    await driver.ensure_lun(DISK, disk)                  # and comes back on the lowest free tid
    out = _tool("tgtadm", "-C", str(tgtd.control_port), "--op", "show", "--mode", "target").stdout
    assert f"Target 1: {DISK.target}" in out and f"Target 2: {other.target}" in out


async def test_second_lun_on_a_target_is_removed_alone(driver: TgtDriver, tgtd: lab_tgt.TgtdHandle,
                                                       disks: Path) -> None:
    data = LunRef(DISK.target, 2)
    await driver.ensure_lun(DISK, DiskSpec(disks / "boot.img", 1 << 20))
    await driver.ensure_lun(data, DiskSpec(disks / "data.img", 2 << 20))
    await driver.bind(DISK, A)
    await driver.remove_lun(data)
    assert await driver.bindings(DISK) == {A}
    seen = _tool("iscsi-ls", "-s", "-i", A, f"iscsi://{tgtd.portal}").stdout
    assert "Lun:1" in seen and "Lun:2" not in seen


async def test_the_entry_point_builds_the_driver(tgtd: lab_tgt.TgtdHandle, disks: Path) -> None:
    from importlib.metadata import entry_points

    (ep,) = [ep for ep in entry_points(group="anvil.drivers.storage") if ep.name == "tgt"]
    drv = ep.load()(tgtd.settings())
    assert isinstance(drv, TgtDriver) and drv is not create()
    await drv.ensure_lun(DISK, DiskSpec(disks / "web-01.img", 1 << 20))
    assert await drv.sessions(DISK) == frozenset()
