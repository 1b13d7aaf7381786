"""A managed-switch stand-in: a private Open vSwitch (userspace datapath) in its own network namespace.

``up()`` starts ``ovsdb-server`` on a private database and ``ovs-vswitchd`` inside a
fresh namespace (the netdev datapath creates its tap devices in the namespace it runs
in), adds one bridge with ``datapath_type=netdev``, and for every :class:`Host` a
namespace with a veth: the switch end is an OVS port, the host end is ``eth0`` with
the host's address and ``tx`` offload off (without it TCP fails across the userspace
datapath). ``down()`` stops both daemons by PID and deletes the namespaces.

Everything lives in a short private run directory (unix socket paths are limited to
108 bytes, and pytest's tmp paths can be longer): the database, ``db.sock``, the
``.ctl`` files and ``<bridge>.mgmt`` for ``ovs-ofctl``. Nothing goes to
/var/run/openvswitch and nothing is created in the root namespace. Names carry a
random prefix, so several labs (pytest-xdist workers) run side by side.

Recipe and pitfalls: ../shared/lab/vlan.md §1. Needs root and ``openvswitch-switch``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from appliance.lab import netns, procs

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


@dataclass(frozen=True, slots=True)
class Host:
    """A host on the switch: ``vlan`` is its access VLAN, ``trunks`` makes its port a trunk instead."""

    name: str                   # short, e.g. "a"; the port is "p-<name>", the namespace "<prefix><name>"
    address: str | None = None  # e.g. "10.99.0.1/24"
    vlan: int | None = None
    trunks: tuple[int, ...] = ()

    @property
    def ip(self) -> str:
        if not self.address:
            raise ValueError(f"host {self.name} has no address")
        return self.address.split("/", 1)[0]


def missing_tools() -> str | None:
    """None when OVS and iproute2 are installed, else what is missing."""
    for tool in ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install openvswitch-switch iproute2)"
    if not SCHEMA.exists():
        return f"{SCHEMA} is missing"
    return None


class OvsSwitch:
    """One OVS bridge in namespace ``<prefix>sw`` with host namespaces around it."""

    def __init__(self, workdir: Path, hosts: tuple[Host, ...] = (), *, bridge: str = "br0",
                 prefix: str | None = None) -> None:
        self.workdir = workdir
        self.hosts = {h.name: h for h in hosts}
        self.bridge = bridge
        self.prefix = prefix or netns.unique_prefix("ov")
        self.switch_ns = f"{self.prefix}sw"
        self.rundir = Path()
        self._procs: list[procs.ProcHandle] = []
        self._namespaces: list[str] = []

    # ---- names -------------------------------------------------------------------

    @property
    def db(self) -> str:
        return f"unix:{self.rundir / 'db.sock'}"

    @property
    def address(self) -> str:
        """The ``ovs`` driver address for this bridge."""
        return f"ovs:{self.db}?bridge={self.bridge}"

    @property
    def mgmt(self) -> str:
        return f"unix:{self.rundir / (self.bridge + '.mgmt')}"

    def port(self, host: str) -> str:
        return f"p-{host}"

    def host_ns(self, host: str) -> str:
        return f"{self.prefix}{host}"

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(p.pid for p in self._procs)

    @property
    def handles(self) -> tuple[procs.ProcHandle, ...]:
        """The daemons started, in start order (ovsdb-server, then ovs-vswitchd)."""
        return tuple(self._procs)

    @property
    def namespaces(self) -> tuple[str, ...]:
        """The namespaces created, in creation order (the switch's first)."""
        return tuple(self._namespaces)

    # ---- control -------------------------------------------------------------------

    def vsctl(self, *args: str, timeout: float = 10.0) -> str:
        """``ovs-vsctl`` on the private database (always with --timeout: it blocks without vswitchd)."""
        return self._run(["ovs-vsctl", f"--db={self.db}", f"--timeout={max(1, round(timeout))}", *args],
                         timeout + 2)

    def ofctl(self, *args: str) -> str:
        """``ovs-ofctl`` against this bridge's management socket, e.g. ``ofctl("show")``."""
        cmd, *rest = args
        return self._run(["ovs-ofctl", cmd, self.mgmt, *rest], 10)

    def _run(self, argv: list[str], timeout: float) -> str:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                             env=self._env())
        if res.returncode != 0:
            raise procs.ProcError(f"{' '.join(argv)}: exit {res.returncode}: {res.stderr.strip()}")
        return res.stdout

    def _env(self) -> dict[str, str]:
        import os

        env = dict(os.environ)
        env.update(OVS_RUNDIR=str(self.rundir), OVS_DBDIR=str(self.rundir), OVS_LOGDIR=str(self.workdir))
        return env

    def up(self, timeout: float = 15.0) -> None:
        reason = missing_tools()
        if reason:
            raise procs.ProcError(reason)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rundir = Path(tempfile.mkdtemp(prefix=f"anvil-{self.prefix}"))
        try:
            self._start_daemons(timeout)
            self.vsctl("add-br", self.bridge, "--", "set", "bridge", self.bridge, "datapath_type=netdev")
            for host in self.hosts.values():
                self._add_host(host)
            mgmt = self.rundir / f"{self.bridge}.mgmt"
            procs.wait_until(mgmt.exists, self._procs[-1], timeout, "ovs-vswitchd management socket")
        except BaseException:
            self.down()
            raise

    def _start_daemons(self, timeout: float) -> None:
        r = self.rundir
        self._run(["ovsdb-tool", "create", str(r / "conf.db"), str(SCHEMA)], 10)
        env = {k: v for k, v in self._env().items() if k.startswith("OVS_")}
        server = procs.start(
            ["ovsdb-server", str(r / "conf.db"), f"--remote=punix:{r / 'db.sock'}",
             f"--unixctl={r / 'ovsdb-server.ctl'}", f"--log-file={self.workdir / 'ovsdb-server.log'}",
             "-vconsole:off"],
            self.workdir / "ovsdb-server.out", env=env)
        self._procs.append(server)
        procs.wait_until((r / "db.sock").exists, server, timeout, "ovsdb-server")
        self._run(["ovs-vsctl", f"--db={self.db}", "--no-wait", "init"], 10)
        netns.add(self.switch_ns)
        self._namespaces.append(self.switch_ns)
        vswitchd = procs.start(
            ["ip", "netns", "exec", self.switch_ns, "ovs-vswitchd", self.db,
             f"--unixctl={r / 'ovs-vswitchd.ctl'}", f"--log-file={self.workdir / 'ovs-vswitchd.log'}",
             "-vconsole:off"],
            self.workdir / "ovs-vswitchd.out", env=env)
        self._procs.append(vswitchd)
        procs.wait_until((r / "ovs-vswitchd.ctl").exists, vswitchd, timeout, "ovs-vswitchd")

    def _add_host(self, host: Host) -> None:
        ns, port = self.host_ns(host.name), self.port(host.name)
        netns.add(ns)
        self._namespaces.append(ns)
        netns.add_veth(self.switch_ns, port, ns, "eth0")
        if host.address:
            netns.add_address(ns, "eth0", host.address)
        netns.link_set(ns, "eth0", up=True)
        netns.link_set(self.switch_ns, port, up=True)
        netns.tx_offload_off(ns, "eth0")
        settings: list[str] = []
        if host.trunks:
            settings = [f"trunks={','.join(map(str, host.trunks))}", "vlan_mode=trunk"]
        elif host.vlan is not None:
            settings = [f"tag={host.vlan}"]
        extra = ["--", "set", "port", port, *settings] if settings else []
        self.vsctl("add-port", self.bridge, port, *extra)

    def ping(self, src: str, dst: str, *, tries: int = 3) -> bool:
        """True when host ``src`` gets an answer from host ``dst`` (each try bounded to 1 s)."""
        return netns.ping(self.host_ns(src), self.hosts[dst].ip, tries=tries, wait=1.0)

    def down(self) -> None:
        """Stop vswitchd, then ovsdb-server, by PID; delete the namespaces and the run directory."""
        for handle in reversed(self._procs):
            # A throwaway switch: SIGTERM takes 1.2-2 s per daemon to exit, so SIGKILL follows after 0.2 s.
            procs.stop(handle, timeout=0.2)
        self._procs.clear()
        netns.delete_all(list(reversed(self._namespaces)))
        self._namespaces.clear()
        if self.rundir != Path():
            with contextlib.suppress(OSError):
                shutil.rmtree(self.rundir)
            self.rundir = Path()

    def __enter__(self) -> OvsSwitch:
        self.up()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.down()


def main() -> None:  # pragma: no cover - manual use: python -m appliance.lab.ovs_switch DIR [SECONDS]
    import sys

    lab = OvsSwitch(Path(sys.argv[1]), (Host("a", "10.99.0.1/24", 10), Host("b", "10.99.0.2/24", 10),
                                        Host("c", "10.99.0.3/24", 20)))
    with lab:
        print(lab.address, "pids", lab.pids, "a->b", lab.ping("a", "b"), "a->c", lab.ping("a", "c", tries=1),
              flush=True)
        time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
