"""Site DR on the VM lab (issue 16's VM-lab done-when): an iSCSI profile whose LUN holds a marker
at site A comes up at site B, on B's own QEMU blade, from the LUN's replica, with the marker there.

Two appliances on one machine, each with its own state directory, HTTPS port and VM lab of one
BIOS VM, started with the real ``anvil`` command (DESIGN §8 "Sites")::

    site A: anvil lab up --redfish 0 --vms 1 --netns NSa                          10.77.0.0/24
    site B: anvil lab up --redfish 0 --vms 1 --netns NSb --subnet 10.78.0.0/24     10.78.0.0/24

They pair as an operator pairs them (``anvil site pair-code`` at B, ``anvil site pair`` at A). The
profile is stamped on A's vm-01: iPXE sanhooks its LUN in A's tgtd, the lab image's agent reads
the (empty) disk, writes a marker of this run and reports the boot. A's DR plan maps the LUN to a
named replica on B's portal; ``copyFrom`` is A's tgt backing file (replicating a LUN is the
array's job: the lab copies the file at activation). ``anvil dr activate`` at B, with A reachable,
has A fence the profile (A's VM read back off from its BMC's record), copies the LUN into the
replica's backing file, and stamps the profile on B's vm-01, which boots from B's tgtd on
10.78.0.1 and reports the boot signal with the marker it read off the replica before writing.

Checked from outside the appliances: the boot signal's facts as B's boot role stored them, the
agent's lines on B's VM console, B's tgtd through ``tgtadm`` (the replica target, its ACL and the
session of the profile's IQN) and both backing files. At most 2 QEMUs run: A's VM is off
before B's powers on. Every process and both namespaces are stopped and deleted by the fixture.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from appliance.lab import netns, vmlab
from appliance.store.tables import DrPlanRow, JobEventRow, ProfileRow
from tests.e2e.conftest import (
    BOOT_TIMEOUT_S,
    CACHE,
    VmLab,
    close_lab,
    requires_vm_lab,
    skip_reason,
)
from tests.integration.engine.rig import Anvil, Serve

pytestmark = [requires_vm_lab, pytest.mark.slow, pytest.mark.xdist_group("vm-lab"), pytest.mark.timeout(1200)]

KERNEL, INITRD = "lab/vmlinuz", "lab/initrd.img"
NAME = "dr-01"
IQN = "iqn.2026-11.io.anvil.e2e:dr-01"
TARGET_A = "iqn.2026-11.io.anvil.san:e2e-dr-01"
TARGET_B = "iqn.2026-11.io.anvil.b:e2e-dr-01"
PORTAL_A, PORTAL_B = "10.77.0.1:3260", "10.78.0.1:3260"
SUBNET_B = "10.78.0.0/24"
REPLICATION_WAIT_S = 180


def _site(tmp: Path, ns: str, tenant: str) -> VmLab:
    anvil = Anvil(tmp)
    anvil.env.update({"ANVIL_ENGINE_BOOT_TIMEOUT": str(BOOT_TIMEOUT_S), "ANVIL_LAB_CACHE": str(CACHE)})
    anvil.env.pop("ANVIL_LAB_NETNS", None)
    # HTTPS: the recovery site pins the primary's certificate and the primary pins B's.
    return VmLab(anvil=anvil, serve=Serve(anvil, tls=True), netns=ns, tenant=tenant)


def _pair(a: VmLab, b: VmLab) -> None:
    """As an operator pairs them: B prints a one-time code, A pairs with it (A replicates to B)."""
    out = b.anvil("site", "pair-code", "--as", "b").out
    code, fp = re.search(r"code:\s+(\S+)", out), re.search(r"fingerprint:\s+(\S+)", out)
    assert code and fp, out
    got = a.anvil("site", "pair", "b", "--url", b.serve.url, "--code", code.group(1), "--fingerprint", fp.group(1),
                  "--as", "a", "--our-url", a.serve.url)
    assert "paired with site b" in got.out, got.out


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VmLab, VmLab]]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    prefix = netns.unique_prefix("dr")
    tenant = "dr" + os.urandom(3).hex()
    # Short base paths: QEMU's QMP socket lives under them (unix socket paths stop at 107 bytes).
    a = _site(tmp_path_factory.mktemp("dra"), prefix + "a", tenant)
    b = _site(tmp_path_factory.mktemp("drb"), prefix + "b", tenant)
    try:
        for site, extra in ((a, ()), (b, ("--subnet", SUBNET_B))):
            t0 = time.monotonic()
            up = site.anvil("lab", "up", "--redfish", "0", "--vms", "1", "--netns", site.netns, *extra, timeout=300)
            print(f"site {site.netns[-1]}: {up.out.strip()} ({time.monotonic() - t0:.1f} s)")
            site.serve.start(timeout=90)
        _pair(a, b)
        yield a, b
    finally:
        try:
            close_lab(b)     # B first: it holds the profile after the activation
        finally:
            close_lab(a)


def _replicated(b: VmLab, plan: str, timeout: float = REPLICATION_WAIT_S) -> None:
    """Until B holds the profile (lease "a") and the plan, as replication applied them."""
    store = b.anvil.store()
    try:
        deadline = time.monotonic() + timeout
        lease = origin = None
        while time.monotonic() < deadline:
            with store.read() as s:
                lease = s.scalar(select(ProfileRow.site_lease).where(ProfileRow.name == NAME))
                origin = s.scalar(select(DrPlanRow.origin_site).where(DrPlanRow.name == plan))
            if lease == "a" and origin == "a":
                return
            time.sleep(0.5)
        pytest.fail(f"not replicated to B in {timeout:g} s: profile lease {lease!r}, plan from {origin!r}\n"
                    f"A's log:\n{b.serve.log_tail(2000)}")
    finally:
        store.close()


def _backing(site: VmLab, target: str) -> Path:
    paths = site.target(target).backing
    assert len(paths) == 1, paths
    path = Path(paths[0])
    assert path.is_relative_to(site.anvil.state_dir / "luns"), path
    return path


def _marker_at(path: Path, length: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(2 * 512)      # where the lab image's agent keeps its disk marker
        return fh.read(length)


def _boot_signals(site: VmLab) -> list[dict[str, object]]:
    store = site.anvil.store()
    try:
        with store.read() as s:
            return [dict(e.data or {}) for e in s.scalars(select(JobEventRow).where(JobEventRow.kind == "boot-signal")
                                                          .order_by(JobEventRow.id))]
    finally:
        store.close()


def test_an_iscsi_profile_comes_up_at_site_b_from_its_luns_replica_with_the_marker(
        sites: tuple[VmLab, VmLab]) -> None:
    a, b = sites
    marker = "DR-" + os.urandom(4).hex()         # this run's own: nothing left over can pass for it
    a.import_profile(NAME, {
        "identity": {"uuid": "4c4c4544-0042-3510-8052-b4c04f384ed1", "iscsiInitiator": IQN,
                     "nics": [{"name": "eth0", "mac": "02:a0:00:00:ed:01", "pxe": True}]},
        "boot": {"mode": "legacy", "source": {
            "type": "iscsi", "portal": PORTAL_A, "target": TARGET_A, "lun": 1, "sizeMiB": 8,
            "kernel": KERNEL, "initrd": INITRD, "cmdline": f"console=ttyS0 panic=-1 anvil.disk_write={marker}"}},
    })

    # -- at A: the profile boots on A's VM and writes the marker to its LUN ------------------------------
    job = a.assign(NAME, "vm-01")
    signal, seconds = a.boot_signal(job)
    print(f"site A: power-on -> boot signal {seconds:.1f} s")
    assert signal["facts"]["disk"] == "" and signal["facts"]["ip"].startswith("10.77.0."), signal
    assert f"disk marker written: '{marker}'" in a.agent_lines("vm-01")
    lun_a = _backing(a, TARGET_A)
    assert _marker_at(lun_a, len(marker)) == marker.encode()

    # -- the plan: the LUN's replica at B, the lab's copy of it from A's backing file -------------------------
    plan = {"apiVersion": "anvil/v1", "kind": "DrPlan", "metadata": {"name": "vm-dr"},
            "spec": {"recoverySite": "b", "profiles": [{"tenant": a.tenant}],
                     "storage": [{"target": TARGET_A, "lun": 1, "copyFrom": str(lun_a),
                                  "replica": {"name": "dr-01-r", "portal": PORTAL_B, "target": TARGET_B,
                                              "lun": 1}}]}}
    plan_file = a.anvil.tmp / "vm-dr.yaml"
    plan_file.write_text(yaml.safe_dump(plan, sort_keys=False))
    a.anvil("dr", "plan", "create", str(plan_file))
    _replicated(b, "vm-dr")
    assert _boot_signals(b) == []

    # -- activation at B, A reachable -------------------------------------------------------------------------
    res = b.job("dr", "activate", "vm-dr")
    print(res.out)
    assert res.code == 0 and "succeeded" in res.out, (
        f"activation failed ({res.code}):\n{res.out}{res.err}\nB's console:\n{b.serial_text('vm-01')[-2500:]}\n"
        f"B's log:\n{b.serve.log_tail()}")
    a.stamped.discard(NAME)       # fenced: released at A, held by B
    b.stamped.add(NAME)
    print(f"activation: {res.seconds:.1f} s")

    # A fenced: its VM is off, as its BMC read it back, and A refuses to stamp the profile again.
    assert vmlab.vm_status(a.state) == {"vm-01": "off"}, vmlab.vm_status(a.state)
    refused = a.anvil("profile", "assign", NAME, "--tenant", a.tenant, check=False)
    assert refused.code != 0 and "held by site b" in refused.err, refused.err

    # B: its VM booted the replica on B's own network and reported the marker A wrote.
    signals = _boot_signals(b)
    assert len(signals) == 1, signals
    facts = signals[0]["facts"]
    assert isinstance(facts, dict)
    assert signals[0]["blade"] == "vm-01" and facts["mac"] == b.vm("vm-01")["mac"]
    assert facts["profile"] == f"{b.tenant}/{NAME}" and facts["ip"].startswith("10.78.0."), facts
    assert facts["disk"] == marker, facts            # read off the replica before the agent writes
    agent = b.agent_lines("vm-01")
    assert "iSCSI disk /dev/sda attached" in agent and f"disk marker: '{marker}'" in agent, agent
    assert "http://10.78.0.1:8080/boot/ipxe" in b.serial_text("vm-01")
    replica = b.target(TARGET_B)
    assert replica.acl == (IQN,) and IQN in replica.sessions
    lun_b = _backing(b, TARGET_B)
    assert lun_b != lun_a and _marker_at(lun_b, len(marker)) == marker.encode()
    assert TARGET_A not in b.targets()
    assert a.target(TARGET_A).acl == ()                  # released at A: nobody may log in there
