"""The VM lab end to end: a real ``anvil lab up --redfish 0 --vms 2`` (QEMU blades, the boot
role and a tgtd in a namespace of the test's own) and a real ``anvil serve``, driven only
through the ``anvil`` command, and checked from outside the appliance: the VMs' serial
consoles, tgtd's own ``tgtadm`` view, the LUN's backing file, and the job events in the
store.

One lab per test module and worker (module scope): bringing it up costs ~10 s, every boot
~15-25 s under TCG. The namespace name and every port are unique per lab, so workers never
meet, and every fixture is self-sufficient, so however pytest-xdist spreads the tests they
pass; kept on one worker they share one lab (``--dist loadscope``; the tests also carry
``xdist_group("vm-lab")`` for ``--dist loadgroup``, which pytest 9.2 with xdist 3.8 ignores:
pytest-xdist#1386). A lab boots one VM at a time, so at most one QEMU per worker runs.

Teardown releases what is still stamped (so ``anvil lab down`` is exercised as a user
would run it), stops ``anvil serve`` by PID, takes the lab down, and, should any of that
fail, stops what lab.json names by PID and deletes the namespace.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from appliance.lab import netns, rack
from appliance.store.tables import JobEventRow
from tests.integration.engine.rig import Anvil, Result, Serve
from tests.support.tgtadm import TargetView, parse_targets

CACHE = Path(os.environ.get("ANVIL_LAB_CACHE", "/var/tmp/anvil-lab-cache"))
BOOT_TIMEOUT_S = 240        # the engine's await-boot deadline; a TCG boot takes 15-25 s on a loaded 2-core box
JOB_TIMEOUT_S = BOOT_TIMEOUT_S + 120


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the VM lab needs root (network namespaces, tap devices)"
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("tgtd", "tgt"), ("dnsmasq", "dnsmasq-base")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    return None


requires_vm_lab = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


# ---- the lab ----------------------------------------------------------------------------------------


@dataclass
class VmLab:
    """A lab of 2 VMs and a running appliance, both started through the real ``anvil`` command."""

    anvil: Anvil
    serve: Serve
    netns: str
    tenant: str
    stamped: set[str] = field(default_factory=set)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def state(self) -> dict[str, Any]:
        st = rack.read_state(self.anvil.state_dir / "lab")
        assert st is not None, "no lab is up"
        return st

    def vm(self, blade: str) -> dict[str, Any]:
        """The lab.json record of a VM blade (``vm-01`` → its ``LabVm`` fields)."""
        index = int(blade.rsplit("-", 1)[1])
        found: list[dict[str, Any]] = [v for v in self.state["vmlab"]["vms"] if v["index"] == index]
        assert found, f"no VM {blade} in lab.json"
        return found[0]

    def serial(self, blade: str) -> Path:
        vm = self.vm(blade)
        return Path(vm["run_dir"]) / f"{vm['name']}.serial"

    def serial_text(self, blade: str, offset: int = 0) -> str:
        """The console from byte ``offset`` on, without the firmware's cursor escapes. QEMU
        truncates the file at every power-on, so an offset only holds across resets."""
        try:
            data = self.serial(blade).read_bytes()[offset:]
        except OSError:
            return ""
        return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", data.decode("utf-8", "replace")).replace("\r", "")

    def serial_size(self, blade: str) -> int:
        try:
            return self.serial(blade).stat().st_size
        except OSError:
            return 0

    def process_log(self, name: str) -> str:
        """The log of the lab process ``name`` (``boot``, ``tgtd``, ``vm-01``…) as lab.json records it."""
        found = [p for p in self.state["processes"] if p["name"] == name]
        assert found, f"no lab process {name}"
        return Path(found[0]["log"]).read_text(errors="replace")

    def agent_lines(self, blade: str, offset: int = 0) -> str:
        return "\n".join(line for line in self.serial_text(blade, offset).splitlines() if "anvil-agent" in line)

    # -- tgtd ------------------------------------------------------------------------------------
    def targets(self) -> dict[str, TargetView]:
        port = self.state["storage"]["controlPort"]
        res = subprocess.run(["tgtadm", "-C", str(port), "--lld", "iscsi", "--op", "show", "--mode", "target"],
                             capture_output=True, text=True, timeout=10, check=True)
        return parse_targets(res.stdout)

    def target(self, name: str) -> TargetView:
        found = self.targets()
        assert name in found, f"tgtd has no target {name}; it has {sorted(found)}"
        return found[name]

    # -- profiles and jobs --------------------------------------------------------------------------
    def import_profile(self, name: str, spec: dict[str, Any]) -> None:
        doc = {"apiVersion": "anvil/v1", "kind": "ServerProfile",
               "metadata": {"name": name, "tenant": self.tenant}, "spec": spec}
        path = self.anvil.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.anvil("profile", "import", str(path))

    def job(self, *args: str) -> Result:
        """An ``anvil`` command that follows a job; fails at once, with the appliance's log, if
        ``anvil serve`` exits meanwhile (the command itself would wait for it for an hour)."""
        t0 = time.monotonic()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen([sys.executable, "-m", "appliance", *args], stdout=out, stderr=err,
                                    env=self.anvil.env, stdin=subprocess.DEVNULL)
            try:
                deadline = t0 + JOB_TIMEOUT_S
                while proc.poll() is None:
                    served = self.serve.proc
                    if served is None or served.poll() is not None:
                        pytest.fail(f"anvil serve exited ({served.returncode if served else 'not started'}) "
                                    f"during `anvil {' '.join(args)}`:\n{self.serve.log_tail()}")
                    if time.monotonic() > deadline:
                        pytest.fail(f"`anvil {' '.join(args)}` did not end within {JOB_TIMEOUT_S} s")
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            out.seek(0)
            err.seek(0)
            return Result(proc.returncode, out.read(), err.read(), time.monotonic() - t0)

    def assign(self, name: str, blade: str) -> str:
        """``anvil profile assign NAME --blade BLADE``, followed to its end; the job id."""
        res = self.job("profile", "assign", name, "--tenant", self.tenant, "--blade", blade)
        job = _job_id(res.out)
        if res.code != 0 or "succeeded" not in res.out:
            pytest.fail(f"stamping {name} on {blade} failed ({res.code}):\n{res.out}{res.err}\n"
                        f"agent on {blade}:\n{self.agent_lines(blade)[-3000:]}\n"
                        f"console tail:\n{self.serial_text(blade)[-1500:]}\nserve log:\n{self.serve.log_tail()}")
        self.stamped.add(name)
        return job

    def release(self, name: str) -> None:
        res = self.job("profile", "release", name, "--tenant", self.tenant)
        assert res.code == 0 and "succeeded" in res.out, f"releasing {name} failed:\n{res.out}{res.err}"
        self.stamped.discard(name)

    def events(self, job_id: str) -> list[JobEventRow]:
        store = self.anvil.store()
        try:
            with store.read() as s:
                rows = list(s.scalars(select(JobEventRow).where(JobEventRow.job_id == job_id)
                                      .order_by(JobEventRow.id)))
                s.expunge_all()
                return rows
        finally:
            store.close()

    def boot_signal(self, job_id: str) -> tuple[dict[str, Any], float]:
        """The job's boot-signal data, and seconds from the power-on step's start to it."""
        events = self.events(job_id)
        power = [e for e in events if e.kind == "step-started" and (e.data or {}).get("step") == "power-on"]
        signals = [e for e in events if e.kind == "boot-signal"]
        assert power and signals, f"job {job_id}: no power-on or no boot-signal among {[e.kind for e in events]}"
        return dict(signals[0].data or {}), (signals[0].at - power[-1].at).total_seconds()

    def record_boot(self, what: str, seconds: float, record: Callable[[str, object], None]) -> None:
        """Say how long the boot took, where a reader of the run finds it."""
        self.timings[what] = seconds
        record(f"boot_seconds_{what}", round(seconds, 1))
        line = f"VM lab boot ({what}): power-on -> boot signal {seconds:.1f} s"
        print(line)
        artifacts = Path(__file__).resolve().parents[2] / "test-artifacts"
        if artifacts.is_dir():
            with open(artifacts / "vm-lab-boot-times.txt", "a") as fh:
                fh.write(f"{time.strftime('%F %T')} {line}\n")

    def wait_console(self, blade: str, offset: int, markers: tuple[str, ...], timeout: float) -> str:
        """The console text after ``offset`` once it holds one of ``markers``; fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.serial_text(blade, offset)
            if any(m in text for m in markers):
                return text
            time.sleep(0.5)
        pytest.fail(f"none of {markers} on {blade}'s console within {timeout:g} s:\n"
                    f"{self.serial_text(blade, offset)[-2500:]}")


def _job_id(out: str) -> str:
    m = re.search(r"^job (\S+): ", out, re.MULTILINE)
    assert m, f"no job id in:\n{out}"
    return m.group(1)


def _lab_left(anvil: Anvil) -> None:
    """Whatever is still recorded in lab.json: stop it by PID, delete its namespaces."""
    left = rack.read_state(anvil.state_dir / "lab")
    if left is not None:
        rack.teardown(left)
        rack.lab_file(anvil.state_dir / "lab").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def vm_lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[VmLab]:
    """2 BIOS VMs (vm-01, vm-02; ``LAB_BIOS_VMS`` of them when the test module sets it), plus
    ``LAB_UEFI_VMS`` UEFI ones after them, and a VM host with ``LAB_VM_HOST_SLOTS`` slots."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    # A short base path: QEMU's QMP socket lives under it and unix socket paths stop at 107 bytes.
    anvil = Anvil(tmp_path_factory.mktemp("e2e"))
    ns = netns.unique_prefix("e2") + "lab"
    anvil.env.update({"ANVIL_ENGINE_BOOT_TIMEOUT": str(BOOT_TIMEOUT_S), "ANVIL_LAB_CACHE": str(CACHE)})
    anvil.env.pop("ANVIL_LAB_NETNS", None)
    lab = VmLab(anvil=anvil, serve=Serve(anvil), netns=ns, tenant="e2e" + os.urandom(3).hex())
    try:
        uefi = int(getattr(request.module, "LAB_UEFI_VMS", 0))
        bios = int(getattr(request.module, "LAB_BIOS_VMS", 2))
        args = ["--vms", str(bios + uefi), "--uefi-vms", str(uefi)]
        slots = int(getattr(request.module, "LAB_VM_HOST_SLOTS", 0))
        if slots:
            args += ["--vm-host-slots", str(slots)]
        t0 = time.monotonic()
        up = anvil("lab", "up", "--redfish", "0", *args, "--netns", ns, timeout=300)
        lab.timings["lab_up"] = time.monotonic() - t0
        print(f"anvil lab up {' '.join(args)}: {lab.timings['lab_up']:.1f} s: {up.out.strip()}")
        lab.serve.start(timeout=60)
        yield lab
    finally:
        close_lab(lab)


def close_lab(lab: VmLab) -> None:
    """Release what is still stamped, stop ``anvil serve``, ``anvil lab down``; then check that no
    lab process, tgtd socket or namespace outlived it (stopping by PID what lab.json still names)."""
    anvil, ns = lab.anvil, lab.netns
    try:
        if lab.serve.proc is not None and lab.serve.proc.poll() is None:
            for name in sorted(lab.stamped):
                with contextlib.suppress(AssertionError, pytest.fail.Exception):
                    lab.release(name)
    finally:
        lab.serve.stop()
        state = rack.read_state(anvil.state_dir / "lab")
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            down = anvil("lab", "down", check=False, timeout=120)
            print(f"anvil lab down ({down.code}, {down.seconds:.1f} s): {down.out.strip()} {down.err.strip()}")
        _lab_left(anvil)
        netns.delete_all([ns])
        if state is not None:
            alive = [p["name"] for p in state["processes"] if rack.pid_alive(int(p["pid"]), p.get("starttime"))]
            assert not alive, f"lab processes outlived the lab: {alive}"
            # A killed tgtd leaves its control socket behind; lab down removes it.
            port = (state.get("storage") or {}).get("controlPort")
            assert port is None or not Path(f"/var/run/tgtd/socket.{port}").exists(), \
                f"tgtd's control socket {port} outlived the lab"
        assert not netns.exists(ns), f"namespace {ns} outlived the lab"



# ---- another host on the provisioning network ------------------------------------------------------

STRANGER_IP = "10.77.0.250"


@dataclass(frozen=True)
class Stranger:
    """A host of the test's own in the lab's provisioning network (its own namespace, a veth into
    the lab's bridge): what anybody plugged into that network can do."""

    netns: str

    def http(self, method: str, url: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        """One HTTP request from the stranger's namespace: (status, body)."""
        code = ("import sys, urllib.request, urllib.parse, urllib.error\n"
                "m, u, f = sys.argv[1], sys.argv[2], sys.argv[3]\n"
                "data = urllib.parse.urlencode(dict(p.split('=', 1) for p in f.split('&') if p)).encode() "
                "if m == 'POST' else None\n"
                "try:\n"
                "    r = urllib.request.urlopen(urllib.request.Request(u, data=data, method=m), timeout=10)\n"
                "    print(r.status); print(r.read().decode())\n"
                "except urllib.error.HTTPError as e:\n"
                "    print(e.code); print(e.read().decode())\n")
        encoded = "&".join(f"{k}={v}" for k, v in (form or {}).items())
        res = subprocess.run(["ip", "netns", "exec", self.netns, sys.executable, "-c", code, method, url, encoded],
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stderr
        status, _, body = res.stdout.partition("\n")
        return int(status), body


@contextlib.contextmanager
def stranger_host(lab_netns: str) -> Iterator[Stranger]:
    prefix = netns.unique_prefix("st")
    ns, inside, outside = prefix + "ns", prefix + "a", prefix + "b"
    netns.add(ns)
    try:
        netns.add_veth(ns, inside, lab_netns, outside)
        netns.run(["ip", "-n", lab_netns, "link", "set", outside, "master", "br0", "up"])
        netns.add_address(ns, inside, f"{STRANGER_IP}/24")
        netns.link_set(ns, inside, up=True)
        assert netns.ping(ns, "10.77.0.1", tries=10), "the stranger does not reach the boot service"
        yield Stranger(ns)
    finally:
        netns.delete(ns)     # its veth (and the peer in the lab's bridge) goes with it
