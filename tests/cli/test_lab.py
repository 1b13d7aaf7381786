"""``anvil lab``, ``blade power|boot|inspect`` and ``switch port-vlans`` against real emulators.

Every test runs the real ``anvil`` command. Emulator processes outlive ``lab up`` by
design, so the ``lab`` fixture always takes the lab down: with ``anvil lab down``, and
failing that by stopping the PIDs recorded in lab.json and deleting its namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.lab import procs, rack
from tests.cli.conftest import Anvil


def _lab_state(state_dir: Path) -> dict[str, Any] | None:
    return rack.read_state(state_dir / "lab")


def _pids(state: dict[str, Any]) -> list[tuple[int, int | None]]:
    return [(int(p["pid"]), p.get("starttime")) for p in state["processes"]]


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture
def lab(anvil: Anvil, state_dir: Path) -> Iterator[Anvil]:
    """The ``anvil`` runner; at teardown the lab is down whatever happened."""
    yield anvil
    state = _lab_state(state_dir)
    if state is None:
        return
    anvil("lab", "down", check=False)
    state_after = _lab_state(state_dir)
    if state_after is not None:  # down refused or failed: stop what lab.json names ourselves
        rack.teardown(state_after)
        rack.lab_file(state_dir / "lab").unlink(missing_ok=True)


def _all_gone(state: dict[str, Any]) -> bool:
    return not any(rack.pid_alive(pid, st) for pid, st in _pids(state))


def test_lab_up_enrols_a_cabled_rack_that_blade_and_switch_commands_drive(lab: Anvil, state_dir: Path) -> None:
    lab("lab", "up", "--redfish", "2", "--ipmi", "1")
    state = _lab_state(state_dir)
    assert state is not None and state["state"] == "up"
    assert (rack.lab_file(state_dir / "lab").stat().st_mode & 0o777) == 0o600
    assert [p["name"] for p in state["processes"]] == ["redfish", "ipmi", "snmpsim"]

    listed = lab("blade", "list", "-o", "json").out
    blades = {b["name"]: b for b in json.loads(listed)}
    assert sorted(blades) == ["ipmi-01", "rf-01", "rf-02"]
    assert blades["rf-01"]["chassis"] == "lab" and blades["rf-01"]["cpus"] == 16
    ports = [(n["switch"], n["port"]) for b in blades.values() for n in b["nics"]]
    assert len(ports) == 6 and len(set(ports)) == 6 and all(sw == "lab-sw" for sw, _ in ports)
    # The list is the API's list (no credentials at all); show masks the password.
    assert all("password" not in b for b in blades.values()) and state["password"] not in listed
    assert json.loads(lab("blade", "show", "rf-01", "-o", "json").out)["password"] == "***"

    for name, mode in (("rf-01", "uefi"), ("ipmi-01", "legacy")):
        assert lab("blade", "power", name, "on").out.strip() == f"{name}: on"
        assert lab("blade", "boot", name, "network", "--persistent", "--mode", mode).out.strip() == (
            f"{name}: boot network mode {mode} persistent")
    assert lab("blade", "power", "rf-01", "status").out.strip() == "rf-01: on"
    for name in ("rf-01", "ipmi-01"):
        assert lab("blade", "power", name, "off").out.strip() == f"{name}: off"

    shown = json.loads(lab("blade", "inspect", "rf-01", "-o", "json").out)
    assert shown["facts"]["systemUuid"] == "00000001-0000-4000-8000-000000000001"
    assert shown["facts"]["hbas"][0]["wwpn"] == "20:00:00:25:b5:01:01:01"
    assert [(n["name"], n["mac"], n["port"]) for n in shown["nics"]] == [
        (n["name"], n["mac"], n["port"]) for n in blades["rf-01"]["nics"]]   # cabling kept

    got = json.loads(lab("switch", "port-vlans", "lab-sw", "1", "--native", "10", "--tagged", "20,30", "--down",
                         "-o", "json").out)
    assert (got["native"], got["tagged"], got["up"]) == (10, [20, 30], False)

    rows = json.loads(lab("lab", "status", "-o", "json").out)
    assert [(r["process"], r["alive"]) for r in rows] == [("redfish", True), ("ipmi", True), ("snmpsim", True)]

    lab("lab", "down")
    assert _all_gone(state)
    assert _lab_state(state_dir) is None
    assert json.loads(lab("blade", "list", "-o", "json").out) == []
    assert json.loads(lab("switch", "list", "-o", "json").out) == []


def test_lab_up_twice_fails_and_down_refuses_a_blade_in_use(lab: Anvil, state_dir: Path) -> None:
    lab("lab", "up", "--redfish", "1")
    again = lab("lab", "up", "--redfish", "1", check=False)
    assert again.code == 1 and "lab already up (anvil lab down first)" in again.err
    state = _lab_state(state_dir)
    assert state is not None and not _all_gone(state)

    from sqlalchemy import update

    from appliance.store import open_store
    from appliance.store.tables import BladeRow

    store = open_store(f"sqlite:///{state_dir / 'anvil.db'}")
    try:
        with store.write() as s:
            s.execute(update(BladeRow).where(BladeRow.name == "rf-01").values(state="bound"))
        refused = lab("lab", "down", check=False)
        assert refused.code == 1 and "rf-01 (bound)" in refused.err and "`anvil lab down --force`" in refused.err
        assert _lab_state(state_dir) is not None and not _all_gone(state)
        with store.write() as s:
            s.execute(update(BladeRow).where(BladeRow.name == "rf-01").values(state="spare"))
    finally:
        store.close()
    lab("lab", "down")
    assert _all_gone(state)


PROFILE = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: acme}}
spec:
  requirements: {{minCpus: 8, minMemoryGiB: 32, nics: 2}}
  identity:
    nics:
      - {{name: eth0, mac: "02:a0:00:00:{n:02x}:01", vlans: {{native: 100}}, pxe: true}}
      - {{name: eth1, mac: "02:a0:00:00:{n:02x}:02"}}
  boot: {{mode: uefi, source: {{type: image, kernel: lab/vmlinuz, initrd: lab/initrd.img}}}}
"""


def _serve(anvil_env: dict[str, str], tmp_path: Path) -> subprocess.Popen[bytes]:
    """``anvil serve`` until its engine leads (bounded); the caller kills it by PID."""
    from appliance.engine.leader import leader_alive
    from appliance.store import open_store

    ready = tmp_path / "serve.ready"
    log = (tmp_path / "serve.log").open("wb")
    env = {**os.environ, **anvil_env, "ANVIL_API_LISTEN": f"127.0.0.1:{_free_port()}"}
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--insecure-http", "--ready-file",
                             str(ready)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    store = open_store(f"sqlite:///{Path(anvil_env['ANVIL_STATE_DIR']) / 'anvil.db'}", migrate=False)
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and leader_alive(store)):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait(timeout=10)
                raise AssertionError(f"serve not leading in 60 s:\n{(tmp_path / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.1)
    finally:
        store.close()
    return proc


def test_lab_down_force_after_a_crashed_session_forgets_only_lab_bindings_and_down_again_is_a_no_op(
        lab: Anvil, anvil_env: dict[str, str], state_dir: Path, tmp_path: Path) -> None:
    from sqlalchemy import select

    from appliance.store import open_store
    from appliance.store.tables import BindingRow, BladeRow, ProfileRow

    lab("lab", "up", "--redfish", "2")
    state = _lab_state(state_dir)
    assert state is not None
    for name, n in (("web-01", 1), ("db-01", 2)):
        (tmp_path / f"{name}.yaml").write_text(PROFILE.format(name=name, n=n))
        lab("profile", "import", str(tmp_path / f"{name}.yaml"))
    # A blade of another rack, bound too: --force must never touch it.
    lab("blade", "enroll", "other-01", "--bmc", "ipmi://127.0.0.1:9", "--username", "u", "--password-stdin",
        "--nic", "eth0=52:54:00:aa:00:01", input="pw\n")
    store = open_store(f"sqlite:///{state_dir / 'anvil.db'}", migrate=False)
    try:
        with store.write() as s:
            p = s.scalar(select(ProfileRow).where(ProfileRow.name == "db-01"))
            b = s.scalar(select(BladeRow).where(BladeRow.name == "other-01"))
            assert p is not None and b is not None
            s.add(BindingRow(profile_id=p.id, blade_id=b.id, generation=1, state="live"))
            p.state, b.state = "active", "active"

        serve = _serve(anvil_env, tmp_path)
        try:
            assert "succeeded" in lab("profile", "assign", "web-01", "--tenant", "acme", "--blade", "rf-01").out
            busy = lab("lab", "down", "--force", check=False)   # its engine acts on those bindings: release there
            assert busy.code == 1 and "an appliance is running (`anvil serve`)" in busy.err, busy
        finally:
            os.killpg(serve.pid, signal.SIGKILL)   # the session crashes: nothing released, emulators left running
            serve.wait(timeout=10)

        refused = lab("lab", "down", check=False)
        assert refused.code == 1 and refused.err.startswith("anvil: error: lab blades are in use: rf-01 (active)")
        assert "`anvil lab down --force`" in refused.err
        assert _lab_state(state_dir) is not None and not _all_gone(state)

        down = lab("lab", "down", "--force")
        assert "lab down: forgot rf-01's binding to acme/web-01" in down.out, down.out
        assert "lab down: stopped redfish, snmpsim" in down.out
        assert _all_gone(state) and _lab_state(state_dir) is None
        assert [b["name"] for b in json.loads(lab("blade", "list", "-o", "json").out)] == ["other-01"]
        with store.read() as s:
            live = s.execute(select(ProfileRow.name, BladeRow.name, BladeRow.state)
                             .join(BindingRow, BindingRow.profile_id == ProfileRow.id)
                             .join(BladeRow, BladeRow.id == BindingRow.blade_id)
                             .where(BindingRow.state == "live")).all()
            states = {p.name: p.state for p in s.scalars(select(ProfileRow))}
        assert [tuple(r) for r in live] == [("db-01", "other-01", "active")]
        assert states == {"web-01": "unassigned", "db-01": "active"}
        shown = json.loads(lab("profile", "show", "web-01", "--tenant", "acme", "-o", "json").out)
        assert {i["value"] for i in shown["heldIdentities"]} == {"02:a0:00:00:01:01", "02:a0:00:00:01:02"}
    finally:
        store.close()

    again = lab("lab", "down")   # nothing up: says so, and succeeds (scripts may always call it)
    assert again.out.strip() == f"lab down: no lab is up (nothing in {state_dir / 'lab' / 'lab.json'})"
    assert again.err == ""


def _ovs_missing() -> str | None:
    from appliance.lab.ovs_switch import missing_tools

    if os.geteuid() != 0:
        return "network namespaces need root"
    return missing_tools()


@pytest.mark.skipif(_ovs_missing() is not None, reason=str(_ovs_missing()))
def test_lab_with_an_ovs_switch_sets_and_reads_back_port_vlans(lab: Anvil, state_dir: Path) -> None:
    lab("lab", "up", "--redfish", "1", "--switch", "ovs")
    state = _lab_state(state_dir)
    assert state is not None
    namespaces = set(state["namespaces"])
    assert len(namespaces) == 3 and namespaces <= _netns()   # the switch's and one per blade NIC
    blade = json.loads(lab("blade", "show", "rf-01", "-o", "json").out)
    port = blade["nics"][0]["port"]
    assert lab("switch", "port-vlans", "lab-sw", port).out.strip() == f"lab-sw port {port}: native 1 tagged - up"
    got = json.loads(lab("switch", "port-vlans", "lab-sw", port, "--native", "10", "--tagged", "20",
                         "--down", "-o", "json").out)
    assert (got["native"], got["tagged"], got["up"]) == (10, [20], False)
    rows = json.loads(lab("lab", "status", "-o", "json").out)
    assert all(r["alive"] for r in rows) and {r["address"] for r in rows if r["process"] == "netns"} == namespaces
    lab("lab", "down")
    assert _all_gone(state)
    assert not namespaces & _netns()
    assert not any(Path(d).exists() for d in state["rundirs"])


def _free_port() -> int:
    return procs.free_tcp_port()


def test_demo_serves_with_a_lab_and_takes_it_down_on_sigterm(lab: Anvil, anvil_env: dict[str, str],
                                                             state_dir: Path, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    env = {**os.environ, **anvil_env, "ANVIL_API_LISTEN": f"127.0.0.1:{_free_port()}"}
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "demo", "--redfish", "1", "--insecure-http",
                             "--ready-file", str(ready)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 40
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), proc.stderr.read() if proc.poll() is not None else "demo not ready in 40 s"
        state = _lab_state(state_dir)
        assert state is not None and not _all_gone(state)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert "console: http://127.0.0.1:" in out and "admin token: in" in out and "lab down: stopped" in out
    assert _lab_state(state_dir) is None and _all_gone(state)


def test_tools_the_lab_needs_are_named_in_dev_sh() -> None:
    dev = (Path(__file__).resolve().parents[2] / "dev.sh").read_text()
    for pkg in ("openvswitch-switch", "iputils-ping", "ethtool", "tcpdump", "iproute2"):
        assert pkg in dev
    assert shutil.which("ip") is not None


def test_lab_up_shows_its_stages_and_enrolment_on_a_terminal(lab: Anvil, anvil_env: dict[str, str],
                                                             state_dir: Path) -> None:
    from tests.support.pty_run import run_on_pty

    res = run_on_pty(["lab", "up", "--redfish", "2", "--ipmi", "1"], {**os.environ, **anvil_env}, timeout=120)
    assert res.code == 0, res.tty
    assert res.out.startswith("lab up: ") and res.out.count("\n") == 1      # stdout as a script reads it
    lines = [line.rsplit("\r\033[K", 1)[-1] for line in res.tty.split("\n") if line]
    stages = [line for line in lines if line.startswith("lab up: ")]
    assert stages == ["lab up: starting 2 Redfish blade(s) (sushy-tools)", "lab up: starting 1 IPMI blade(s)",
                      "lab up: starting the snmp switch and cabling 3 blade(s) to it",
                      "lab up: enrolling 1 switch(es) and 3 blade(s)"], res.tty
    assert "  [####################] blades enrolled 3/3" in lines, res.tty
    # Not on a terminal: the same result line, and nothing on stderr.
    lab("lab", "down")
    plain = lab("lab", "up", "--redfish", "1")
    assert plain.out.startswith("lab up: ") and plain.err == ""
