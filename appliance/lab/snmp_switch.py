"""An emulated N-port 802.1Q switch: snmpsim's command responder with a generated data set.

The data set (``<community>.snmprec``, lines sorted by OID) holds sysDescr, IF-MIB
ifAdminStatus per port, BRIDGE-MIB dot1dBasePortIfIndex (port → ifIndex) and
Q-BRIDGE-MIB rows for the VLANs given: dot1qVlanStaticName, EgressPorts,
UntaggedPorts, RowStatus, and dot1qPvid per port. Everything a driver writes is
marked ``writecache`` (settable, kept in memory by the emulator).

snmpsim's limits (see ../shared/lab/bmc-switch.md §3): it has no RowStatus
createAndGo, so every VLAN row exists from the start; it silently accepts a SET of
the wrong type or on a read-only or absent OID (storing nothing), so tests must read
back; a wrong community gets no answer at all. Its writecache module reads a record's
``value=`` as text even under the ``4x`` (hex) tag, so PortLists use ``hexvalue=``.

As root snmpsim insists on dropping privileges, so it runs as ``nobody``; its data,
cache and writecache files live in a directory ``nobody`` can write.

    with SnmpSwitch(tmp_path, ports=24, vlans=(1, 10, 20, 4094)) as sw:
        sw.address  # "snmp://127.0.0.1:PORT"
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from appliance.lab import procs

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
IF_ADMIN_STATUS = "1.3.6.1.2.1.2.2.1.7"
DOT1D_BASE_PORT_IFINDEX = "1.3.6.1.2.1.17.1.4.1.2"
VLAN_STATIC = "1.3.6.1.2.1.17.7.1.4.3.1"  # .1 name .2 egress .3 forbidden .4 untagged .5 rowstatus
DOT1Q_PVID = "1.3.6.1.2.1.17.7.1.4.5.1.1"

DEFAULT_VLANS = (1, 10, 20, 30, 100, 101, 200, 4094)
MODULES = Path(__file__).resolve().parent / "snmpsim_modules"   # our writecache, which logs each SET
SET_LOG = "sets.jsonl"


@dataclass(frozen=True, slots=True)
class SetRecord:
    at: float    # epoch seconds
    oid: str
    value: str   # OCTET STRINGs as hex, numbers in decimal


@dataclass(frozen=True, slots=True)
class PortChange:
    at: float
    up: bool | None = None     # an ifAdminStatus SET
    pvid: int | None = None    # a dot1qPvid SET


def read_set_log(path: Path) -> list[SetRecord]:
    """The SETs the switch stored, oldest first."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    recs = [json.loads(line) for line in lines if line.strip()]
    return sorted((SetRecord(float(r["t"]), str(r["oid"]), str(r["value"])) for r in recs), key=lambda r: r.at)


def port_history(records: Iterable[SetRecord], *, ports: int, ifindex_offset: int = 0) -> dict[int, list[PortChange]]:
    """Per port (1-based), its admin state and PVID changes among ``records``."""
    out: dict[int, list[PortChange]] = {p: [] for p in range(1, ports + 1)}
    for r in records:
        prefix, _, index = r.oid.rpartition(".")
        if prefix == IF_ADMIN_STATUS and int(index) - ifindex_offset in out:
            out[int(index) - ifindex_offset].append(PortChange(r.at, up=r.value == "1"))
        elif prefix == DOT1Q_PVID and int(index) in out:
            out[int(index)].append(PortChange(r.at, pvid=int(r.value)))
    return out


def _oid_key(line: str) -> tuple[int, ...]:
    return tuple(int(x) for x in line.split("|", 1)[0].split("."))


def snmprec_lines(
    *,
    ports: int,
    vlans: Iterable[int],
    default_vlan: int = 1,
    ifindex_offset: int = 0,
    fail_vlans: Iterable[int] = (),
    descr: str = "Anvil lab 802.1Q switch (snmpsim)",
) -> list[str]:
    """The data set as snmprec lines, sorted by OID.

    Every port is untagged in ``default_vlan`` (its PVID) and admin up; port p has
    ifIndex ``p + ifindex_offset``. SETs of the PortLists of ``fail_vlans`` answer
    commitFailed (writecache error injection), for driver failure tests.
    """
    vids = sorted(set(vlans) | {default_vlan})
    if not 1 <= ports <= 4096 or any(not 1 <= v <= 4094 for v in vids):
        raise ValueError("ports must be 1..4096 and VLANs 1..4094")
    size = (ports + 7) // 8
    everyone = bytearray(size)
    for p in range(1, ports + 1):
        everyone[(p - 1) // 8] |= 0x80 >> ((p - 1) % 8)
    none = bytes(size).hex()
    fail = set(fail_vlans)
    lines = [f"{SYS_DESCR}|4|{descr}", f"{SYS_OBJECT_ID}|6|1.3.6.1.4.1.8072.3.2.10"]
    for p in range(1, ports + 1):
        idx = p + ifindex_offset
        lines.append(f"{IF_ADMIN_STATUS}.{idx}|2:writecache|value=1")
        lines.append(f"{DOT1D_BASE_PORT_IFINDEX}.{p}|2|{idx}")
        lines.append(f"{DOT1Q_PVID}.{p}|66:writecache|value={default_vlan}")
    for v in vids:
        # writecache takes ``value=`` as text even with the 4x tag ("ffffff" reads back as six
        # characters); its ``hexvalue=`` setting gives real bytes.
        member = bytes(everyone).hex() if v == default_vlan else none
        inject = ",status=commitfailed,op=set" if v in fail else ""
        lines.append(f"{VLAN_STATIC}.1.{v}|4:writecache|value=vlan{v}")
        lines.append(f"{VLAN_STATIC}.2.{v}|4:writecache|hexvalue={member}{inject}")
        lines.append(f"{VLAN_STATIC}.3.{v}|4x|{none}")
        lines.append(f"{VLAN_STATIC}.4.{v}|4:writecache|hexvalue={member}{inject}")
        lines.append(f"{VLAN_STATIC}.5.{v}|2|1")
    return sorted(lines, key=_oid_key)


@dataclass(frozen=True, slots=True)
class V3User:
    """An SNMPv3 authPriv user (SHA / AES-128)."""

    name: str = "anvil"
    auth_key: str = "anvil-auth-key"
    priv_key: str = "anvil-priv-key"


class SnmpSwitch:
    """One snmpsim process on 127.0.0.1:<free UDP port>, serving one emulated switch.

    ``community`` (v2c) selects the data file; the v3 user, when given, reads the same
    data through the v3 context name equal to the community. :meth:`stop` stops the
    process by PID; the directory is left for the caller (tmp_path) to remove.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        ports: int = 24,
        vlans: Iterable[int] = DEFAULT_VLANS,
        community: str = "public",
        v3: V3User | None = None,
        default_vlan: int = 1,
        ifindex_offset: int = 0,
        fail_vlans: Iterable[int] = (),
    ) -> None:
        self.workdir = workdir
        self.ports = ports
        self.vlans = tuple(sorted(set(vlans) | {default_vlan}))
        self.community = community
        self.v3 = v3
        self.default_vlan = default_vlan
        self.ifindex_offset = ifindex_offset
        self.fail_vlans = tuple(fail_vlans)
        self.port = 0
        self._proc: procs.ProcHandle | None = None
        self._rundir = workdir
        self._set_log = workdir / SET_LOG

    @property
    def address(self) -> str:
        return f"snmp://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def rundir(self) -> Path:
        """Where the data and caches live (a private temporary directory when running as root)."""
        return self._rundir

    def _write_data(self) -> Path:
        data = self._rundir / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = snmprec_lines(ports=self.ports, vlans=self.vlans, default_vlan=self.default_vlan,
                              ifindex_offset=self.ifindex_offset, fail_vlans=self.fail_vlans)
        (data / f"{self.community}.snmprec").write_text("\n".join(lines) + "\n")
        return data

    def start(self, timeout: float = 15.0) -> None:
        exe = shutil.which("snmpsim-command-responder", path=str(Path(sys.executable).parent)) or shutil.which(
            "snmpsim-command-responder")
        if exe is None:
            raise procs.ProcError("snmpsim-command-responder is not installed (pip install snmpsim pysmi)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # snmpsim refuses to run as root and drops to nobody, who cannot enter pytest's
            # 0700 tmp_path: its files go to a private directory nobody owns, removed by stop().
            self._rundir = Path(tempfile.mkdtemp(prefix="anvil-snmpsim-"))
        else:
            self._rundir = self.workdir
        data = self._write_data()
        cache = self._rundir / "cache"
        cache.mkdir(exist_ok=True)
        wcache = self._rundir / "wcache.db"
        self._set_log = self._rundir / SET_LOG
        self._set_log.touch()
        argv = [exe, f"--data-dir={data}", f"--cache-dir={cache}", f"--variation-modules-dir={MODULES}",
                f"--variation-module-options=writecache:file:{wcache},log:{self._set_log}", "--log-level=error"]
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            for path in (self._rundir, data, cache, self._set_log, *data.iterdir()):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
                path.chmod(0o755 if path.is_dir() else 0o644)
            argv += ["--process-user=nobody", "--process-group=nogroup"]
        if self.v3 is not None:
            argv += [f"--v3-user={self.v3.name}", f"--v3-auth-key={self.v3.auth_key}",
                     "--v3-auth-proto=SHA", f"--v3-priv-key={self.v3.priv_key}", "--v3-priv-proto=AES"]
        last: Exception | None = None
        for _ in range(3):  # the free port can be taken between probe and bind; try another
            self.port = procs.free_udp_port()
            handle = procs.start([*argv, f"--agent-udpv4-endpoint=127.0.0.1:{self.port}"],
                                 self.workdir / "snmpsim.log")
            self._proc = handle
            try:
                procs.wait_until(self._answers, handle, timeout, "snmpsim")
                return
            except procs.ProcError as exc:
                last = exc
                procs.stop(handle)
                self._proc = None
        self.stop()
        raise procs.ProcError(f"snmpsim did not start: {last}")

    def _answers(self) -> bool:
        return _udp_probe(self.port, self.community)

    @property
    def set_log(self) -> Path:
        """The switch's own log of the SETs it stored (kept in ``workdir`` once stopped)."""
        return self._set_log

    def port_history(self) -> dict[int, list[PortChange]]:
        """Per port, each ifAdminStatus and PVID SET it stored, oldest first (see :func:`read_set_log`)."""
        return port_history(read_set_log(self._set_log), ports=self.ports, ifindex_offset=self.ifindex_offset)

    def stop(self) -> None:
        if self._proc is not None:
            procs.stop(self._proc, timeout=3.0)
            self._proc = None
        if self._rundir != self.workdir:
            kept = self.workdir / SET_LOG
            with contextlib.suppress(OSError):
                shutil.copyfile(self._set_log, kept)
                self._set_log = kept
            shutil.rmtree(self._rundir, ignore_errors=True)
            self._rundir = self.workdir

    def __enter__(self) -> SnmpSwitch:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _ber_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _ber_len(len(body)) + body


def _oid(dotted: str) -> bytes:
    arcs = [int(x) for x in dotted.split(".")]
    out = bytearray([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def _message(community: str, pdu_tag: int, varbinds: list[tuple[str, bytes]]) -> bytes:
    """A v2c message; ``varbinds`` are (OID, encoded value TLV)."""
    vbs = b"".join(_tlv(0x30, _oid(o) + v) for o, v in varbinds)
    pdu = _tlv(pdu_tag, _tlv(0x02, b"\x01") + _tlv(0x02, b"\x00") + _tlv(0x02, b"\x00") + _tlv(0x30, vbs))
    return _tlv(0x30, _tlv(0x02, b"\x01") + _tlv(0x04, community.encode()) + pdu)


def _exchange(port: int, msg: bytes, timeout: float = 0.3) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(msg, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def _udp_probe(port: int, community: str) -> bool:
    """Readiness: a v2c GET of sysDescr gets any reply (hand-built packet, no pysnmp in the parent)."""
    return _exchange(port, _message(community, 0xA0, [(SYS_DESCR, b"\x05\x00")])) is not None


def main() -> None:  # pragma: no cover - manual use: python -m appliance.lab.snmp_switch DIR
    import time

    sw = SnmpSwitch(Path(sys.argv[1]), v3=V3User())
    with sw:
        print(sw.address, "pid", sw.pid, flush=True)
        time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 3600)


if __name__ == "__main__":  # pragma: no cover
    main()
