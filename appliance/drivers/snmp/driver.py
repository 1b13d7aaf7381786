"""SwitchDriver over SNMP: Q-BRIDGE-MIB VLAN membership and IF-MIB admin status.

pysnmp 7, native asyncio (``pysnmp.hlapi.v3arch.asyncio``); nothing blocks the loop.

Address: ``snmp://HOST[:PORT][?context=NAME&auth=sha&priv=aes&ifindex=port|bridge]``
(PORT defaults to 161).

Credentials (from :class:`SwitchRef`):

- **v2c** when ``username`` is empty: the community is ``password``. It is a secret
  (it grants write access), so it travels as a :class:`Secret` and never shows in
  logs or reprs.
- **v3 authPriv** when ``username`` is set: user ``username``, auth key ``password``,
  priv key ``privacy``. ``auth`` is one of md5, sha (default), sha224, sha256, sha384,
  sha512; ``priv`` one of des, 3des, aes (AES-128, default), aes192, aes256.
  ``context`` is the v3 context name (default empty; the lab emulator wants the
  community name there).

Ports are bridge port numbers as decimal strings (``"1"``…). A port's ifIndex (for
ifAdminStatus) is its port number, or with ``ifindex=bridge`` the value of BRIDGE-MIB
dot1dBasePortIfIndex.<port>.

Model: ``native`` is the PVID when the port is also an untagged member of that VLAN,
else None; ``tagged`` are the VLANs in whose egress list the port is, but not in the
untagged list; ``up`` is ifAdminStatus == up(1). ``set_port`` converges every VLAN row
present on the switch (read-modify-write of the PortLists, other ports' bits kept),
leaves the PVID alone when ``native`` is None, shuts the port *before* touching VLANs
(a fence comes first) and opens it *after*, and reads everything back, checking
values and types (snmpsim stores nothing on a wrong-type SET and says noError).

Errors: no reply within ``SwitchRef.timeout`` → BmcUnreachable (a v2c agent does not
answer a wrong community at all, so that looks the same); v3 digest/user/decrypt
errors → BmcAuthFailed; VLANs not on the switch, an unknown port or SET errors
wrongType/wrongValue/noCreation/inconsistentValue → BadSettings; notWritable/noAccess
→ Unsupported; genErr/commitFailed/resourceUnavailable → BmcFailure (retryable).

Read-modify-write of shared bitmaps is serialised per switch inside this driver
object; two appliances writing one switch at once could still lose an update, which
the engine's one-job-per-blade rule and the read-back make visible, not silent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    bulk_walk_cmd,
    get_cmd,
    set_cmd,
)
from pysnmp.hlapi.v3arch.asyncio import auth as snmp_auth
from pysnmp.proto import errind
from pysnmp.proto.rfc1902 import Gauge32, Integer, OctetString
from pysnmp.proto.rfc1905 import EndOfMibView, NoSuchInstance, NoSuchObject

from appliance.drivers.errors import (
    BadSettings,
    BmcAuthFailed,
    BmcFailure,
    BmcUnreachable,
    DriverError,
    Unsupported,
)
from appliance.drivers.protocols import PortConfig, SwitchRef
from appliance.drivers.snmp import portlist

log = logging.getLogger(__name__)

IF_ADMIN_STATUS = "1.3.6.1.2.1.2.2.1.7"
DOT1D_BASE_PORT_IFINDEX = "1.3.6.1.2.1.17.1.4.1.2"
VLAN_EGRESS = "1.3.6.1.2.1.17.7.1.4.3.1.2"
VLAN_UNTAGGED = "1.3.6.1.2.1.17.7.1.4.3.1.4"
DOT1Q_PVID = "1.3.6.1.2.1.17.7.1.4.5.1.1"
ADMIN_UP, ADMIN_DOWN = 1, 2

_AUTH = {
    "md5": snmp_auth.usmHMACMD5AuthProtocol,
    "sha": snmp_auth.usmHMACSHAAuthProtocol,
    "sha224": snmp_auth.usmHMAC128SHA224AuthProtocol,
    "sha256": snmp_auth.usmHMAC192SHA256AuthProtocol,
    "sha384": snmp_auth.usmHMAC256SHA384AuthProtocol,
    "sha512": snmp_auth.usmHMAC384SHA512AuthProtocol,
}
_PRIV = {
    "des": snmp_auth.usmDESPrivProtocol,
    "3des": snmp_auth.usm3DESEDEPrivProtocol,
    "aes": snmp_auth.usmAesCfb128Protocol,
    "aes192": snmp_auth.usmAesCfb192Protocol,
    "aes256": snmp_auth.usmAesCfb256Protocol,
}
_AUTH_ERRORS = (errind.WrongDigest, errind.UnknownUserName, errind.DecryptionError, errind.AuthenticationError,
                errind.UnsupportedSecurityLevel, errind.AuthenticationFailure, errind.UnknownSecurityName,
                errind.UnknownCommunityName)
_BAD_SET = {"wrongType", "wrongLength", "wrongEncoding", "wrongValue", "noCreation", "inconsistentValue",
            "inconsistentName", "badValue"}
_NOT_WRITABLE = {"noAccess", "notWritable", "readOnly"}
_RETRYABLE = {"genErr", "commitFailed", "resourceUnavailable", "tooBig"}
_MAX_VARBINDS = 24  # per SET PDU; stays well under a 1,472-byte datagram with 512-byte PortLists


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    port: int
    context: str
    auth: str
    priv: str
    ifindex: str


@dataclass(slots=True)
class _State:
    pvid: int
    ifindex: int
    admin_up: bool
    egress: dict[int, bytes] = field(default_factory=dict)
    untagged: dict[int, bytes] = field(default_factory=dict)

    def config(self, port: int) -> PortConfig:
        native = self.pvid if portlist.contains(self.untagged.get(self.pvid, b""), port) else None
        tagged = frozenset(v for v, bits in self.egress.items()
                           if portlist.contains(bits, port) and not portlist.contains(self.untagged.get(v, b""), port))
        return PortConfig(native=native, tagged=tagged, up=self.admin_up)


def parse_address(sw: SwitchRef) -> _Target:
    """Split ``snmp://host:port?opts``; BadSettings on anything unknown."""
    url = urlsplit(sw.address)
    if url.scheme != "snmp" or not url.hostname:
        raise BadSettings(sw.name, "snmp", "address", f"expected snmp://host[:port], got {sw.address!r}")
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    unknown = set(query) - {"context", "auth", "priv", "ifindex"}
    if unknown:
        raise BadSettings(sw.name, "snmp", "address", f"unknown option(s) {sorted(unknown)}")
    try:
        port = url.port or 161
    except ValueError as exc:
        raise BadSettings(sw.name, "snmp", "address", str(exc)) from exc
    t = _Target(url.hostname, port, query.get("context", ""), query.get("auth", "sha").lower(),
                query.get("priv", "aes").lower(), query.get("ifindex", "port"))
    if t.auth not in _AUTH or t.priv not in _PRIV or t.ifindex not in ("port", "bridge"):
        raise BadSettings(sw.name, "snmp", "address", f"auth must be one of {sorted(_AUTH)}, priv one of "
                          f"{sorted(_PRIV)}, ifindex port|bridge")
    return t


def _port_number(sw: SwitchRef, port: str) -> int:
    if not port.isdigit() or int(port) < 1:
        raise BadSettings(sw.name, "snmp", "port", f"SNMP ports are bridge port numbers (1, 2, …), got {port!r}")
    return int(port)


def _check_vlans(sw: SwitchRef, want: PortConfig) -> None:
    vids = ({want.native} if want.native is not None else set()) | set(want.tagged)
    bad = sorted(v for v in vids if not 1 <= v <= 4094)
    if bad:
        raise BadSettings(sw.name, "snmp", "set_port", f"VLAN ids must be 1..4094, got {bad}")
    if want.native is not None and want.native in want.tagged:
        raise BadSettings(sw.name, "snmp", "set_port", f"VLAN {want.native} is both native and tagged")


class SnmpSwitchDriver:
    """One object serves many switches; one pysnmp engine per event loop."""

    name = "snmp"

    def __init__(self) -> None:
        self._engine: SnmpEngine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._targets: dict[tuple[str, int, float], UdpTransportTarget] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # The VLAN rows each switch has (address -> (read at, vids)); rows rarely change.
        self._vlans: dict[str, tuple[float, tuple[int, ...]]] = {}
        # set_port calls waiting for the next read-modify-write of a switch, by address.
        self._pending: dict[str, list[tuple[int, PortConfig, asyncio.Future[None]]]] = {}

    # ---- plumbing ----------------------------------------------------------------

    def _eng(self) -> SnmpEngine:
        loop = asyncio.get_running_loop()
        if self._engine is None or self._loop is not loop:
            if self._engine is not None:
                self._engine.close_dispatcher()
            # Locks belong to a loop: drop them only when the loop changes. Resetting them on
            # first use would hand a second caller a fresh lock while the first holds the old one.
            if self._loop is not None and self._loop is not loop:
                self._locks, self._pending = {}, {}
            self._engine, self._loop, self._targets = SnmpEngine(), loop, {}
        return self._engine

    async def _target(self, sw: SwitchRef, t: _Target) -> UdpTransportTarget:
        key = (t.host, t.port, sw.timeout)
        if key not in self._targets:
            try:
                # Two tries share the switch's timeout, so "no reply" is known after about sw.timeout.
                self._targets[key] = await UdpTransportTarget.create(
                    (t.host, t.port), timeout=max(0.1, sw.timeout / 2), retries=1)
            except Exception as exc:  # pysnmp raises PySnmpError for an unresolvable name
                raise BmcUnreachable(sw.name, self.name, "connect", f"cannot resolve {t.host}: {exc}") from exc
        return self._targets[key]

    def _auth(self, sw: SwitchRef, t: _Target) -> CommunityData | UsmUserData:
        if not sw.username:
            if not sw.password.reveal():
                raise BadSettings(sw.name, self.name, "auth", "v2c needs the community in the password")
            return CommunityData(sw.password.reveal(), mpModel=1)
        if not sw.password.reveal() or not sw.privacy.reveal():
            raise BadSettings(sw.name, self.name, "auth", "v3 needs an auth key (password) and a priv key (privacy)")
        return UsmUserData(sw.username, sw.password.reveal(), sw.privacy.reveal(),
                           authProtocol=_AUTH[t.auth], privProtocol=_PRIV[t.priv])

    def _lock(self, sw: SwitchRef) -> asyncio.Lock:
        return self._locks.setdefault(sw.address, asyncio.Lock())

    def _raise_for(self, sw: SwitchRef, op: str, ei: Any, es: Any, eidx: Any, vbs: Sequence[Any]) -> None:
        if ei:
            if isinstance(ei, errind.RequestTimedOut):
                raise BmcUnreachable(sw.name, self.name, op, f"no SNMP reply within {sw.timeout:g}s (switch down, "
                                     "wrong port, or a community the agent does not answer)")
            if isinstance(ei, _AUTH_ERRORS):
                raise BmcAuthFailed(sw.name, self.name, op, f"SNMPv3 credentials refused: {ei}")
            raise BmcFailure(sw.name, self.name, op, f"SNMP error: {ei}", retryable=True)
        if es and int(es) != 0:
            status = es.prettyPrint()
            where = ""
            if eidx and 0 < int(eidx) <= len(vbs):
                where = f" at {vbs[int(eidx) - 1][0].prettyPrint()}"
            reason = f"agent answered {status}{where}"
            if status in _BAD_SET:
                raise BadSettings(sw.name, self.name, op, reason)
            if status in _NOT_WRITABLE:
                raise Unsupported(sw.name, self.name, op, reason)
            if status == "authorizationError":
                raise BmcAuthFailed(sw.name, self.name, op, reason)
            raise BmcFailure(sw.name, self.name, op, reason, retryable=status in _RETRYABLE)

    @asynccontextmanager
    async def _deadline(self, sw: SwitchRef, op: str, requests: int = 1) -> AsyncIterator[None]:
        # pysnmp's own timeout should fire first; this guards against anything that hangs.
        try:
            async with asyncio.timeout(sw.timeout * requests + 1.0):
                yield
        except TimeoutError as exc:
            raise BmcUnreachable(sw.name, self.name, op, f"no SNMP answer within {sw.timeout:g}s") from exc

    async def _get(self, sw: SwitchRef, t: _Target, op: str, oids: Sequence[str]) -> list[Any]:
        eng, tgt, auth = self._eng(), await self._target(sw, t), self._auth(sw, t)
        async with self._deadline(sw, op):
            ei, es, eidx, vbs = await get_cmd(eng, auth, tgt, ContextData(contextName=t.context),
                                              *(ObjectType(ObjectIdentity(o)) for o in oids), lookupMib=False)
        self._raise_for(sw, op, ei, es, eidx, vbs)
        return [vb[1] for vb in vbs]

    async def _set(self, sw: SwitchRef, t: _Target, op: str, pairs: Sequence[tuple[str, Any]]) -> None:
        eng, tgt, auth = self._eng(), await self._target(sw, t), self._auth(sw, t)
        for i in range(0, len(pairs), _MAX_VARBINDS):
            chunk = pairs[i:i + _MAX_VARBINDS]
            async with self._deadline(sw, op):
                ei, es, eidx, vbs = await set_cmd(eng, auth, tgt, ContextData(contextName=t.context),
                                                  *(ObjectType(ObjectIdentity(o), v) for o, v in chunk),
                                                  lookupMib=False)
            self._raise_for(sw, op, ei, es, eidx, vbs)

    async def _walk(self, sw: SwitchRef, t: _Target, op: str, base: str) -> dict[int, Any]:
        """A column as {last sub-identifier: value}."""
        eng, tgt, auth = self._eng(), await self._target(sw, t), self._auth(sw, t)
        prefix = tuple(int(x) for x in base.split("."))
        out: dict[int, Any] = {}
        async with self._deadline(sw, op, requests=20):
            async for ei, es, eidx, vbs in bulk_walk_cmd(eng, auth, tgt, ContextData(contextName=t.context), 0, 50,
                                                         ObjectType(ObjectIdentity(base)), lexicographicMode=False,
                                                         lookupMib=False):
                self._raise_for(sw, op, ei, es, eidx, vbs)
                for name, value in vbs:
                    oid = tuple(name)
                    if oid[:len(prefix)] == prefix and len(oid) == len(prefix) + 1 and not _absent(value):
                        out[oid[-1]] = value
        return out

    # ---- reading -----------------------------------------------------------------

    def _typed(self, sw: SwitchRef, op: str, what: str, value: Any, kind: Any) -> Any:
        if _absent(value):
            raise BadSettings(sw.name, self.name, op, f"{what} does not exist on the switch")
        if value.tagSet != kind.tagSet:
            raise BmcFailure(sw.name, self.name, op, f"{what} came back as {type(value).__name__}, "
                             f"expected {kind.__name__}")
        return value

    async def _read(self, sw: SwitchRef, t: _Target, port: int, op: str) -> _State:
        return (await self._read_many(sw, t, [port], op))[port]

    async def _read_many(self, sw: SwitchRef, t: _Target, ports: Sequence[int], op: str) -> dict[int, _State]:
        """Every port's PVID and admin status, and the VLAN rows (shared by all ports), in few requests."""
        ifindex = {p: p for p in ports}
        if t.ifindex == "bridge":
            raws = await self._get_many(sw, t, op, [f"{DOT1D_BASE_PORT_IFINDEX}.{p}" for p in ports])
            ifindex = {p: int(self._typed(sw, op, f"port {p} (dot1dBasePortIfIndex)", raw, Integer))
                       for p, raw in zip(ports, raws, strict=True)}
        oids = [o for p in ports for o in (f"{DOT1Q_PVID}.{p}", f"{IF_ADMIN_STATUS}.{ifindex[p]}")]
        egress: dict[int, bytes] = {}
        untagged: dict[int, bytes] = {}
        vids = self._known_vlans(sw)
        values: list[Any] = []
        if vids:
            # The VLAN rows are known: one GET for ports and rows together, no walks.
            vlan_oids = [o for v in vids for o in (f"{VLAN_EGRESS}.{v}", f"{VLAN_UNTAGGED}.{v}")]
            got = await self._get_many(sw, t, op, oids + vlan_oids)
            values, rows = got[:len(oids)], got[len(oids):]
            if any(_absent(rows[2 * i]) for i in range(len(vids))):
                self._vlans.pop(sw.address, None)   # a row went away: read the table afresh
            else:
                for i, v in enumerate(vids):
                    egress[v] = bytes(self._typed(sw, op, f"dot1qVlanStaticEgressPorts.{v}", rows[2 * i],
                                                  OctetString))
                    if not _absent(rows[2 * i + 1]):
                        untagged[v] = bytes(self._typed(sw, op, f"dot1qVlanStaticUntaggedPorts.{v}",
                                                        rows[2 * i + 1], OctetString))
        if not egress:
            values = await self._get_many(sw, t, op, oids)
            for vid, value in (await self._walk(sw, t, op, VLAN_EGRESS)).items():
                egress[vid] = bytes(self._typed(sw, op, f"dot1qVlanStaticEgressPorts.{vid}", value, OctetString))
            for vid, value in (await self._walk(sw, t, op, VLAN_UNTAGGED)).items():
                untagged[vid] = bytes(self._typed(sw, op, f"dot1qVlanStaticUntaggedPorts.{vid}", value,
                                                  OctetString))
            self._vlans[sw.address] = (time.monotonic(), tuple(sorted(egress)))
        out = {}
        for i, p in enumerate(ports):
            pvid = int(self._typed(sw, op, f"port {p} (dot1qPvid.{p})", values[2 * i], Gauge32))
            admin = int(self._typed(sw, op, f"port {p} (ifAdminStatus.{ifindex[p]})", values[2 * i + 1], Integer))
            # The VLAN rows are shared: every port's state refers to the same dicts.
            out[p] = _State(pvid=pvid, ifindex=ifindex[p], admin_up=admin == ADMIN_UP, egress=egress,
                            untagged=untagged)
        return out

    def _known_vlans(self, sw: SwitchRef) -> tuple[int, ...]:
        hit = self._vlans.get(sw.address)
        if hit is None or time.monotonic() - hit[0] > VLAN_CACHE_SECONDS:
            return ()
        return hit[1]

    async def _get_many(self, sw: SwitchRef, t: _Target, op: str, oids: Sequence[str]) -> list[Any]:
        out: list[Any] = []
        for i in range(0, len(oids), _MAX_VARBINDS):
            out += await self._get(sw, t, op, oids[i:i + _MAX_VARBINDS])
        return out

    # ---- SwitchDriver --------------------------------------------------------------

    async def get_port(self, sw: SwitchRef, port: str) -> PortConfig:
        t, p = parse_address(sw), _port_number(sw, port)
        return (await self._read(sw, t, p, "get_port")).config(p)

    async def list_ports(self, sw: SwitchRef) -> tuple[str, ...]:
        t = parse_address(sw)
        return tuple(str(p) for p in sorted(await self._walk(sw, t, "list_ports", DOT1Q_PVID)))

    async def set_port(self, sw: SwitchRef, port: str, want: PortConfig) -> None:
        """Converge one port to ``want``; idempotent. Raises BadSettings naming VLANs the switch lacks.

        Calls for one switch that arrive while another is being written are applied together in
        the next read-modify-write of the shared VLAN rows (a group commit): one read, one write
        and one read-back for the lot, instead of one cycle per port.
        """
        t, p = parse_address(sw), _port_number(sw, port)
        _check_vlans(sw, want)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(sw.address, []).append((p, want, fut))
        async with self._lock(sw):
            if not fut.done():
                queue = self._pending.pop(sw.address, [])
                batch: dict[int, tuple[PortConfig, asyncio.Future[None]]] = {}
                for item in queue:
                    if item[0] in batch:  # the same port twice: the later call goes in the next round
                        self._pending.setdefault(sw.address, []).append(item)
                    else:
                        batch[item[0]] = (item[1], item[2])
                try:
                    await self._apply(sw, t, batch)
                except Exception as exc:
                    for _want, f in batch.values():
                        if not f.done():
                            f.set_exception(exc)
                except BaseException:
                    # We were cancelled: hand the others' requests to whoever holds the lock next.
                    for port_, (want_, f) in batch.items():
                        if f is not fut and not f.done():
                            self._pending.setdefault(sw.address, []).append((port_, want_, f))
                    raise
        await fut

    def _confirm(self, sw: SwitchRef, p: int, want: PortConfig, got: _State,
                 egress: dict[int, bytes], untagged: dict[int, bytes]) -> None:
        problems = []
        if got.config(p) != want:
            problems.append(f"port {p} reads back as {got.config(p)}, wanted {want}")
        for vid in sorted(egress):
            # Other ports' bits must be as they were: a lost update shows here.
            if got.egress.get(vid) != egress[vid] or got.untagged.get(vid, b"") != untagged[vid]:
                problems.append(f"VLAN {vid} PortLists differ from what was written")
        if problems:
            raise BmcFailure(sw.name, self.name, "set_port", "; ".join(problems[:3]), retryable=True)

    async def _apply(self, sw: SwitchRef, t: _Target,
                     batch: dict[int, tuple[PortConfig, asyncio.Future[None]]]) -> None:
        op = "set_port"
        ports = sorted(batch)
        before = await self._read_many(sw, t, ports, op)
        shared = before[ports[0]]
        asked = {v for p in ports for v in ({batch[p][0].native} | set(batch[p][0].tagged)) if v is not None}
        if asked - set(shared.egress) and self._vlans.pop(sw.address, None) is not None:
            before = await self._read_many(sw, t, ports, op)   # the cached row list may be stale
            shared = before[ports[0]]
        for port in list(ports):
            want, fut = batch[port]
            wanted = ({want.native} if want.native is not None else set()) | set(want.tagged)
            missing = sorted(wanted - set(shared.egress))
            if missing:
                fut.set_exception(BadSettings(sw.name, self.name, op, "VLAN(s) " + ", ".join(map(str, missing))
                                              + " not configured on the switch"))
                ports.remove(port)
        if not ports:
            return
        # The fence goes first: ports to be shut are shut before any VLAN changes.
        downs = [(f"{IF_ADMIN_STATUS}.{before[p].ifindex}", Integer(ADMIN_DOWN)) for p in ports
                 if not batch[p][0].up and before[p].admin_up]
        if downs:
            await self._set(sw, t, op, downs)
        egress, untagged = dict(shared.egress), dict(shared.untagged)
        for p in ports:
            want = batch[p][0]
            wanted = ({want.native} if want.native is not None else set()) | set(want.tagged)
            for vid in egress:
                egress[vid] = portlist.with_port(egress[vid], p, vid in wanted)
                untagged[vid] = portlist.with_port(untagged.get(vid, b""), p, vid == want.native)
        pairs: list[tuple[str, Any]] = []
        for vid in sorted(egress):
            if egress[vid] != shared.egress[vid]:
                pairs.append((f"{VLAN_EGRESS}.{vid}", OctetString(egress[vid])))
            if untagged[vid] != shared.untagged.get(vid, b""):
                pairs.append((f"{VLAN_UNTAGGED}.{vid}", OctetString(untagged[vid])))
        for p in ports:  # after membership: agents check the PVID against it
            native = batch[p][0].native
            if native is not None and before[p].pvid != native:
                pairs.append((f"{DOT1Q_PVID}.{p}", Gauge32(native)))
        if pairs:
            log.debug("snmp set_port %s ports %s: %d varbinds", sw.name, ports, len(pairs),
                      extra={"switch": sw.name})
            await self._set(sw, t, op, pairs)
        ups = [(f"{IF_ADMIN_STATUS}.{before[p].ifindex}", Integer(ADMIN_UP)) for p in ports
               if batch[p][0].up and not before[p].admin_up]
        if ups:
            await self._set(sw, t, op, ups)
        got = await self._read_many(sw, t, ports, op)
        for p in ports:
            want, fut = batch[p]
            try:
                self._confirm(sw, p, want, got[p], egress, untagged)
            except DriverError as exc:
                fut.set_exception(exc)
            else:
                fut.set_result(None)

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.close_dispatcher()
            self._engine, self._loop, self._targets = None, None, {}


VLAN_CACHE_SECONDS = 30.0


def _absent(value: Any) -> bool:
    return isinstance(value, NoSuchInstance | NoSuchObject | EndOfMibView)


def create(settings: object | None = None) -> SnmpSwitchDriver:
    """Entry-point factory (``anvil.drivers.switch``: ``snmp``)."""
    return SnmpSwitchDriver()


__all__ = ["DriverError", "SnmpSwitchDriver", "create", "parse_address"]
