"""Real BMC emulators for the driver contract and fault tests.

Each emulator is a separate process on 127.0.0.1 with ports picked free per test
worker (pytest-xdist safe), started here and stopped by PID at teardown. Racks are
module-scoped; every test takes its own blades from ``rack.take()`` so tests never
see each other's power or boot state.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from appliance.drivers.ipmi import IpmiDriver
from appliance.drivers.protocols import BladeFacts, Bmc, BmcDriver, PowerState, Secret
from appliance.drivers.redfish import RedfishDriver
from appliance.lab import ipmi_emulator, procs, redfish_emulator

BLADES_PER_RACK = 12
SHORT_DELAY = (0.0, 0.2)


@dataclass
class Rack:
    """One emulated rack of one protocol, and the driver under test."""

    kind: str
    driver_factory: Callable[[], BmcDriver]
    bmcs: list[Bmc]
    expected: list[dict[str, Any]]      # per blade: uuid, macs, wwpns
    emulator: Any
    _next: Iterator[int] = field(default_factory=itertools.count)

    def take(self) -> tuple[Bmc, dict[str, Any]]:
        i = next(self._next)
        if i >= len(self.bmcs):
            raise RuntimeError(f"rack {self.kind} has only {len(self.bmcs)} blades; raise BLADES_PER_RACK")
        return self.bmcs[i], self.expected[i]


def _redfish_rack(tmp: Path, count: int, delay: tuple[float, float] | None, seed: int) -> Rack:
    systems = redfish_emulator.make_systems(count, seed=seed)
    emu = redfish_emulator.start_redfish(tmp, procs.free_tcp_port(), systems, power_delay=delay)
    bmcs = [Bmc(f"rf-{i}", emu.address(s), "admin", Secret("password"), timeout=5.0) for i, s in enumerate(systems)]
    expected = [
        {"uuid": s["uuid"], "macs": [n["mac"] for n in s["nics"]], "wwpns": [f["wwpn"] for f in s["fc"]],
         "cpus": s["cpus"], "memory_gib": s["memory_gib"]}
        for s in systems
    ]
    return Rack("redfish", RedfishDriver, bmcs, expected, emu)


def _ipmi_rack(tmp: Path, count: int, delay: tuple[float, float]) -> Rack:
    ports = [procs.free_udp_port() for _ in range(count)]
    emu = ipmi_emulator.start_ipmi(tmp, ports, power_delay=delay)
    bmcs = [Bmc(f"ipmi-{i}", emu.address(p), "admin", Secret("password"), timeout=5.0) for i, p in enumerate(ports)]
    expected = [{"uuid": ipmi_emulator.guid_for(p), "macs": [], "wwpns": [], "port": p} for p in ports]
    return Rack("ipmi", IpmiDriver, bmcs, expected, emu)


def _stop(rack: Rack) -> None:
    if rack.kind == "redfish":
        redfish_emulator.stop(rack.emulator)
    else:
        ipmi_emulator.stop(rack.emulator)


@pytest.fixture(scope="module", params=["redfish", "ipmi"])
def rack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rack]:
    tmp = tmp_path_factory.mktemp(f"{request.param}-rack")
    r = (
        _redfish_rack(tmp, BLADES_PER_RACK, SHORT_DELAY, seed=7)
        if request.param == "redfish"
        else _ipmi_rack(tmp, BLADES_PER_RACK, SHORT_DELAY)
    )
    try:
        yield r
    finally:
        _stop(r)


@pytest.fixture(scope="module")
def redfish_rack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rack]:
    r = _redfish_rack(tmp_path_factory.mktemp("redfish-only"), BLADES_PER_RACK, SHORT_DELAY, seed=9)
    try:
        yield r
    finally:
        _stop(r)


@pytest.fixture
async def driver(rack: Rack) -> AsyncIterator[BmcDriver]:
    d = rack.driver_factory()
    try:
        yield d
    finally:
        await d.close()


@pytest.fixture
async def rf() -> AsyncIterator[RedfishDriver]:
    """A Redfish driver of its own (for tests on ``redfish_rack`` only)."""
    d = RedfishDriver()
    try:
        yield d
    finally:
        await d.close()


async def wait_power(driver: BmcDriver, bmc: Bmc, want: PowerState, deadline: float) -> float:
    """Poll get_power until it reads ``want``; returns the seconds it took. Fails after ``deadline`` s."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(deadline):
        while True:
            if await driver.get_power(bmc) is want:
                return loop.time() - start
            await asyncio.sleep(0.1)


def facts_macs(facts: BladeFacts) -> list[str]:
    return [n.mac for n in facts.nics]


# ---- misbehaving peers --------------------------------------------------------------


@pytest.fixture
def silent_tcp() -> Iterator[Callable[[], int]]:
    """Listening TCP sockets that never accept: connects succeed (kernel backlog), no byte ever comes back."""
    socks: list[socket.socket] = []

    def make() -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(128)
        socks.append(s)
        return int(s.getsockname()[1])

    yield make
    for s in socks:
        s.close()


@pytest.fixture
def silent_udp() -> Iterator[Callable[[], int]]:
    """Bound UDP sockets that swallow every datagram and never reply."""
    socks: list[socket.socket] = []

    def make() -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        return int(s.getsockname()[1])

    yield make
    for s in socks:
        s.close()


class _Answer500(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"error": {"code": "Base.1.0.InternalError", "message": "lab: always 500"}}'
        if self.path.rstrip("/") == "/redfish/v1":
            body = b'{"@odata.id": "/redfish/v1/", "Systems": {"@odata.id": "/redfish/v1/Systems"}}'
            self.send_response(200)
        else:
            self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_500() -> Iterator[int]:
    """An HTTP server whose service root is fine but every other resource answers 500."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer500)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
