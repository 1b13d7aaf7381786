"""Two real `anvil serve` appliances on one machine (two state dirs, two ports, TLS), driven
through the CLI and the API as an operator would."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.lab import procs
from appliance.store import Store, open_store

PROFILE = """apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: acme, labels: {{rev: "{rev}"}}}}
spec:
  requirements: {{nics: 1}}
  identity:
    nics:
      - {{name: eth0, mac: "02:aa:00:00:00:{mac:02x}"}}
"""


@dataclass
class Site:
    name: str
    root: Path
    api_port: int = field(default_factory=procs.free_tcp_port)
    boot_port: int = field(default_factory=procs.free_tcp_port)
    proc: subprocess.Popen[bytes] | None = None
    _store: Store | None = None

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")}
        return {**base, "ANVIL_STATE_DIR": str(self.state), "ANVIL_CONFIG": str(self.root / "anvil.toml"),
                "ANVIL_API_LISTEN": f"127.0.0.1:{self.api_port}", "ANVIL_BOOT_LISTEN": f"127.0.0.1:{self.boot_port}"}

    def cli(self, *args: str, ok: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        got = subprocess.run([sys.executable, "-m", "appliance", *args], env=self.env(), capture_output=True,
                             text=True, timeout=timeout)
        if ok and got.returncode != 0:
            raise AssertionError(f"anvil {' '.join(args)} at {self.name}: {got.stdout}{got.stderr}")
        return got

    def start(self) -> None:
        ready = self.root / "ready"
        ready.unlink(missing_ok=True)
        log = open(self.root / "serve.log", "ab")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--ready-file", str(ready)],
                                     env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if ready.exists() and ready.read_text().strip():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"serve at {self.name} exited: {(self.root / 'serve.log').read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"serve at {self.name} did not become ready in 40 s")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(f"sqlite:///{self.state / 'anvil.db'}")
        return self._store

    def close(self) -> None:
        self.stop()
        if self._store is not None:
            self._store.close()

    def admin_token(self) -> str:
        return (self.state / "admin.token").read_text().strip()

    def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE    # loopback test client; the sites themselves pin
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


def pair(a: Site, b: Site) -> None:
    """B prints a code; A pairs with it (A replicates to B)."""
    out = b.cli("site", "pair-code", "--as", b.name).stdout
    code = re.search(r"code:\s+(\S+)", out)
    fp = re.search(r"fingerprint:\s+(\S+)", out)
    assert code and fp, out
    got = a.cli("site", "pair", b.name, "--url", b.url, "--code", code.group(1), "--fingerprint", fp.group(1),
                "--as", a.name, "--our-url", a.url)
    assert f"paired with site {b.name}" in got.stdout


def import_profiles(site: Site, tmp: Path, names: range, rev: str = "1", *, replace: bool = False) -> None:
    files = []
    for i in names:
        f = tmp / f"p{i:03d}.yaml"
        f.write_text(PROFILE.format(name=f"web-{i:03d}", mac=i, rev=rev))
        files.append(str(f))
    site.cli("profile", "import", *(["--replace"] if replace else []), *files, timeout=120)


def wait_for(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
