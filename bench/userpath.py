"""The user's path, shared by the benchmarks: a real ``anvil serve`` with its shipped defaults,
an emulated rack enrolled into it, and a REST client that speaks HTTPS to it.

The in-process figures (engine objects in the benchmark's own process, no API, no TLS,
faster timers) say what the control plane can do; these say what a user sees:

- :class:`Appliance`: ``python -m appliance serve`` (all roles in one process: API and
  console over HTTPS with the self-signed certificate it makes on first start, engine,
  monitor, boot HTTP) in a fresh state directory with NO configuration file, so every
  timer is the shipped default of ``appliance/config.py``. Only the two listen addresses
  are set (free loopback ports, so runs can share the machine). ``overrides`` (``ANVIL_*``
  variables) exist for the CI smoke runs only, and every report prints them.
- :class:`Rack`: sushy-tools Redfish chassis (one emulator process each) whose emulated OS
  boots from the appliance's boot HTTP, and one snmpsim switch cabled to every blade NIC.
- :class:`Rest`: aiohttp with the admin token, verifying the appliance's certificate.

Every process started here is stopped by PID (SIGTERM, then SIGKILL), also on Ctrl-C or error:
use the classes as context managers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from appliance.config import Settings, load_settings
from appliance.domain.states import FINAL_JOB_STATES
from appliance.lab import procs, redfish_emulator
from appliance.lab.snmp_switch import DEFAULT_VLANS, SnmpSwitch
from appliance.store import Store, open_store

SWITCH = "bench-sw"
NICS = 2
FINAL = frozenset(s.value for s in FINAL_JOB_STATES)


def aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def iso(text: str | None) -> datetime | None:
    return aware(datetime.fromisoformat(text)) if text else None


class Appliance:
    """``anvil serve`` in ``work/state``; a context manager that stops it by PID."""

    def __init__(self, work: Path, overrides: dict[str, str] | None = None) -> None:
        self.work = work
        self.state = work / "state"
        self.overrides = dict(overrides or {})
        self.boot_port = procs.free_tcp_port()
        self.metrics_port = procs.free_tcp_port()
        # Never the caller's own ANVIL_* (a developer's ANVIL_URL or timers): only what is set here.
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")},
                    "ANVIL_STATE_DIR": str(self.state), "ANVIL_CONFIG": str(work / "anvil.toml"),
                    "ANVIL_API_LISTEN": f"127.0.0.1:{procs.free_tcp_port()}",
                    "ANVIL_BOOT_LISTEN": f"127.0.0.1:{self.boot_port}",
                    "ANVIL_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}", **self.overrides}
        self.proc: procs.ProcHandle | None = None
        self.url = ""
        self.log_path = work / "serve.log"

    @property
    def boot_url(self) -> str:
        return f"http://127.0.0.1:{self.boot_port}"

    @property
    def metrics_address(self) -> str:
        """Where its /metrics listens, without authentication ([metrics] listen)."""
        return f"127.0.0.1:{self.metrics_port}"

    def settings(self) -> Settings:
        """What ``anvil serve`` reads: no file, the environment above."""
        return load_settings(env=self.env)

    def timers(self) -> dict[str, Any]:
        """The effective engine and monitor timers, for the report."""
        s = self.settings()
        m = s.monitor
        return {"monitor_interval_s": m.interval, "fail_after": m.fail_after, "recover_after": m.recover_after,
                "probe_timeout_s": m.probe_timeout, "heartbeat_timeout_s": m.heartbeat_timeout,
                "events": m.events, "event_confirm_interval_s": m.event_confirm_interval,
                "boot_timeout_s": s.engine.boot_timeout, "tls": s.api.tls,
                "overrides": dict(self.overrides)}

    def describe_timers(self) -> str:
        t = self.timers()
        where = ("SMOKE OVERRIDES " + " ".join(f"{k}={v}" for k, v in t["overrides"].items())
                 if t["overrides"] else "shipped defaults, no configuration file")
        return (f"timers: {where}: monitor poll {t['monitor_interval_s']:g} s, failed after {t['fail_after']} "
                f"bad polls, heartbeat timeout {t['heartbeat_timeout_s']:g} s, BMC events "
                f"{'on' if t['events'] else 'off'} (confirmed by polls {t['event_confirm_interval_s']:g} s apart), "
                f"boot timeout {t['boot_timeout_s']:g} s")

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 90) -> str:
        """The real ``anvil`` command against this state directory."""
        proc = subprocess.run([sys.executable, "-m", "appliance", *args], input=stdin, capture_output=True,
                              text=True, env=self.env, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"anvil {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
        return proc.stdout

    def start(self, timeout: float = 120.0) -> None:
        ready = self.work / "serve.ready"
        ready.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "appliance", "serve", "--ready-file", str(ready)]
        with open(self.log_path, "ab") as log:
            popen = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.proc = procs.ProcHandle(popen.pid, tuple(cmd), self.log_path, popen)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready.exists() and ready.read_text().strip():
                self.url = ready.read_text().strip()
                if not self.url.startswith("https://"):
                    raise RuntimeError(f"anvil serve is not serving HTTPS: {self.url}")
                return
            if popen.poll() is not None:
                raise RuntimeError(f"anvil serve exited with {popen.returncode}: {self.proc.log_tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"anvil serve not ready within {timeout:g} s: {self.proc.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc, timeout=20)

    def __enter__(self) -> Appliance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def cpu(self) -> float:
        return procs.cpu_seconds(self.proc.pid) if self.proc else 0.0

    def token(self) -> str:
        return (self.state / "admin.token").read_text().strip()

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts exactly the appliance's self-signed certificate: TLS verified as a careful user would."""
        return ssl.create_default_context(cafile=str(self.state / "tls" / "cert.pem"))

    def store(self) -> Store:
        """The appliance's own SQLite store, read by the benchmark for the engine's step times only."""
        return open_store(self.settings().store_url, migrate=False)


class Rest:
    """The REST API over HTTPS with the admin token."""

    def __init__(self, app: Appliance, *, connections: int = 100) -> None:
        self.base = app.url
        self.headers = {"Authorization": f"Bearer {app.token()}"}
        self.ctx = app.ssl_context()
        self.connections = connections
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Rest:
        self.session = aiohttp.ClientSession(
            headers=self.headers, connector=aiohttp.TCPConnector(ssl=self.ctx, limit=self.connections),
            timeout=aiohttp.ClientTimeout(total=120))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def call(self, method: str, path: str, body: Any = None, *, text: str | None = None,
                   content_type: str = "application/json", params: dict[str, str] | None = None) -> Any:
        assert self.session is not None
        data = text if text is not None else (json.dumps(body) if body is not None else None)
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(method, self.base + path, data=data, headers=headers,
                                        params=params) as resp:
            raw = await resp.read()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {raw[:500]!r}")
            return json.loads(raw) if raw else None


@dataclass(frozen=True, slots=True)
class RackBlade:
    name: str
    system: dict[str, Any]
    emulator: redfish_emulator.RedfishEmulator
    ports: tuple[str, ...]


class Rack:
    """Emulated Redfish chassis (``chassis``: blades per emulator process) and one snmpsim switch."""

    def __init__(self, work: Path, boot_url: str, chassis: Sequence[int], power_delay: tuple[float, float]) -> None:
        self.work = work
        self.boot_url = boot_url
        self.chassis = list(chassis)
        self.power_delay = power_delay
        self.password = base64.b32encode(os.urandom(10)).decode().lower()
        self.switch: SnmpSwitch | None = None
        self.emulators: list[redfish_emulator.RedfishEmulator] = []
        self.blades: list[RackBlade] = []

    def __enter__(self) -> Rack:
        try:
            self.switch = SnmpSwitch(self.work / "snmp", ports=max(24, NICS * sum(self.chassis)), vlans=DEFAULT_VLANS,
                                     community="bench" + base64.b32encode(os.urandom(5)).decode().lower())
            self.switch.start()
            for c, count in enumerate(self.chassis, 1):
                systems = redfish_emulator.make_systems(count, seed=c, nics=NICS)
                emu = redfish_emulator.start_redfish(
                    self.work / f"redfish-{c}", procs.free_tcp_port(), systems, power_delay=self.power_delay,
                    username="admin", password=self.password, boot_url=self.boot_url)
                self.emulators.append(emu)
                for system in systems:
                    n = len(self.blades)
                    self.blades.append(RackBlade(f"b{n + 1:03d}", system, emu,
                                                 tuple(str(NICS * n + 1 + k) for k in range(NICS))))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for emu in self.emulators:
            redfish_emulator.stop(emu)
        if self.switch is not None:
            self.switch.stop()

    def enroll_switch(self, app: Appliance) -> None:
        assert self.switch is not None
        app.cli("switch", "enroll", SWITCH, "--address", self.switch.address, "--password-stdin",
                stdin=self.switch.community + "\n")

    def enrollment(self, b: RackBlade) -> dict[str, Any]:
        """The body of ``POST /api/v1/blades`` for one blade, its NICs cabled to the switch."""
        return {"name": b.name, "bmc": b.emulator.address(b.system), "username": "admin", "password": self.password,
                "cpus": b.system["cpus"], "memoryGiB": b.system["memory_gib"], "chassis": f"c{b.emulator.port}",
                "slot": self.blades.index(b) + 1,
                "nics": [{"name": f"eth{k}", "mac": nic["mac"], "switch": SWITCH, "port": b.ports[k]}
                         for k, nic in enumerate(b.system["nics"])]}

    def blade(self, name: str) -> RackBlade:
        return next(b for b in self.blades if b.name == name)

    def crash(self, name: str) -> None:
        """The blade dies: ForceOff straight on its BMC, behind the appliance's back."""
        b = self.blade(name)
        url = f"{b.emulator.base_url}/redfish/v1/Systems/{b.system['uuid']}/Actions/ComputerSystem.Reset"
        auth = base64.b64encode(f"admin:{self.password}".encode()).decode()
        req = urllib.request.Request(url, data=json.dumps({"ResetType": "ForceOff"}).encode(), method="POST",
                                     headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5):
            pass

    def hang(self, name: str) -> None:
        """The blade's OS hangs: its heartbeats stop, its BMC still reads On."""
        b = self.blade(name)
        redfish_emulator.hang_os(b.emulator, b.system)

    def raw_power(self, name: str) -> str:
        b = self.blade(name)
        return str(redfish_emulator.get_json(b.emulator, f"/redfish/v1/Systems/{b.system['uuid']}")["PowerState"])

    def cpu(self) -> dict[str, float]:
        return {"redfish emulators": sum(procs.cpu_seconds(e.proc.pid) for e in self.emulators),
                "snmpsim switch": procs.cpu_seconds(self.switch.pid) if self.switch and self.switch.pid else 0.0}


async def enroll(rest: Rest, bodies: Iterable[dict[str, Any]], at_once: int = 8) -> None:
    """Enrol blades through ``POST /api/v1/blades``, a few at a time."""
    gate = asyncio.Semaphore(at_once)

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            await rest.call("POST", "/api/v1/blades", body)

    await asyncio.gather(*(one(b) for b in bodies))


async def import_profiles(rest: Rest, documents: Iterable[str], at_once: int = 8) -> None:
    gate = asyncio.Semaphore(at_once)

    async def one(doc: str) -> None:
        async with gate:
            await rest.call("POST", "/api/v1/profiles", text=doc, content_type="application/yaml")

    await asyncio.gather(*(one(d) for d in documents))


async def until(what: str, check: Any, timeout: float, every: float = 0.2) -> Any:
    """Await ``check()`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / every) + 2):
        got = await check()
        if got:
            return got
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:g} s")


class StallWatch:
    """A thread in the benchmark's process that sleeps 50 ms at a time and notes when it woke
    much later (the whole machine stalled: other tenants, a paused VM) and when the wall clock
    moved apart from the monotonic one (a clock step: figures from wall-clock records shift by it).
    Tells a stall of the machine from one of the appliance."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.stalls: list[float] = []
        self.clock_steps: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-watch", daemon=True)

    def _run(self) -> None:
        offset = time.time() - time.monotonic()
        while not self._stop.is_set():
            before = time.monotonic()
            self._stop.wait(0.05)
            late = time.monotonic() - before - 0.05
            if late > self.threshold:
                self.stalls.append(round(late, 2))
            now_offset = time.time() - time.monotonic()
            if abs(now_offset - offset) > self.threshold:
                self.clock_steps.append(round(now_offset - offset, 2))
                offset = now_offset

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> dict[str, Any]:
        return {"machine_stalls": len(self.stalls), "longest_stall_s": max(self.stalls, default=0.0),
                "clock_steps_s": self.clock_steps}

    def describe(self) -> str:
        s = self.summary()
        return (f"machine check (a 50 ms sleeper thread in the benchmark): {s['machine_stalls']} stall(s) over "
                f"{self.threshold:g} s, longest {s['longest_stall_s']:g} s; wall-clock steps: "
                f"{', '.join(f'{x:+g} s' for x in s['clock_steps_s']) or 'none'}")
