"""Parse ``tgtadm --lld iscsi --op show --mode target`` (tgt 1.0.x) into frozen values.

The output is indented by four spaces per level::

    Target 1: iqn.2024-01.lab.boot:disk1
        System information:
            Driver: iscsi
            State: ready
        I_T nexus information:
            I_T nexus: 4
                Initiator: iqn.2024-01.lab.boot:node1 alias: none
                Connection: 0
                    IP Address: 127.0.0.1
        LUN information:
            LUN: 1
                Type: disk
                SCSI SN: beaf11
                Backing store path: /tmp/disk.img
        Account information:
        ACL information:
            iqn.2024-01.lab.boot:node1

The ACL section lists address rules (``ALL``, ``10.0.0.0/24``) and initiator-name rules
together; :attr:`Target.initiator_acl` keeps the names only. Keys this module does not
know are skipped, so a newer tgt that prints more fields still parses; a line that
breaks the structure raises :class:`ShowParseError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TARGET = re.compile(r"^Target (\d+): (\S+)$")
_NEXUS = re.compile(r"^I_T nexus: (\d+)$")
_INITIATOR = re.compile(r"^Initiator: (\S+)(?: alias: (.*))?$")
_CONNECTION = re.compile(r"^Connection: (\d+)$")
_LUN = re.compile(r"^LUN: (\d+)$")
# Initiator-name rules are iSCSI names; address rules are "ALL" or IP[/prefix].
_ISCSI_NAME = re.compile(r"^(iqn|eui|naa)\.", re.IGNORECASE)


class ShowParseError(ValueError):
    """The text is not the output of ``tgtadm --op show --mode target``."""


@dataclass(frozen=True, slots=True)
class Connection:
    cid: int
    address: str


@dataclass(frozen=True, slots=True)
class Nexus:
    """One I_T nexus (iSCSI session); ``sid`` is what ``--op delete --mode conn --sid`` takes."""

    sid: int
    initiator: str
    alias: str = ""
    connections: tuple[Connection, ...] = ()


@dataclass(frozen=True, slots=True)
class Lun:
    number: int
    type: str = ""
    path: str | None = None       # None for the controller (tgt prints "None")
    scsi_id: str = ""
    scsi_sn: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    tid: int
    name: str
    state: str = ""
    nexuses: tuple[Nexus, ...] = ()
    luns: tuple[Lun, ...] = ()
    acl: tuple[str, ...] = ()

    @property
    def initiator_acl(self) -> frozenset[str]:
        """Initiator-name rules only (address rules such as ``ALL`` left out)."""
        return frozenset(a for a in self.acl if _ISCSI_NAME.match(a))

    @property
    def logged_in(self) -> frozenset[str]:
        """Initiators with a session that has at least one live connection."""
        return frozenset(n.initiator for n in self.nexuses if n.connections)

    def lun(self, number: int) -> Lun | None:
        return next((lu for lu in self.luns if lu.number == number), None)


@dataclass(slots=True)
class _NexusBuilder:
    sid: int
    initiator: str = ""
    alias: str = ""
    connections: list[Connection] = field(default_factory=list)

    def build(self, lineno: int) -> Nexus:
        if not self.initiator:
            raise ShowParseError(f"line {lineno}: I_T nexus {self.sid} names no initiator")
        return Nexus(self.sid, self.initiator, self.alias, tuple(self.connections))


@dataclass(slots=True)
class _TargetBuilder:
    tid: int
    name: str
    state: str = ""
    section: str = ""
    nexuses: list[_NexusBuilder] = field(default_factory=list)
    luns: list[dict[str, str]] = field(default_factory=list)
    acl: list[str] = field(default_factory=list)

    def build(self, lineno: int) -> Target:
        luns = tuple(Lun(int(lu["LUN"]), lu.get("Type", ""),
                         None if lu.get("Backing store path", "None") == "None" else lu["Backing store path"],
                         lu.get("SCSI ID", ""), lu.get("SCSI SN", "")) for lu in self.luns)
        return Target(self.tid, self.name, self.state, tuple(n.build(lineno) for n in self.nexuses), luns,
                      tuple(self.acl))


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition(":")
    return key.strip(), value.strip() if sep else ""


def parse_targets(text: str) -> tuple[Target, ...]:
    """All targets in ``text``, in the order shown. Empty text (no targets) gives ``()``."""
    targets: list[Target] = []
    current: _TargetBuilder | None = None
    lineno = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        stripped = raw.lstrip(" ")
        depth, rest = divmod(len(raw) - len(stripped), 4)
        line = stripped.rstrip()
        if rest:
            raise ShowParseError(f"line {lineno}: indentation is not a multiple of 4: {raw!r}")
        if depth == 0:
            m = _TARGET.match(line)
            if not m:
                raise ShowParseError(f"line {lineno}: expected 'Target N: NAME', got {line!r}")
            if current is not None:
                targets.append(current.build(lineno))
            current = _TargetBuilder(int(m[1]), m[2])
            continue
        if current is None:
            raise ShowParseError(f"line {lineno}: {line!r} before any 'Target N:' line")
        if depth == 1:
            if not line.endswith(" information:"):
                raise ShowParseError(f"line {lineno}: expected a section header, got {line!r}")
            current.section = line.removesuffix(" information:")
            continue
        _section_line(current, depth, line, lineno)
    if current is not None:
        targets.append(current.build(lineno))
    return tuple(targets)


def _section_line(t: _TargetBuilder, depth: int, line: str, lineno: int) -> None:
    if t.section == "System" and depth == 2:
        key, value = _key_value(line)
        if key == "State":
            t.state = value
    elif t.section == "I_T nexus":
        if depth == 2:
            m = _NEXUS.match(line)
            if not m:
                raise ShowParseError(f"line {lineno}: expected 'I_T nexus: N', got {line!r}")
            t.nexuses.append(_NexusBuilder(int(m[1])))
            return
        if not t.nexuses:
            raise ShowParseError(f"line {lineno}: {line!r} outside an I_T nexus")
        nexus = t.nexuses[-1]
        if depth == 3 and (m := _INITIATOR.match(line)):
            nexus.initiator, nexus.alias = m[1], (m[2] or "").strip()
        elif depth == 3 and (m := _CONNECTION.match(line)):
            nexus.connections.append(Connection(int(m[1]), ""))
        elif depth == 4 and nexus.connections:
            key, value = _key_value(line)
            if key == "IP Address":
                nexus.connections[-1] = Connection(nexus.connections[-1].cid, value)
    elif t.section == "LUN":
        if depth == 2:
            m = _LUN.match(line)
            if not m:
                raise ShowParseError(f"line {lineno}: expected 'LUN: N', got {line!r}")
            t.luns.append({"LUN": m[1]})
        elif t.luns and depth == 3:
            key, value = _key_value(line)
            t.luns[-1].setdefault(key, value)
        else:
            raise ShowParseError(f"line {lineno}: {line!r} outside a LUN")
    elif t.section == "ACL" and depth == 2:
        t.acl.append(line)
    # Account information (CHAP users) and unknown sections carry nothing we use.
