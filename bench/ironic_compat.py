"""Anvil through Ironic's API next to Ironic itself: ../shared/lab/peer-ironic.md's 100-node run.

    .venv/bin/python bench/ironic_compat.py                 # 100 nodes; Ironic 39 re-measured if it installs
    .venv/bin/python bench/ironic_compat.py --smoke         # CI: 5 nodes, fake driver, recorded Ironic figures
    .venv/bin/python bench/ironic_compat.py --py-spy prof/  # also sample where anvil serve's time goes

Each Anvil run is a fresh ``anvil serve`` with its shipped defaults (no configuration file: HTTPS
with its self-signed certificate, verified by the client; engine, monitor, boot HTTP), and the
100-node run is the first thing it does (the cold first round is the one measured). The client
mirrors the peer's (peer-ironic.md §2): every phase is one fan-out of N requests over 16 concurrent
connections, then a poll of the node list every 0.1 s until every node is there.

- ``/baremetal/v1`` (Ironic's API, Anvil's token as ``X-Auth-Token``): POST nodes, ``manage``,
  ``provide`` (enroll+manage+provide = first POST → all available); ``active`` (deploy = first PUT
  → all active); ``deleted`` (undeploy = first PUT → all available).
- ``/api/v1`` (Anvil's own): POST blades (spare at once: enrol is all there is to it); assign each
  profile to its blade; release (jobs followed through ``GET /api/v1/jobs``).
- hardware: ``fake`` (the fake BMC driver, as Ironic's fake-hardware; profiles boot locally, so a
  stamp is active at power-on) and ``rack`` (sushy-tools Redfish emulators, 25 blades per process,
  power changes after 0-0.2 s instead of sushy's 1-11 s, and an snmpsim switch; profiles with two
  NICs on VLANs boot the lab image, whose emulated OS posts the boot signal).
- the peer: Ironic 39 (its own venv, peer-ironic.md's default configuration) on the same machine in
  the same run, plain HTTP; or, when it cannot be installed or started here, the figures recorded
  in peer-ironic.md, and the report says which.
- load: a fresh ``anvil serve`` whose store holds ``--fill`` more blades (fake driver, monitored);
  16 clients page ``GET /api/v1/blades?limit=100`` (then ``/baremetal/v1/nodes?limit=100``) while
  100 nodes deploy through ``/baremetal/v1``; p50/p99 per page. Ironic's list is paged the same
  way while its 100 deploy (with its 100 nodes only: enrolling 10,000 takes it half an hour).

Prints the tables, the comparison with ratios, then one JSON line (``--json FILE`` too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import api as api_bench  # bench/api.py: the store fill and the page statistics
import ironic_peer
import orjson
import pyspy_summary
import userpath
from sqlalchemy import func, select

from appliance import heap
from appliance.drivers.protocols import Secret
from appliance.secrets import SecretBox, ensure_key
from appliance.store.tables import JobRow
from profiles import bench_profile

CLIENTS = 16
POLL = 0.1
RECORDED = {"emp_s": (26.7, 33.0), "deploy_s": (16.78, 18.66)}   # peer-ironic.md §3, default, N=100
TARGETS = {"emp_s": 6.0, "deploy_s": 3.5, "p99_ms": 100.0}        # issue 20 / DESIGN §5 (fake hardware)
FAILED = ("deploy failed", "clean failed", "inspect failed", "error")
FAKE_PROFILE = """apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: bench}}
spec:
  boot: {{mode: uefi, source: {{type: local}}}}
"""


class Client:
    """HTTP to one server: Ironic's headers (``X-Auth-Token``, the latest microversion) or Anvil's bearer token."""

    def __init__(self, base: str, *, token: str | None = None, bearer: bool = False, ssl_ctx: Any = None) -> None:
        self.base = base
        self.headers = {"X-OpenStack-Ironic-API-Version": "latest"}
        if token:
            self.headers.update({"Authorization": f"Bearer {token}"} if bearer else {"X-Auth-Token": token})
        self.ssl = ssl_ctx
        self.session: aiohttp.ClientSession | None = None
        self.gate = asyncio.Semaphore(CLIENTS)

    async def __aenter__(self) -> Client:
        self.session = aiohttp.ClientSession(headers=self.headers, timeout=aiohttp.ClientTimeout(total=300),
                                             connector=aiohttp.TCPConnector(ssl=self.ssl or False, limit=CLIENTS + 24))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def call(self, method: str, path: str, body: Any = None, *, text: str | None = None,
                   ctype: str = "application/json") -> Any:
        """One request; 409 and 503 (a node busy, Ironic's SQLite locked) are retried a bounded number of times."""
        assert self.session is not None
        data = text if text is not None else (json.dumps(body) if body is not None else None)
        for attempt in range(60):
            async with self.session.request(method, self.base + path, data=data,
                                            headers={"Content-Type": ctype} if data is not None else {}) as resp:
                raw = await resp.read()
                if resp.status in (409, 503) and attempt < 59:
                    await asyncio.sleep(0.25)
                    continue
                if resp.status >= 300:
                    raise RuntimeError(f"{method} {path}: {resp.status} {raw[:400]!r}")
                return json.loads(raw) if raw else None
        raise AssertionError("unreachable")

    async def fan(self, calls: Sequence[tuple[str, str, Any]]) -> None:
        """Every call at once, at most 16 in flight (the peer's 16 client threads)."""
        async def one(method: str, path: str, body: Any) -> None:
            async with self.gate:
                await self.call(method, path, body)
        await asyncio.gather(*(one(*c) for c in calls))


async def wait_nodes(c: Client, names: set[str], want: str, timeout: float) -> float:
    """Poll the node list until every node of ``names`` is ``want``; seconds until then."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    for _ in range(int(timeout / POLL) + 2):
        states: dict[str, str] = {}
        path: str | None = "/v1/nodes?fields=name,provision_state,last_error&limit=1000"
        while path:
            page = await c.call("GET", path)
            states.update({n["name"]: n["provision_state"] for n in page["nodes"]})
            nxt = page.get("next")
            path = nxt[nxt.index("/v1/"):] if nxt else None
        bad = {n: s for n, s in states.items() if n in names and s in FAILED}
        if bad:
            raise RuntimeError(f"{len(bad)} node(s) failed waiting for {want}: {dict(list(bad.items())[:3])}")
        if all(states.get(n) == want for n in names):
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL)
    raise TimeoutError(f"nodes not {want} within {timeout:g} s")


async def wait_each(c: Client, names: set[str], want: str, timeout: float, every: float = 2.0) -> float:
    """Like openstacksdk's ``wait_for_nodes_provision_state``: GET each node not yet ``want``
    (16 at a time; the SDK goes one by one) every ``every`` s (the SDK's wait: 2 s). The load run
    waits this way: listing all 10,000 nodes ten times a second (:func:`wait_nodes`) is a load
    of its own, which the issue's "while 100 stamps run" does not ask for."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    left = set(names)

    async def state(n: str) -> tuple[str, str]:
        async with c.gate:
            node = await c.call("GET", f"/v1/nodes/{n}?fields=name,provision_state,last_error")
        return n, node["provision_state"]
    for _ in range(int(timeout / every) + 2):
        got = dict(await asyncio.gather(*(state(n) for n in sorted(left))))
        bad = {n: s for n, s in got.items() if s in FAILED}
        if bad:
            raise RuntimeError(f"{len(bad)} node(s) failed waiting for {want}: {dict(list(bad.items())[:3])}")
        left = {n for n, s in got.items() if s != want}
        if not left:
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(every)
    raise TimeoutError(f"{len(left)} node(s) not {want} within {timeout:g} s")


async def ironic_api_run(c: Client, nodes: list[dict[str, Any]], ports: list[dict[str, Any]],
                         timeout: float, spy: Callable[[str], Any] = lambda _: contextlib.nullcontext(),
                         cpu: Callable[[], float] = lambda: 0.0) -> dict[str, float]:
    """The peer's phases through Ironic's API (Anvil's /baremetal/v1 or Ironic itself); ``spy(phase)``
    samples each phase apart (py-spy) when asked; ``cpu()`` is the server's CPU seconds so far
    (a phase's CPU is steadier than its wall time on a shared machine)."""
    names = {n["name"] for n in nodes}
    out: dict[str, float] = {}
    emp = spy("emp")
    emp.__enter__()
    t0 = time.monotonic()
    await c.fan([("POST", "/v1/nodes", n) for n in nodes])
    await c.fan([("POST", "/v1/ports", p) for p in ports])
    out["enroll_s"] = time.monotonic() - t0
    t = time.monotonic()
    await c.fan([("PUT", f"/v1/nodes/{n}/states/provision", {"target": "manage"}) for n in names])
    await wait_nodes(c, names, "manageable", timeout)
    out["manage_s"] = time.monotonic() - t
    t = time.monotonic()
    await c.fan([("PUT", f"/v1/nodes/{n}/states/provision", {"target": "provide"}) for n in names])
    await wait_nodes(c, names, "available", timeout)
    out["provide_s"] = time.monotonic() - t
    out["emp_s"] = time.monotonic() - t0
    emp.__exit__(None, None, None)
    with spy("deploy"):
        out["deploy_started"] = time.time()
        c0 = cpu()
        t = time.monotonic()
        await c.fan([("PUT", f"/v1/nodes/{n}/states/provision", {"target": "active"}) for n in names])
        out["deploy_submit_s"] = time.monotonic() - t
        await wait_nodes(c, names, "active", timeout)
        out["deploy_s"] = time.monotonic() - t
        out["deploy_cpu_s"] = cpu() - c0
    with spy("undeploy"):
        t = time.monotonic()
        await c.fan([("PUT", f"/v1/nodes/{n}/states/provision", {"target": "deleted"}) for n in names])
        await wait_nodes(c, names, "available", timeout)
        out["undeploy_s"] = time.monotonic() - t
    return out


async def wait_jobs(c: Client, ids: set[str], timeout: float) -> float:
    t0 = time.monotonic()
    for _ in range(int(timeout / POLL) + 2):
        page = await c.call("GET", f"/api/v1/jobs?tenant=bench&limit={min(1000, len(ids) + 10)}")
        mine = {j["id"]: j for j in page["items"] if j["id"] in ids}
        bad = {i: j["error"] for i, j in mine.items() if j["state"] in userpath.FINAL and j["state"] != "succeeded"}
        if bad:
            raise RuntimeError(f"{len(bad)} job(s) failed: {list(bad.values())[:3]}")
        if len(mine) == len(ids) and all(j["state"] == "succeeded" for j in mine.values()):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            break
        await asyncio.sleep(POLL)
    raise TimeoutError(f"jobs not over within {timeout:g} s")


async def anvil_api_run(c: Client, blades: list[dict[str, Any]], pairs: list[tuple[str, str]],
                        timeout: float, cpu: Callable[[], float] = lambda: 0.0) -> dict[str, float]:
    """The same phases through /api/v1: enrol, assign each profile to its blade, release."""
    out: dict[str, float] = {}
    t0 = time.monotonic()
    await c.fan([("POST", "/api/v1/blades", b) for b in blades])
    out["enroll_s"] = out["emp_s"] = time.monotonic() - t0
    for phase, action in (("deploy", "assign"), ("undeploy", "release")):
        t = time.monotonic()
        if phase == "deploy":
            out["deploy_started"] = time.time()
        c0 = cpu()
        ids: list[str] = []

        async def submit(profile: str, blade: str, action: str = action, ids: list[str] = ids) -> None:
            async with c.gate:
                job = await c.call("POST", f"/api/v1/profiles/{profile}/{action}",
                                   {"tenant": "bench", **({"blade": blade} if action == "assign" else {})})
                ids.append(job["id"])
        await asyncio.gather(*(submit(p, b) for p, b in pairs))
        await wait_jobs(c, set(ids), timeout)
        out[f"{phase}_s"] = time.monotonic() - t
        out[f"{phase}_cpu_s"] = cpu() - c0
    return out


def _redfish_info(address: str, password: str) -> dict[str, Any]:
    u = urlsplit(address)
    return {"redfish_address": f"{u.scheme.partition('+')[2]}://{u.netloc}", "redfish_system_id": u.path,
            "redfish_username": "admin", "redfish_password": password}


def server_deploy_wall(app: userpath.Appliance, started: float) -> float | None:
    """First deploy request → the last stamp job's finish, from the appliance's own records."""
    store = app.store()
    try:
        with store.read() as s:
            last = s.scalar(select(func.max(JobRow.finished_at)).where(JobRow.kind == "stamp"))
    finally:
        store.close()
    return (userpath.aware(last).timestamp() - started) if last else None


class Sampler:
    """py-spy sampling one process into collapsed stacks (``--py-spy``), stopped with SIGINT."""

    def __init__(self, out: Path | None, name: str, pid: int | None) -> None:
        self.out, self.name, self.pid = out, name, pid
        self.proc: subprocess.Popen[bytes] | None = None
        self.file = out / f"{name}.txt" if out else None

    def __enter__(self) -> Sampler:
        if self.out is not None and self.pid is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            spy = Path(sys.executable).parent / "py-spy"
            self.proc = subprocess.Popen([str(spy), "record", "--pid", str(self.pid), "--rate", "100", "--format",
                                          "raw", "--nonblocking", "--output", str(self.file),
                                          # only the thread holding the interpreter lock: what costs CPU
                                          *(["--gil"] if os.environ.get("BENCH_SPY_GIL") else [])],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)   # attached before the phase starts
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _workers(args: argparse.Namespace) -> dict[str, str]:
    """``--api-workers N``: ``[api] workers = N`` (appliance.api.workers) instead of the default one process."""
    return {"ANVIL_API_WORKERS": str(args.api_workers)} if args.api_workers else {}


async def anvil_run(args: argparse.Namespace, work: Path, path: str, hardware: str) -> dict[str, Any]:
    n = args.nodes
    work.mkdir(parents=True, exist_ok=True)
    with userpath.Appliance(work, _workers(args)) as app, contextlib.ExitStack() as stack:
        rack = None
        if hardware == "rack":
            chassis = [min(25, n - c) for c in range(0, n, 25)]
            rack = stack.enter_context(userpath.Rack(work / "rack", app.boot_url, chassis, (0.0, 0.2)))
        t_start = time.monotonic()
        app.start()
        start_s = time.monotonic() - t_start
        async with Client(app.url, token=app.token(), bearer=True, ssl_ctx=app.ssl_context()) as rest:
            docs = (bench_profile(f"p{i:03d}", i, prefix="c1") if rack else FAKE_PROFILE.format(name=f"p{i:03d}")
                    for i in range(1, n + 1))
            await userpath.import_profiles(rest_like(rest), docs)
            if rack is not None:
                rack.enroll_switch(app)
        names = [rack.blades[i].name if rack else f"n{i + 1:03d}" for i in range(n)]
        cpu0 = app.cpu()
        files: list[str] = []

        def spy(phase: str) -> Sampler:
            s = Sampler(args.py_spy, f"anvil-{path}-{hardware}-{phase}", app.proc.pid if app.proc else None)
            if s.file is not None and args.py_spy is not None:
                files.append(str(s.file))
            return s
        if path == "baremetal":
            nodes, ports = [], []
            for i, name in enumerate(names):
                body: dict[str, Any] = {"name": name, "instance_info": {"anvil_profile": f"bench/p{i + 1:03d}"}}
                if rack is not None:
                    b = rack.blades[i]
                    info = _redfish_info(b.emulator.address(b.system), rack.password)
                    body.update(driver="redfish", driver_info=info,
                                properties={"cpus": b.system["cpus"], "memory_mb": b.system["memory_gib"] * 1024})
                    ports += [{"node_uuid": name, "address": nic["mac"],
                               "local_link_connection": {"switch_info": userpath.SWITCH, "port_id": b.ports[k]}}
                              for k, nic in enumerate(b.system["nics"])]
                else:
                    body.update(driver="fake-hardware", properties={"cpus": 32, "memory_mb": 262144})
                nodes.append(body)
            async with Client(app.url + "/baremetal", token=app.token(), ssl_ctx=app.ssl_context()) as c:
                phases = await ironic_api_run(c, nodes, ports, args.timeout, spy, app.cpu)
        else:
            blades = [rack.enrollment(b) for b in rack.blades] if rack else [
                {"name": nm, "bmc": f"fake://{nm}", "driver": "fake", "username": "bench", "password": "bench",
                 "cpus": 32, "memoryGiB": 256} for nm in names]
            async with Client(app.url, token=app.token(), bearer=True, ssl_ctx=app.ssl_context()) as c:
                phases = await anvil_api_run(c, blades, [(f"p{i + 1:03d}", nm) for i, nm in enumerate(names)],
                                             args.timeout, app.cpu)
        cpu = app.cpu() - cpu0
        server = server_deploy_wall(app, phases["deploy_started"])
        return {"system": "anvil", "path": path, "hardware": hardware, "n": n, "start_s": round(start_s, 2),
                **{k: round(v, 3) for k, v in phases.items() if k != "deploy_started"},
                "deploy_server_s": round(server, 3) if server else None, "cpu_s": round(cpu, 1),
                "rack_cpu_s": {k: round(v, 1) for k, v in rack.cpu().items()} if rack else None,
                "timers": app.describe_timers(), "profiles": files}


def rest_like(c: Client) -> Any:
    """userpath.import_profiles wants ``call(method, path, text=, content_type=)``."""
    class _R:
        async def call(self, method: str, path: str, body: Any = None, *, text: str | None = None,
                       content_type: str = "application/json") -> Any:
            return await c.call(method, path, body, text=text, ctype=content_type)
    return _R()


async def ironic_run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    with ironic_peer.IronicPeer(work / "ironic", args.ironic_venv) as peer:
        nodes = [{"name": f"n{i:03d}", "driver": "fake-hardware",
                  "instance_info": {"image_source": "http://127.0.0.1/img.qcow2"}} for i in range(1, args.nodes + 1)]
        cpu0 = peer.cpu()
        files: list[str] = []

        def spy(phase: str) -> Sampler:
            s = Sampler(args.py_spy, f"ironic-{phase}", peer.worker_pid())
            if s.file is not None and args.py_spy is not None:
                files.append(str(s.file))
            return s
        async with Client(peer.url) as c:
            phases = await ironic_api_run(c, nodes, [], args.timeout, spy, peer.cpu)
            cpu = peer.cpu() - cpu0
            load = await pages_while(c, "/v1/nodes", ironic_next, args.clients,
                                     deploy_round(c, {n["name"]: n["instance_info"] for n in nodes}, args.timeout,
                                                  redeploy=True))
        return {"system": "ironic", "version": peer.version, "path": "ironic", "hardware": "fake-hardware",
                "n": args.nodes, **{k: round(v, 3) for k, v in phases.items() if k != "deploy_started"},
                "cpu_s": round(cpu, 1), "load": load, "profiles": files}


def deploy_round(c: Client, infos: dict[str, dict[str, Any]], timeout: float, *,
                 redeploy: bool = False, wait: Callable[..., Awaitable[float]] | None = None,
                 ) -> Callable[[], Awaitable[float]]:
    """Deploy every node of ``infos`` (its instance_info set first, untimed: an undeploy forgets it,
    in Ironic as in Anvil); seconds from the first deploy request until all are active, as ``wait``
    (default :func:`wait_nodes`) sees it."""
    names = set(infos)
    waiter = wait or wait_nodes

    async def run() -> float:
        await c.fan([("PATCH", f"/v1/nodes/{n}", [{"op": "add", "path": "/instance_info", "value": info}])
                     for n, info in infos.items()])
        t = time.monotonic()
        await c.fan([("PUT", f"/v1/nodes/{n}/states/provision", {"target": "active"}) for n in names])
        await waiter(c, names, "active", timeout)
        took = time.monotonic() - t
        if redeploy:   # back to available for whatever comes next (not timed)
            await c.fan([("PUT", f"/v1/nodes/{n}/states/provision", {"target": "deleted"}) for n in names])
            await waiter(c, names, "available", timeout)
        return took
    return run


def ironic_next(c: Client, path: str, body: dict[str, Any]) -> str | None:
    """Ironic's ``next``: the next page's URL."""
    nxt = body.get("next")
    return nxt if isinstance(nxt, str) and nxt else None


def anvil_next(c: Client, path: str, body: dict[str, Any]) -> str | None:
    """/api/v1's ``next``: a cursor for ``after``."""
    nxt = body.get("next")
    return f"{c.base}{path}?limit=100&after={nxt}" if nxt else None


async def pages_while(c: Client, path: str, follow: Callable[[Client, str, dict[str, Any]], str | None],
                      clients: int, load: Callable[[], Awaitable[float]],
                      cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    """``clients`` walkers page ``path?limit=100`` from the first page to the last, over and over,
    while ``load`` runs; the latency of each page inside that window, the machine's load average
    at its end and, with ``cpu`` (the server's CPU seconds), the server's CPU per page in the
    window (deploys and monitor included: on a shared machine that moves less than latencies)."""
    assert c.session is not None
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()

    async def walker() -> None:
        url: str | None = None
        while not stop.is_set():
            target = url or f"{c.base}{path}?limit=100"
            t = time.perf_counter()
            async with c.session.get(target) as resp:   # type: ignore[union-attr]
                body = await resp.json(loads=orjson.loads)   # cheap: the client shares 2 cores
                assert resp.status == 200, body
            samples.append((t, time.perf_counter() - t))
            url = follow(c, path, body)

    walkers = [asyncio.create_task(walker()) for _ in range(clients)]
    try:
        t0, cpu0, mine0 = time.perf_counter(), cpu() if cpu else 0.0, time.process_time()
        took = await load()
        t1, cpu1, mine1 = time.perf_counter(), cpu() if cpu else 0.0, time.process_time()
    finally:
        stop.set()
        await asyncio.gather(*walkers, return_exceptions=True)
    window = api_bench.window(samples, t0, t1)
    got = api_bench.stats(window, t1 - t0)
    per_page = round((cpu1 - cpu0) * 1000 / got["requests"], 2) if cpu and got["requests"] else None
    # The client's own CPU (this process: walkers, deploys, waiter) on the same 2 cores: near one
    # core, its loop would be what the latencies measure.
    client = round((mine1 - mine0) * 1000 / got["requests"], 2) if got["requests"] else None
    return {"path": path, "clients": clients, "load_s": round(took, 2), **got, "server_cpu_ms_per_page": per_page,
            "client_cpu_ms_per_page": client, "client_cpu_share": round((mine1 - mine0) / (t1 - t0), 2),
            "loadavg": round(os.getloadavg()[0], 2)}


async def load_run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The p99 of a list page under load: ``--fill`` monitored blades, 100 deploys through /baremetal/v1."""
    work.mkdir(parents=True, exist_ok=True)
    app = userpath.Appliance(work, _workers(args))
    key = app.settings().secrets_key_path
    key.parent.mkdir(parents=True, exist_ok=True)
    ensure_key(key)
    t = time.monotonic()
    api_bench.fill(app.settings().store_url, args.fill, SecretBox(key).encrypt(Secret("bench")), 1)
    fill_s = time.monotonic() - t
    with app:
        app.start()
        names = {f"ld{i:03d}" for i in range(1, args.nodes + 1)}
        async with Client(app.url, token=app.token(), bearer=True, ssl_ctx=app.ssl_context()) as rest:
            await userpath.import_profiles(rest_like(rest), (FAKE_PROFILE.format(name=f"q{nm[2:]}") for nm in names))
        async with Client(app.url + "/baremetal", token=app.token(), ssl_ctx=app.ssl_context()) as c:
            nodes = [{"name": nm, "driver": "fake-hardware", "instance_info": {"anvil_profile": f"bench/q{nm[2:]}"}}
                     for nm in sorted(names)]
            await c.fan([("POST", "/v1/nodes", b) for b in nodes])
            for verb, want in (("manage", "manageable"), ("provide", "available")):
                await c.fan([("PUT", f"/v1/nodes/{n}/states/provision", {"target": verb}) for n in names])
                await wait_nodes(c, names, want, args.timeout)
        infos = {n["name"]: n["instance_info"] for n in nodes}
        files: list[str] = []

        def spy(phase: str) -> Sampler:
            s = Sampler(args.py_spy, f"anvil-load-{args.fill}-{phase}", app.proc.pid if app.proc else None)
            if s.file is not None:
                files.append(str(s.file))
            return s
        async with Client(app.url, token=app.token(), bearer=True, ssl_ctx=app.ssl_context()) as rest, \
                Client(app.url + "/baremetal", token=app.token(), ssl_ctx=app.ssl_context()) as c:
            with spy("blades"):
                rows = [await pages_while(rest, "/api/v1/blades", anvil_next, args.clients,
                                          deploy_round(c, infos, args.timeout, redeploy=True, wait=wait_each),
                                          app.cpu)]
            with spy("nodes"):
                rows.append(await pages_while(c, "/v1/nodes", ironic_next, args.clients,
                                              deploy_round(c, infos, args.timeout, redeploy=True, wait=wait_each),
                                              app.cpu))
            rows[1]["path"] = "/baremetal/v1/nodes"
    return {"fill": args.fill, "fill_s": round(fill_s, 1), "rows": rows, "timers": app.describe_timers(),
            "profiles": files}


# ---- the report --------------------------------------------------------------------------------

def _fmt(v: Any, unit: str = "s") -> str:
    if v is None:
        return "-"
    if isinstance(v, tuple):
        return f"{v[0]:g}-{v[1]:g} {unit}"
    return f"{v:.2f} {unit}" if unit == "s" else f"{v:.1f} {unit}"


def _ratio(peer: Any, anvil: Any) -> str:
    if peer is None or anvil in (None, 0):
        return "-"
    lo, hi = peer if isinstance(peer, tuple) else (peer, peer)
    return f"{lo / anvil:.1f}x" if lo == hi else f"{lo / anvil:.1f}-{hi / anvil:.1f}x"


def report(out: dict[str, Any]) -> list[str]:
    peer = out.get("ironic")
    lines = [f"Anvil's Bare Metal API vs OpenStack Ironic {peer['version'] if peer else '39'}: "
             f"{out['n']} nodes, 16 concurrent clients, node list polled every {POLL:g} s",
             f"  anvil: a fresh `anvil serve` per run, HTTPS (verified self-signed certificate), "
             f"{out['runs'][0]['timers'] if out['runs'] else ''}; cold first round (nothing warmed up)"
             + (f"; [api] workers = {out['api_workers']}" if out.get("api_workers") else ""),
             "  ironic: " + (f"RE-MEASURED in this run: Ironic {peer['version']} standalone, peer-ironic.md's default "
                             "configuration (fake-hardware, SQLite, noauth, automated_clean), plain HTTP"
                             if peer else f"NOT RE-MEASURED ({out.get('ironic_note')}); the figures recorded in "
                                          "../shared/lab/peer-ironic.md (default config, N=100, two runs)"),
             "",
             f"  {'run':<26}{'enroll':>8}{'manage':>8}{'provide':>9}{'E+M+P':>8}{'deploy':>8}{'(server)':>9}"
             f"{'undeploy':>10}{'CPU s':>7}{'deploy CPU s':>14}"]
    for r in out["runs"] + ([peer] if peer else []):
        label = "ironic fake-hardware" if r["system"] == "ironic" else f"anvil {r['path']} {r['hardware']}"
        lines.append(f"  {label:<26}{r['enroll_s']:>8.2f}{r.get('manage_s', 0):>8.2f}{r.get('provide_s', 0):>9.2f}"
                     f"{r['emp_s']:>8.2f}{r['deploy_s']:>8.2f}{_fmt(r.get('deploy_server_s')).rstrip(' s'):>9}"
                     f"{r['undeploy_s']:>10.2f}{r['cpu_s']:>7.1f}{_fmt(r.get('deploy_cpu_s')).rstrip(' s'):>14}")
    lines.append("  (/api/v1 has no manage/provide: an enrolled blade is a spare at once; deploy = request -> all "
                 "active as the client saw it, (server) = to the last stamp job's finish; CPU s = the server's, "
                 "whole run and deploy phase)")
    load = out.get("load")
    if load:
        lines += ["", f"  list page latency under load: {load['fill']} more blades in the store (fake driver, "
                      f"monitored), {out['n']} nodes deploying through /baremetal/v1"]
        for r in load["rows"] + ([peer["load"]] if peer else []):
            who = "ironic /v1/nodes" if r is (peer or {}).get("load") else f"anvil {r['path']}"
            cpu = (f", server CPU {r['server_cpu_ms_per_page']:.1f} ms/page"
                   if r.get("server_cpu_ms_per_page") is not None else "")
            lines.append(f"  {who:<26} {r['clients']} clients, {r['requests']} pages: p50 {r['p50_ms']:.1f} ms, "
                         f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms (deploys took {r['load_s']:.1f} s"
                         f"{cpu}, load average {r.get('loadavg', '-')})")
    fake = next((r for r in out["runs"] if r["path"] == "baremetal" and r["hardware"] == "fake"), None)
    api = next((r for r in out["runs"] if r["path"] == "api" and r["hardware"] == "fake"), None)
    # Ratios only like for like: the recorded figures are for 100 nodes.
    comparable = peer is not None or out["n"] == 100
    lines += ["", f"  {'N=' + str(out['n']) + ', fake hardware':<26}{'Ironic':>16}{'Anvil /baremetal/v1':>21}"
                  f"{'ratio':>13}{'Anvil /api/v1':>15}{'ratio':>13}{'target':>11}"]
    for key, what in (("emp_s", "enroll+manage+provide"), ("deploy_s", "deploy -> active"),
                      ("undeploy_s", "undeploy -> available")):
        theirs = peer[key] if peer else RECORDED.get(key)
        a, b = (fake or {}).get(key), (api or {}).get(key)
        target = TARGETS.get(key)
        r1, r2 = (_ratio(theirs, a), _ratio(theirs, b)) if comparable else ("n/a", "n/a")
        lines.append(f"  {what:<26}{_fmt(theirs):>16}{_fmt(a):>21}{r1:>13}{_fmt(b):>15}{r2:>13}"
                     f"{(f'<= {target:g} s' if target else '-'):>11}")
    if load:
        p99 = load["rows"][0]["p99_ms"]
        theirs_p99 = peer["load"]["p99_ms"] if peer else None
        r1 = _ratio(theirs_p99, load["rows"][1]["p99_ms"]) if comparable else "n/a"
        r2 = _ratio(theirs_p99, p99) if comparable else "n/a"
        lines.append(f"  {'list page p99 under load':<26}{_fmt(theirs_p99, 'ms'):>16}"
                     f"{_fmt(load['rows'][1]['p99_ms'], 'ms'):>21}{r1:>13}{_fmt(p99, 'ms'):>15}{r2:>13}"
                     f"{'<= 100 ms':>11}")
    lines.append("  ratio = Ironic / Anvil, how many times faster Anvil is (n/a: not the same N as the Ironic figures);"
                 " /api/v1's enroll+manage+provide is its enrol alone; Ironic's p99 is with its 100 nodes only")
    if out.get("profiles"):
        lines += ["", "  where the time goes (py-spy, 100 Hz):"] + [f"    {x}" for x in out["profiles"]]
    return lines


async def main_async(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for hardware in args.hardware:
        for path in args.paths:
            runs.append(await anvil_run(args, work / f"{path}-{hardware}", path, hardware))
            print(f"# anvil {path} {hardware}: " + json.dumps(runs[-1]), file=sys.stderr, flush=True)
    out: dict[str, Any] = {"n": args.nodes, "smoke": args.smoke, "runs": runs}
    if args.fill:
        out["load"] = await load_run(args, work / "load")
    if args.ironic == "run":
        try:
            out["ironic"] = await ironic_run(args, work / "peer")
        except ironic_peer.PeerUnavailable as exc:
            out["ironic_note"] = f"Ironic unavailable here: {exc}"
    else:
        out["ironic_note"] = "--ironic recorded" if not args.smoke else "smoke mode"
    if args.py_spy:
        out["profiles"] = [line for r in [*runs, out.get("load") or {}, out.get("ironic") or {}]
                           for f in r.get("profiles") or []
                           if Path(f).exists() for line in pyspy_summary.summarize(Path(f), label=Path(f).stem)]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CI: 5 nodes, fake driver only, recorded Ironic figures")
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--paths", type=lambda v: [x for x in v.split(",") if x], default=["baremetal", "api"])
    ap.add_argument("--hardware", type=lambda v: [x for x in v.split(",") if x], default=["fake", "rack"])
    ap.add_argument("--ironic", choices=["run", "recorded"], default="run",
                    help="re-measure Ironic here (installed into --ironic-venv if missing), or print peer-ironic.md's")
    ap.add_argument("--ironic-venv", type=Path, default=ironic_peer.DEFAULT_VENV)
    ap.add_argument("--fill", type=int, default=10_000, help="blades in the store for the load run (0: no load run)")
    ap.add_argument("--clients", type=int, default=CLIENTS, help="list walkers in the load run")
    ap.add_argument("--timeout", type=float, default=600.0, help="bound on each phase, s")
    ap.add_argument("--py-spy", type=Path, default=None, help="sample anvil serve (and Ironic) with py-spy into DIR")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--api-workers", type=int, default=0,
                    help="[api] workers = N for every Anvil run (default: the shipped one process)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.nodes, args.hardware, args.ironic, args.fill, args.clients = 5, ["fake"], "recorded", 300, 4
    # The client's own collector pauses (full passes of 200-290 ms seen under 16 walkers) would
    # count as the server's latency: the client settles its heap as anvil serve does.
    heap.settle()
    with tempfile.TemporaryDirectory(prefix="anvil-bench-ironic-") as tmp, userpath.StallWatch() as watch:
        out = asyncio.run(main_async(args, Path(tmp)))
    out["machine"] = watch.summary()
    out["api_workers"] = args.api_workers
    for line in [*report(out), f"  {watch.describe()}"]:
        print(line)
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
