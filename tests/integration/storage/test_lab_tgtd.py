"""appliance.lab.tgt: tgtds on their own control ports, in or out of a namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.drivers.protocols import DiskSpec, LunRef
from appliance.drivers.tgt import create
from appliance.lab import netns, procs
from appliance.lab import tgt as lab_tgt
from tests.integration.storage.conftest import start_tgtd

pytestmark = pytest.mark.timeout(60)

DISK = LunRef("iqn.2026-11.io.anvil.san:web-01", 1)
A = "iqn.2026-11.io.anvil:web-01"


async def test_two_tgtds_on_their_own_control_ports_are_independent(
        tgtd: lab_tgt.TgtdHandle, disks: Path, tmp_path: Path) -> None:
    other = start_tgtd(tmp_path / "other")
    try:
        first, second = create(tgtd.settings()), create(other.settings())
        await first.ensure_lun(DISK, DiskSpec(disks / "one.img", 1 << 20))
        await first.bind(DISK, A)
        assert await first.bindings(DISK) == {A}
        assert await second.bindings(DISK) == frozenset()
    finally:
        lab_tgt.stop(other)
    assert not other.proc.alive() and tgtd.proc.alive()


def test_a_taken_control_port_is_refused_before_starting(tgtd: lab_tgt.TgtdHandle, tmp_path: Path) -> None:
    assert lab_tgt.control_port_taken(tgtd.control_port)
    with pytest.raises(procs.ProcError, match=f"control port {tgtd.control_port} is held"):
        lab_tgt.start(tmp_path, "127.0.0.1", procs.free_tcp_port(), tgtd.control_port)


def test_stop_kills_a_tgtd_that_has_targets(tgtd: lab_tgt.TgtdHandle) -> None:
    # tgtd -f ignores SIGTERM while it has targets: stop must still end it, by PID.
    argv = ["tgtadm", "-C", str(tgtd.control_port), "--lld", "iscsi", "--op", "new", "--mode", "target",
            "--tid", "1", "-T", DISK.target]
    assert subprocess.run(argv, timeout=5, capture_output=True).returncode == 0
    lab_tgt.stop(tgtd)
    assert not tgtd.proc.alive()
    assert not lab_tgt.control_port_taken(tgtd.control_port)
    assert not (lab_tgt.LOCK_DIR / f"socket.{tgtd.control_port}").exists()


async def test_driver_reaches_a_tgtd_inside_a_namespace(tmp_path: Path, disks: Path) -> None:
    if lab_tgt.missing_tools() or shutil.which("ip") is None:
        pytest.skip("needs tgt and iproute2")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    ns = netns.unique_prefix("tg") + "san"
    netns.add(ns)
    try:
        # The namespace has its own loopback: the portal port is free there whatever the host uses.
        handle = start_tgtd(tmp_path / "run", port=3260, control_port=lab_tgt.free_control_port(), netns=ns)
        try:
            driver = create({**handle.settings(), "roots": [disks]})
            assert driver.settings.netns == ns
            await driver.ensure_lun(DISK, DiskSpec(disks / "web-01.img", 1 << 20))
            await driver.bind(DISK, A)
            assert await driver.bindings(DISK) == {A}
            seen = netns.run(["iscsi-ls", "-s", "-i", A, "iscsi://127.0.0.1:3260"], netns=ns)
            assert f"Target:{DISK.target}" in seen and "Lun:1" in seen
            await driver.remove_lun(DISK)
            assert await driver.bindings(DISK) == frozenset()
        finally:
            lab_tgt.stop(handle)
        assert not handle.proc.alive()
    finally:
        netns.delete(ns)
