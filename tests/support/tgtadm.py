"""tgtd's own view of its targets, read raw with ``tgtadm`` (not through Anvil's tgt driver)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class TargetView:
    """One target as ``tgtadm --op show --mode target`` prints it."""

    name: str
    acl: tuple[str, ...]
    sessions: tuple[str, ...]     # initiator names of the I_T nexuses (may include stale ones)
    backing: tuple[str, ...]


def parse_targets(text: str) -> dict[str, TargetView]:
    out: dict[str, TargetView] = {}
    name, section = "", ""
    acl: list[str] = []
    sessions: list[str] = []
    backing: list[str] = []

    def flush() -> None:
        if name:
            out[name] = TargetView(name, tuple(acl), tuple(sessions), tuple(backing))

    for line in text.splitlines():
        head = re.match(r"^Target \d+: (\S+)", line)
        if head:
            flush()
            name, section, acl, sessions, backing = head.group(1), "", [], [], []
            continue
        if re.match(r"^ {4}\S.*:$", line):
            section = line.strip().rstrip(":")
            continue
        item = line.strip()
        if section == "ACL information" and item:
            acl.append(item)
        elif section == "I_T nexus information" and item.startswith("Initiator:"):
            sessions.append(item.split()[1])
        elif section == "LUN information" and item.startswith("Backing store path:") and item != \
                "Backing store path: None":
            backing.append(item.split(":", 1)[1].strip())
    flush()
    return out


def show_targets(control_port: int, netns: str | None = None) -> dict[str, TargetView]:
    """``tgtadm --op show --mode target`` of the tgtd on ``control_port``, parsed."""
    argv = ["tgtadm", "-C", str(control_port), "--lld", "iscsi", "--op", "show", "--mode", "target"]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True, stdin=subprocess.DEVNULL)
    return parse_targets(res.stdout)
