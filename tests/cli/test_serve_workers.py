"""`[api] workers = N`: real `anvil serve` processes over HTTPS on loopback. Worker processes answer
list pages even while the leader (engine, monitor) cannot run; writes, hardware and shows reach the
leader with the client's own address and scheme; workers stop, die and come back with the leader."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.lab import procs
from tests.cli.conftest import Anvil

IRONIC = {"X-OpenStack-Ironic-API-Version": "latest"}


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str
    state: Path
    ctx: ssl.SSLContext

    @property
    def token(self) -> str:
        return (self.state / "admin.token").read_text().strip()

    def call(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
             ironic: bool = False, timeout: float = 20) -> tuple[int, Any]:
        auth = {"X-Auth-Token": self.token, **IRONIC} if ironic else {"Authorization": f"Bearer {self.token}"}
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, method=method, data=data,
                                     headers={**auth, **({"Content-Type": "application/json"} if data else {}),
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ctx) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def workers(self) -> set[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return {int(c) for c in children
                if "--api-worker" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _until(what: str, check: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {seconds:g} s")
        time.sleep(0.1)


@pytest.fixture
def served(anvil_env: dict[str, str], tmp_path: Path) -> Iterator[Served]:
    port = procs.free_tcp_port()
    env = {**os.environ, **anvil_env, "ANVIL_API_LISTEN": f"127.0.0.1:{port}", "ANVIL_API_WORKERS": "2",
           "ANVIL_BOOT_LISTEN": f"127.0.0.1:{procs.free_tcp_port()}"}
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--ready-file", str(ready)], env=env,
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "serve.log").open("wb"))
    state = Path(anvil_env["ANVIL_STATE_DIR"])
    try:
        _until("serve ready", lambda: (ready.exists() and ready.read_text().strip()) or proc.poll() is not None, 60)
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        ctx = ssl.create_default_context(cafile=str(state / "tls" / "cert.pem"))
        yield Served(proc, ready.read_text().strip(), state, ctx)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def test_workers_answer_lists_while_the_leader_is_stopped_and_forward_the_rest(served: Served, anvil: Anvil) -> None:
    workers = served.workers()
    assert len(workers) == 2
    # A write goes to the leader (the engine's process) and is audited with the client's address,
    # not the workers' socket, whatever the client claims in the forwarding header.
    status, body = served.call("POST", "/baremetal/v1/nodes", {"name": "n1", "driver": "fake-hardware"},
                               ironic=True, headers={"X-Anvil-Forwarded-For": "203.0.113.9"})
    assert status == 201, body
    assert body["links"][0]["href"].startswith("https://127.0.0.1:")      # the client's scheme, not the hop's
    trail = anvil("audit", "list").out
    assert "enrolled blade n1" in trail and "127.0.0.1" in trail and "203.0.113.9" not in trail
    # Hardware through the leader's one in-process fake driver: what is set is what is read.
    status, _ = served.call("PUT", "/baremetal/v1/nodes/n1/states/power", {"target": "power on"}, ironic=True)
    assert status == 202
    _until("power on read back", lambda: served.call("GET", "/baremetal/v1/nodes/n1", ironic=True)[1]
           .get("power_state") == "power on")

    os.kill(served.proc.pid, signal.SIGSTOP)      # the leader (engine, monitor) cannot run at all
    try:
        status, body = served.call("GET", "/api/v1/blades?limit=100", timeout=10)
        assert status == 200 and [b["name"] for b in body["items"]] == ["n1"]
        status, body = served.call("GET", "/baremetal/v1/nodes?fields=name", ironic=True, timeout=10)
        assert status == 200 and [n["name"] for n in body["nodes"]] == ["n1"]
    finally:
        os.kill(served.proc.pid, signal.SIGCONT)
    status, body = served.call("GET", "/api/v1/blades?limit=100")
    assert status == 200 and body["total"] == 1

    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=20) == 0
    _until("workers stopped with the leader", lambda: not any(_alive(p) for p in workers))


def test_a_dead_worker_is_replaced_and_workers_end_with_a_killed_leader(served: Served) -> None:
    first = served.workers()
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    _until("a new worker", lambda: len(served.workers()) == 2 and victim not in served.workers())
    assert served.call("GET", "/api/v1/blades")[0] == 200
    workers = served.workers()
    served.proc.kill()                            # no chance to stop them
    served.proc.wait(timeout=10)
    _until("orphaned workers gone", lambda: not any(_alive(p) for p in workers))
