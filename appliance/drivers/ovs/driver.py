"""SwitchDriver for Open vSwitch: VLANs in OVSDB through ovsdbapp, port up/down through OpenFlow.

Address: ``ovs:DB?bridge=BR[&mgmt=TARGET]`` where DB is an OVSDB remote
(``unix:/path/db.sock``, ``tcp:host:6640``) and TARGET the bridge's OpenFlow
management target for ``ovs-ofctl`` (default for a unix DB: ``unix:<dir of
db.sock>/<BR>.mgmt``, which is where ovs-vswitchd puts it when its rundir holds
the DB socket; required otherwise). Ports are OVS port names. No credentials: access
is whoever may open the socket.

VLANs (Port table):

=========================  ===========================================================
PortConfig                 Port row
=========================  ===========================================================
native N                   tag=N, trunks=[], vlan_mode=access
native N, tagged T         tag=N, trunks=T, vlan_mode=native-untagged
tagged T (no native)       tag=[], trunks=T, vlan_mode=trunk
nothing                    refused (BadSettings): OVS reads empty trunks as "all VLANs";
                           park the port on a VLAN instead
=========================  ===========================================================

Up/down is ``ovs-ofctl mod-port TARGET PORT up|down`` (an OpenFlow port-mod: the
port's link goes down, the peer sees no carrier) and is read back from
``ovs-ofctl dump-ports-desc`` (``config: PORT_DOWN``). ``Interface.admin_state`` in
OVSDB is a status column vswitchd overwrites: writing it does nothing. Port-down is
kernel link state, not an OVSDB record, so it survives a vswitchd restart but not a
re-created port.

A VLAN change commits with ``next_cfg`` bumped and waits until vswitchd reports it as
``cur_cfg`` (applied, as ``ovs-vsctl`` without ``--no-wait`` does), then reads back.
ovsdbapp blocks and runs its own thread: every call goes through
``asyncio.to_thread`` under ``asyncio.timeout(SwitchRef.timeout)``, with one
connection per database reused. ovsdbapp keeps a backend's connection in a *class*
attribute, so each connection gets its own subclass.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.open_vswitch import impl_idl

from appliance.drivers.errors import BadSettings, BmcFailure, BmcUnreachable, DriverError
from appliance.drivers.protocols import PortConfig, SwitchRef

log = logging.getLogger(__name__)
T = TypeVar("T")
_serial = itertools.count(1)
_PORT_LINE = re.compile(r"^\s*(\S+)\((.+)\): addr:")


@dataclass(frozen=True, slots=True)
class OvsTarget:
    db: str
    bridge: str
    mgmt: str


def parse_address(sw: SwitchRef) -> OvsTarget:
    url = urlsplit(sw.address)
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    if url.scheme != "ovs" or not url.path or "bridge" not in query:
        raise BadSettings(sw.name, "ovs", "address", f"expected ovs:unix:/path/db.sock?bridge=BR, got {sw.address!r}")
    unknown = set(query) - {"bridge", "mgmt"}
    if unknown:
        raise BadSettings(sw.name, "ovs", "address", f"unknown option(s) {sorted(unknown)}")
    db, bridge = url.path, query["bridge"]
    mgmt = query.get("mgmt", "")
    if not mgmt:
        if not db.startswith("unix:"):
            raise BadSettings(sw.name, "ovs", "address", "mgmt=TARGET is needed when the DB is not a unix socket")
        mgmt = f"unix:{os.path.join(os.path.dirname(db[5:]), bridge + '.mgmt')}"
    elif mgmt.startswith("/"):
        mgmt = f"unix:{mgmt}"
    return OvsTarget(db, bridge, mgmt)


def to_row(sw: SwitchRef, want: PortConfig) -> tuple[list[int], list[int], str]:
    """(tag, trunks, vlan_mode) for ``want``; BadSettings for what OVS cannot express."""
    vids = ({want.native} if want.native is not None else set()) | set(want.tagged)
    bad = sorted(v for v in vids if not 1 <= v <= 4094)
    if bad:
        raise BadSettings(sw.name, "ovs", "set_port", f"VLAN ids must be 1..4094, got {bad}")
    if want.native is not None and want.native in want.tagged:
        raise BadSettings(sw.name, "ovs", "set_port", f"VLAN {want.native} is both native and tagged")
    if want.native is not None and not want.tagged:
        return [want.native], [], "access"
    if want.native is not None:
        return [want.native], sorted(want.tagged), "native-untagged"
    if want.tagged:
        return [], sorted(want.tagged), "trunk"
    raise BadSettings(sw.name, "ovs", "set_port", "a port with no VLAN would trunk every VLAN on OVS; "
                      "park it on a VLAN (e.g. 4094) instead")


def _scalar(value: Any) -> Any:
    if isinstance(value, list):
        return value[0] if value else None
    return value


def from_row(tag: Any, trunks: Any, mode: Any) -> tuple[int | None, frozenset[int]]:
    """(native, tagged) from a Port row's tag, trunks and vlan_mode columns."""
    tag, mode = _scalar(tag), _scalar(mode) or ""
    trunk_set = frozenset(int(v) for v in (trunks or []))
    if mode in ("", "access") and tag is not None:
        return int(tag), frozenset()
    all_vlans = frozenset(range(1, 4095))
    if mode in ("", "trunk"):
        return None, trunk_set or all_vlans
    if mode == "native-untagged":
        return int(tag), (trunk_set or all_vlans) - {int(tag)}
    if mode == "native-tagged":  # native frames leave tagged: nothing is untagged
        return None, (trunk_set or all_vlans) | {int(tag)}
    return None, frozenset()  # dot1q-tunnel and future modes: no 802.1Q membership we can describe


def parse_port_desc(text: str) -> dict[str, bool]:
    """{port name: admin up} from ``ovs-ofctl dump-ports-desc`` output."""
    out: dict[str, bool] = {}
    current = None
    for line in text.splitlines():
        m = _PORT_LINE.match(line)
        if m:
            current = m.group(2)
            continue
        if current and line.strip().startswith("config:"):
            out[current] = "PORT_DOWN" not in line
            current = None
    return out


class OvsSwitchDriver:
    name = "ovs"

    def __init__(self) -> None:
        self._apis: dict[str, Any] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._ofctl = shutil.which("ovs-ofctl") or "ovs-ofctl"

    # ---- plumbing ------------------------------------------------------------------

    async def _thread(self, sw: SwitchRef, op: str, fn: Callable[[], T]) -> T:
        try:
            async with asyncio.timeout(sw.timeout):
                return await asyncio.to_thread(fn)
        except TimeoutError as exc:
            raise BmcUnreachable(sw.name, self.name, op, f"OVSDB did not answer within {sw.timeout:g}s") from exc
        except DriverError:
            raise
        except Exception as exc:  # ovsdbapp raises bare RuntimeError/TimeoutException/Exception
            raise BmcFailure(sw.name, self.name, op, f"OVSDB: {exc}", retryable=True) from exc

    async def _api(self, sw: SwitchRef, t: OvsTarget, op: str) -> Any:
        if t.db in self._apis:
            return self._apis[t.db]
        async with self._connecting.setdefault(t.db, asyncio.Lock()):
            if t.db not in self._apis:
                timeout = max(1, round(sw.timeout))

                def connect() -> Any:
                    idl = connection.OvsdbIdl.from_server(t.db, "Open_vSwitch")
                    cls = type(f"OvsdbApi{next(_serial)}", (impl_idl.OvsdbIdl,),
                               {"_ovsdb_connection": None, "lookup_table": dict(impl_idl.OvsdbIdl.lookup_table)})
                    return cls(connection.Connection(idl, timeout=timeout))

                try:
                    self._apis[t.db] = await self._thread(sw, op, connect)
                except BmcFailure as exc:
                    raise BmcUnreachable(sw.name, self.name, op, f"cannot reach OVSDB {t.db}: {exc.reason}") from exc
        return self._apis[t.db]

    async def _ofctl_run(self, sw: SwitchRef, t: OvsTarget, op: str, *args: str) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                self._ofctl, f"--timeout={max(1, round(sw.timeout))}", args[0], t.mgmt, *args[1:],
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise BmcFailure(sw.name, self.name, op, f"cannot run ovs-ofctl: {exc}") from exc
        try:
            async with asyncio.timeout(sw.timeout + 1):
                out, err = await proc.communicate()
        except TimeoutError as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise BmcUnreachable(sw.name, self.name, op, f"ovs-ofctl got no answer from {t.mgmt}") from exc
        if proc.returncode != 0:
            msg = err.decode(errors="replace").strip()
            cls = BmcUnreachable if "Connection refused" in msg or "No such file" in msg else BmcFailure
            raise cls(sw.name, self.name, op, f"ovs-ofctl {args[0]}: {msg}")
        return out.decode(errors="replace")

    async def _admin_up(self, sw: SwitchRef, t: OvsTarget, port: str, op: str) -> bool:
        states = parse_port_desc(await self._ofctl_run(sw, t, op, "dump-ports-desc"))
        if port not in states:
            raise BmcFailure(sw.name, self.name, op, f"port {port} is in OVSDB but not (yet) on the bridge "
                             "(ovs-vswitchd has not added it)", retryable=True)
        return states[port]

    async def _row(self, sw: SwitchRef, t: OvsTarget, port: str, op: str) -> dict[str, Any]:
        api = await self._api(sw, t, op)

        def read() -> dict[str, Any] | None:
            if not api.br_exists(t.bridge).execute(check_error=True):
                raise BadSettings(sw.name, self.name, op, f"no bridge {t.bridge}")
            if port not in api.list_ports(t.bridge).execute(check_error=True):
                return None
            rows = api.db_list("Port", [port], columns=["tag", "trunks", "vlan_mode"]).execute(check_error=True)
            return dict(rows[0])

        row = await self._thread(sw, op, read)
        if row is None:
            raise BadSettings(sw.name, self.name, op, f"no port {port} on bridge {t.bridge}")
        return row

    async def _write(self, sw: SwitchRef, t: OvsTarget, port: str, tag: list[int], trunks: list[int],
                     mode: str, op: str) -> None:
        api = await self._api(sw, t, op)

        def write() -> int:
            nxt = int(api.db_get("Open_vSwitch", ".", "next_cfg").execute(check_error=True)) + 1
            with api.transaction(check_error=True) as txn:
                txn.add(api.db_set("Port", port, ("tag", tag), ("trunks", trunks), ("vlan_mode", mode)))
                txn.add(api.db_set("Open_vSwitch", ".", ("next_cfg", nxt)))
            return nxt

        def applied() -> int:
            return int(api.db_get("Open_vSwitch", ".", "cur_cfg").execute(check_error=True))

        target = await self._thread(sw, op, write)
        try:
            async with asyncio.timeout(sw.timeout):
                while await self._thread(sw, op, applied) < target:
                    await asyncio.sleep(0.01)
        except TimeoutError as exc:
            raise BmcFailure(sw.name, self.name, op, f"ovs-vswitchd did not apply the change within "
                             f"{sw.timeout:g}s (is it running?)", retryable=True) from exc

    # ---- SwitchDriver ----------------------------------------------------------------

    async def get_port(self, sw: SwitchRef, port: str) -> PortConfig:
        t = parse_address(sw)
        row = await self._row(sw, t, port, "get_port")
        native, tagged = from_row(row["tag"], row["trunks"], row["vlan_mode"])
        return PortConfig(native=native, tagged=tagged, up=await self._admin_up(sw, t, port, "get_port"))

    async def set_port(self, sw: SwitchRef, port: str, want: PortConfig) -> None:
        """Converge ``port`` to ``want``: shut first when fencing, VLANs applied, opened last, then read back."""
        op = "set_port"
        t = parse_address(sw)
        tag, trunks, mode = to_row(sw, want)
        row = await self._row(sw, t, port, op)
        up = await self._admin_up(sw, t, port, op)
        if not want.up and up:
            await self._ofctl_run(sw, t, op, "mod-port", port, "down")
        if from_row(row["tag"], row["trunks"], row["vlan_mode"]) != (want.native, want.tagged) or \
                _scalar(row["vlan_mode"]) != mode:
            log.debug("ovs set_port %s %s: tag=%s trunks=%s mode=%s", sw.name, port, tag, trunks, mode,
                      extra={"switch": sw.name})
            await self._write(sw, t, port, tag, trunks, mode, op)
        if want.up and not up:
            await self._ofctl_run(sw, t, op, "mod-port", port, "up")
        got = await self.get_port(sw, port)
        if got != want:
            raise BmcFailure(sw.name, self.name, op, f"port {port} reads back as {got}, wanted {want}", retryable=True)

    async def list_ports(self, sw: SwitchRef) -> tuple[str, ...]:
        t = parse_address(sw)
        api = await self._api(sw, t, "list_ports")
        ports = await self._thread(sw, "list_ports", lambda: api.list_ports(t.bridge).execute(check_error=True))
        return tuple(sorted(ports))

    async def close(self) -> None:
        apis, self._apis = list(self._apis.values()), {}
        for api in apis:
            await asyncio.to_thread(api.ovsdb_connection.stop, 5)


def create(settings: object | None = None) -> OvsSwitchDriver:
    """Entry-point factory (``anvil.drivers.switch``: ``ovs``)."""
    return OvsSwitchDriver()
