"""Network namespaces and veth pairs for the lab, through iproute2's ``ip``.

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN). Every call is a short ``ip`` or
``ethtool`` run with a deadline; nothing here starts a long-lived process
(daemons inside a namespace go through :mod:`appliance.lab.procs`).

Names: interface names are limited to 15 characters (IFNAMSIZ - 1), and so are the
namespace names used here, so one short prefix (:func:`unique_prefix`) can name both
and tests running in parallel (pytest-xdist) never collide.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
from collections.abc import Sequence

IFNAMSIZ = 15


class NetnsError(RuntimeError):
    """An ``ip``/``ethtool`` command failed; the message quotes the command and its stderr."""


def unique_prefix(tag: str = "av") -> str:
    """A short random name prefix, e.g. ``av3f9c1-`` (8 characters)."""
    return f"{tag[:2]}{secrets.token_hex(2)}{secrets.randbelow(16):x}-"


def have_tools() -> str | None:
    """None when ``ip`` exists, else the reason the lab cannot run."""
    return None if shutil.which("ip") else "iproute2 `ip` is not installed"


def _check_name(name: str) -> str:
    if not name or len(name) > IFNAMSIZ or "/" in name or " " in name:
        raise NetnsError(f"bad interface/namespace name {name!r} (1..{IFNAMSIZ} chars, no '/' or space)")
    return name


def run(argv: Sequence[str], *, netns: str | None = None, timeout: float = 10.0, check: bool = True) -> str:
    """Run one short command (inside ``netns`` if given); return its stdout."""
    cmd = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"{' '.join(cmd)}: no result within {timeout:g}s") from exc
    if check and res.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: exit {res.returncode}: {res.stderr.strip()}")
    return res.stdout


def add(name: str, *, no_ipv6: bool = True) -> None:
    """Create namespace ``name`` with ``lo`` up (and IPv6 off, to keep captures quiet)."""
    run(["ip", "netns", "add", _check_name(name)])
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    if no_ipv6:
        for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
            run(["sysctl", "-qw", f"{key}=1"], netns=name, check=False)


def delete(name: str) -> None:
    """Delete namespace ``name`` if it exists. Processes inside are NOT killed: stop them by PID first."""
    run(["ip", "netns", "del", name], check=False)


def exists(name: str) -> bool:
    return any(line.split()[0] == name for line in run(["ip", "netns", "list"]).splitlines() if line.strip())


def add_veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    """A veth pair: ``name_a`` in ``ns_a`` and ``name_b`` in ``ns_b``, both left down."""
    run(["ip", "link", "add", _check_name(name_a), "netns", ns_a, "type", "veth",
         "peer", "name", _check_name(name_b), "netns", ns_b])


def link_set(ns: str, ifname: str, *, up: bool) -> None:
    run(["ip", "-n", ns, "link", "set", ifname, "up" if up else "down"])


def add_address(ns: str, ifname: str, cidr: str) -> None:
    run(["ip", "-n", ns, "addr", "add", cidr, "dev", ifname])


def tx_offload_off(ns: str, ifname: str) -> None:
    """``ethtool -K IF tx off``: without it TCP breaks across OVS's userspace datapath (partial checksums)."""
    if shutil.which("ethtool"):
        run(["ethtool", "-K", ifname, "tx", "off"], netns=ns)


def ping(ns: str, address: str, *, tries: int = 3, wait: float = 1.0) -> bool:
    """True when one of ``tries`` single pings (each bounded by ``wait`` s) from ``ns`` is answered."""
    for _ in range(tries):
        res = subprocess.run(
            ["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c1", f"-W{max(1, round(wait))}", address],
            capture_output=True, timeout=wait + 5, stdin=subprocess.DEVNULL,
        )
        if res.returncode == 0:
            return True
    return False


def delete_all(names: Sequence[str]) -> None:
    """Delete several namespaces, ignoring those already gone."""
    for name in names:
        with contextlib.suppress(NetnsError, subprocess.TimeoutExpired):
            delete(name)
