"""The emulated rack plus a real ``anvil serve``, driven and inspected from a test.

Everything here talks to real processes: the ``anvil`` CLI in a subprocess with an
isolated state directory, ``anvil serve`` started and killed by PID, and the lab's
emulators read *raw* (Redfish JSON over HTTP with basic auth, the switch through
the SNMP driver), so a check never trusts the appliance's own view of the hardware.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from appliance.drivers.protocols import PortConfig
from appliance.lab import procs, rack
from appliance.store import Store, open_store
from appliance.store.tables import BladeNicRow, BladeRow, SwitchRow

PARKING_VLAN = 4094

PROFILE = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: {tenant}}}
spec:
  requirements: {{minCpus: 8, minMemoryGiB: 32, nics: 2}}
  identity:
    nics:
      - {{name: eth0, mac: "02:a0:00:00:{n:02x}:01", vlans: {{native: 100, tagged: [200]}}, pxe: true}}
      - {{name: eth1, mac: "02:a0:00:00:{n:02x}:02", vlans: {{native: 101}}}}
  boot: {{mode: uefi, source: {{type: image, kernel: lab/vmlinuz, initrd: lab/initrd.img}}}}
"""


def profile_macs(n: int) -> tuple[str, str]:
    return (f"02:a0:00:00:{n:02x}:01", f"02:a0:00:00:{n:02x}:02")


# The profile's NIC i → blade NIC i → its port: (native, tagged).
PROFILE_VLANS = ((100, frozenset({200})), (101, frozenset()))


def free_port() -> int:
    return procs.free_tcp_port()


@dataclass
class Result:
    code: int
    out: str
    err: str
    seconds: float


class Anvil:
    """The real ``anvil`` command against one state directory."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state_dir = tmp / "state"
        # Only these ANVIL_* reach the command: never the developer's own (ANVIL_URL, ANVIL_TOKEN…).
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")},
                    "ANVIL_STATE_DIR": str(self.state_dir), "ANVIL_CONFIG": str(tmp / "anvil.toml"),
                    "ANVIL_API_LISTEN": f"127.0.0.1:{free_port()}", "ANVIL_BOOT_LISTEN": f"127.0.0.1:{free_port()}"}

    def __call__(self, *args: str, check: bool = True, timeout: float = 90) -> Result:
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout)
        res = Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)
        if check and proc.returncode != 0:
            raise AssertionError(f"anvil {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
        return res

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.state_dir / 'anvil.db'}"

    def store(self) -> Store:
        return open_store(self.db_url, migrate=False)

    def import_profiles(self, names: Iterable[tuple[str, int]], tenant: str = "acme") -> None:
        for name, n in names:
            path = self.tmp / f"{name}.yaml"
            path.write_text(PROFILE.format(name=name, tenant=tenant, n=n))
            self("profile", "import", str(path))


class Serve:
    """``anvil serve --insecure-http`` in the background, started, stopped and killed by PID."""

    def __init__(self, anvil: Anvil, *, tls: bool = False) -> None:
        self.anvil = anvil
        self.tls = tls        # HTTPS with the state dir's self-signed certificate (site peers pin it)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = anvil.tmp / "serve.log"
        self.starts = 0
        self.startup_seconds: list[float] = []

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "serve is already running"
        ready = self.anvil.tmp / "serve.ready"
        ready.unlink(missing_ok=True)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {self.starts + 1} ====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "appliance", "serve", *([] if self.tls else ["--insecure-http"]),
                 "--ready-file", str(ready)],
                env=self.anvil.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        if not wait:
            return
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if ready.exists() and ready.read_text().strip():
                self.url = ready.read_text().strip()
                self.startup_seconds.append(time.monotonic() - t0)
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"anvil serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"anvil serve not ready in {timeout:g} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def kill(self) -> None:
        """SIGKILL (no cleanup at all, like a power cut of the appliance) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; bounded."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def token(self) -> str:
        return (self.anvil.state_dir / "admin.token").read_text().strip()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                timeout: float = 30) -> tuple[int, str, dict[str, Any]]:
        """(status, content type, JSON body) of one API call with the admin token."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"})
        # The test reads its own appliance: a self-signed certificate is expected, not checked.
        ctx = ssl._create_unverified_context() if self.url.startswith("https") else None
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
                return resp.status, resp.headers.get("Content-Type", ""), json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), json.loads(exc.read())


class Lab:
    """The emulated rack of one state directory, read raw."""

    def __init__(self, anvil: Anvil) -> None:
        self.anvil = anvil
        self.lab_dir = anvil.state_dir / "lab"

    @property
    def state(self) -> dict[str, Any]:
        st = rack.read_state(self.lab_dir)
        assert st is not None, "no lab is up"
        return st

    def up(self, redfish: int, realistic_power: bool = False) -> None:
        self.anvil("lab", "up", "--redfish", str(redfish), *(["--realistic-power"] if realistic_power else []),
                   timeout=120)

    def down(self) -> None:
        """``anvil lab down``; when it refuses (blades in use) or fails, stop what lab.json names by PID."""
        if rack.read_state(self.lab_dir) is None:
            return
        self.anvil("lab", "down", check=False)
        left = rack.read_state(self.lab_dir)
        if left is not None:
            rack.teardown(left)
            rack.lab_file(self.lab_dir).unlink(missing_ok=True)

    def processes_gone(self, state: dict[str, Any]) -> bool:
        return not any(rack.pid_alive(int(p["pid"]), p.get("starttime")) for p in state["processes"])

    # -- inventory -----------------------------------------------------------------
    def inventory(self, store: Store) -> dict[str, tuple[str, list[tuple[str, str]]]]:
        """blade → (Redfish system URL, [(switch, port) of each NIC in order])."""
        out: dict[str, tuple[str, list[tuple[str, str]]]] = {}
        with store.read() as s:
            for blade in s.scalars(select(BladeRow).order_by(BladeRow.name)):
                nics = s.execute(select(SwitchRow.name, BladeNicRow.port)
                                 .join(SwitchRow, SwitchRow.id == BladeNicRow.switch_id)
                                 .where(BladeNicRow.blade_id == blade.id).order_by(BladeNicRow.position)).all()
                out[blade.name] = (blade.bmc_address.removeprefix("redfish+"), [(n[0], str(n[1])) for n in nics])
        return out

    # -- raw Redfish -------------------------------------------------------------------
    def get(self, url: str) -> dict[str, Any]:
        st = self.state
        req = urllib.request.Request(url)
        auth = base64.b64encode(f"{st['username']}:{st['password']}".encode()).decode()
        req.add_header("Authorization", f"Basic {auth}")
        with urllib.request.urlopen(req, timeout=10) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def system(self, system_url: str) -> dict[str, Any]:
        return self.get(system_url)

    def crash(self, system_url: str) -> None:
        """The blade dies: powered off straight on its BMC, behind the appliance's back."""
        st = self.state
        auth = base64.b64encode(f"{st['username']}:{st['password']}".encode()).decode()
        req = urllib.request.Request(system_url + "/Actions/ComputerSystem.Reset", method="POST",
                                     data=json.dumps({"ResetType": "ForceOff"}).encode(),
                                     headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10):
            pass

    def ethernet_functions(self, system_url: str) -> list[dict[str, Any]]:
        """The system's Ethernet NetworkDeviceFunctions, following the links as a client would."""
        root = system_url.split("/redfish/")[0]
        system = self.get(system_url)
        out = []
        for iface in self.get(root + system["NetworkInterfaces"]["@odata.id"])["Members"]:
            ndfs = self.get(root + self.get(root + iface["@odata.id"])["NetworkDeviceFunctions"]["@odata.id"])
            for member in ndfs["Members"]:
                fn = self.get(root + member["@odata.id"])
                if "Ethernet" in fn:
                    out.append(fn["Ethernet"])
        return out

    # -- the switch, through the SNMP driver ---------------------------------------------
    def read_ports(self, store: Store, ports: Iterable[tuple[str, str]]) -> dict[tuple[str, str], PortConfig]:
        from appliance.secrets import SecretBox
        from appliance.services.hardware import Hardware

        wanted = list(ports)

        async def read() -> dict[tuple[str, str], PortConfig]:
            hw = Hardware(store, SecretBox(self.anvil.state_dir / "secrets.key"))
            try:
                got = {}
                for sw, port in wanted:
                    driver, ref = hw.switch(sw)
                    got[(sw, port)] = await driver.get_port(ref, port)
                return got
            finally:
                await hw.close()

        return asyncio.run(read())


@contextlib.contextmanager
def rig(tmp: Path, redfish: int, realistic_power: bool = False) -> Any:
    """A lab of ``redfish`` blades in its own state dir, with ``anvil serve`` (not started yet);
    ``realistic_power``: the emulators' 1-11 s power-change delay.

    Always leaves nothing running: serve is stopped by PID, then the lab is taken down.
    """
    anvil = Anvil(tmp)
    lab = Lab(anvil)
    serve = Serve(anvil)
    try:
        lab.up(redfish, realistic_power)
        yield anvil, lab, serve
    finally:
        serve.stop()
        lab.down()
