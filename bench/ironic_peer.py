"""The peer: OpenStack Ironic 39 standalone, installed and configured as ../shared/lab/peer-ironic.md
measured it (its §1-§2: its own venv, `fake-hardware` with every interface fake, SQLite,
noauth, one `ironic` process with no RPC, the default `[conductor]` settings), on 127.0.0.1.

:class:`IronicPeer` installs Ironic into its own venv once (``uv pip install ironic==39.0.0``;
kept in ``/var/tmp/anvil-ironic-peer`` between runs, never in Anvil's .venv), writes the
configuration into a scratch directory, creates the schema, starts ``ironic`` in its own
process group and stops that group by its PID (the master and its worker exit together).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from appliance.lab import procs

VERSION = "39.0.0"
DEFAULT_VENV = Path("/var/tmp/anvil-ironic-peer/venv")

CONFIG = """\
[DEFAULT]
auth_strategy = noauth
rpc_transport = none
host = bench
state_path = {lab}/state
log_dir = {lab}/logs
log_file = ironic.log
enabled_hardware_types = fake-hardware
enabled_bios_interfaces = fake
enabled_boot_interfaces = fake
enabled_console_interfaces = fake
enabled_deploy_interfaces = fake
enabled_firmware_interfaces = fake
enabled_inspect_interfaces = fake
enabled_management_interfaces = fake
enabled_network_interfaces = noop
enabled_power_interfaces = fake
enabled_raid_interfaces = fake
enabled_rescue_interfaces = fake
enabled_storage_interfaces = noop
enabled_vendor_interfaces = fake
[api]
host_ip = 127.0.0.1
port = {port}
[database]
connection = sqlite:///{lab}/state/ironic.sqlite
[dhcp]
dhcp_provider = none
[conductor]
automated_clean = true
"""


class PeerUnavailable(RuntimeError):
    """Ironic could not be installed or started here; the bench then prints the recorded figures."""


def ensure_installed(venv: Path, timeout: float = 300.0) -> str:
    """Ironic in ``venv`` (installed now if missing); its version. PeerUnavailable on failure."""
    ironic = venv / "bin" / "ironic"
    if not ironic.exists():
        uv = Path(sys.executable).parent / "uv"
        try:
            if not (venv / "bin" / "python").exists():
                subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120,
                               capture_output=True)
            subprocess.run([str(uv), "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
                            f"ironic=={VERSION}"], check=True, timeout=timeout, capture_output=True)
        except (OSError, subprocess.SubprocessError) as exc:
            raise PeerUnavailable(f"installing ironic=={VERSION} into {venv} failed: {exc}") from None
    got = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; "
                          "print(m.version('ironic'))"], capture_output=True, text=True, timeout=60)
    if got.returncode != 0:
        raise PeerUnavailable(f"ironic in {venv} does not import: {got.stderr[-300:]}")
    return got.stdout.strip()


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


class IronicPeer:
    """``ironic`` on 127.0.0.1:PORT with a fresh database in ``lab``; a context manager."""

    def __init__(self, lab: Path, venv: Path = DEFAULT_VENV) -> None:
        self.lab, self.venv = lab, venv
        self.port = procs.free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.handle: procs.ProcHandle | None = None
        self.version = ""

    def start(self, timeout: float = 90.0) -> None:
        self.version = ensure_installed(self.venv)
        (self.lab / "state").mkdir(parents=True, exist_ok=True)
        (self.lab / "logs").mkdir(parents=True, exist_ok=True)
        conf = self.lab / "ironic.conf"
        conf.write_text(CONFIG.format(lab=self.lab, port=self.port))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "ANVIL_"))}
        sync = subprocess.run([str(self.venv / "bin" / "ironic-dbsync"), "--config-file", str(conf),
                               "create_schema"], capture_output=True, text=True, timeout=120, env=env)
        if sync.returncode != 0:
            raise PeerUnavailable(f"ironic-dbsync create_schema failed: {sync.stderr[-500:]}")
        self.handle = procs.start([str(self.venv / "bin" / "ironic"), "--config-file", str(conf)],
                                  self.lab / "logs" / "stdout.log", env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.handle.alive():
                raise PeerUnavailable(f"ironic exited: {self.handle.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/v1/nodes", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise PeerUnavailable(f"ironic did not answer within {timeout:g} s (see {self.lab}/logs)")

    def cpu(self) -> float:
        """Master and worker CPU seconds."""
        if self.handle is None:
            return 0.0
        return procs.cpu_seconds(self.handle.pid) + sum(procs.cpu_seconds(c) for c in children(self.handle.pid))

    def worker_pid(self) -> int | None:
        kids = children(self.handle.pid) if self.handle else []
        return kids[0] if kids else None

    def stop(self) -> None:
        if self.handle is not None:
            procs.stop(self.handle, timeout=15)   # the group: master and worker, by the master's PID

    def __enter__(self) -> IronicPeer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
