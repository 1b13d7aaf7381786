"""The iPXE script for a blade asking by MAC (or SMBIOS UUID), rendered from the profile
bound to it.

Look-up: the MAC is a blade NIC's burned-in MAC, or a MAC of the profile of a live
binding (applied as a virtual MAC); failing both, the SMBIOS UUID is the profile's
UUID or the blade's. The most specific template wins:
``profiles/TENANT/NAME.ipxe.j2``, ``boot.SOURCE.MODE.ipxe.j2``, ``boot.SOURCE.ipxe.j2``.
A MAC nobody knows gets ``discover.ipxe.j2``, which posts the machine's facts back.

Only what a booting machine needs ends up in a script (no BMC or switch credential,
no CHAP secret); every value is checked to be one line of printable text, so a profile
cannot add statements to the script.

The boot HTTP service goes through :func:`serve_scripts`, which answers a batch of
requests at once: the look-ups and the boot tokens share one read transaction
(burned-in MACs by index; profile MACs and UUIDs through a :class:`TargetFinder` map of
the live bindings; each token derived from the engine's open boot attempt,
appliance.boot.tokens), and the templates are rendered outside it. Serving a script
writes nothing (DESIGN §8): fetching it again, by the blade or by anyone, changes no
token. :meth:`ScriptRenderer.render` does the same in the caller's session.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from sqlalchemy import Connection, Row, and_, bindparam, func, literal_column, select
from sqlalchemy.orm import Session

from appliance.assets import asset_dir
from appliance.boot.tokens import BootKey, attempt_token
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeNicRow, BladeRow, ProfileRow

_MAC = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SAFE = re.compile(r"^[^\x00-\x1f\x7f]*$")


def normalize_mac(value: str) -> str | None:
    """``aa:bb:cc:dd:ee:ff`` for any common spelling of a MAC, else None."""
    mac = value.strip().lower()
    if not _MAC.match(mac):
        return None
    digits = mac.replace(":", "").replace("-", "")
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def normalize_uuid(value: str | None) -> str | None:
    uuid = (value or "").strip().lower()
    return uuid if _UUID.match(uuid) else None


def one_line(value: Any) -> str:
    """A value fit for one iPXE statement: printable, no line breaks. The error never quotes the
    value: a kernel command line carries the boot token, and errors reach the log."""
    text = "" if value is None else str(value)
    if not _SAFE.match(text):
        at = next(i for i, c in enumerate(text) if ord(c) < 0x20 or ord(c) == 0x7F)
        raise ValueError(f"refusing a value with a control character (U+{ord(text[at]):04X} at position {at}) "
                         "in an iPXE script")
    return text


def default_template_dirs() -> list[Path]:
    return [asset_dir("pxe") / "ipxe"]


def make_environment(dirs: Sequence[Path] | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in (dirs or default_template_dirs())]),
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True)
    env.finalize = one_line
    return env


@dataclass(frozen=True, slots=True)
class Bound:
    """The live binding generation a script is for."""

    id: int
    generation: int
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class BoundProfile:
    tenant: str
    name: str
    document: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Target:
    """Who is booting: the blade's name ("" if only its profile is known) and the live binding, if any."""

    blade: str
    binding: Bound | None
    profile: BoundProfile | None
    rack: int | None = None     # the rack controller that serves the blade (None: the appliance's own)


def _identity(document: Mapping[str, Any]) -> dict[str, Any]:
    spec = document.get("spec") or {}
    identity = spec.get("identity") or {}
    return identity if isinstance(identity, dict) else {}


def _profile_macs(document: Mapping[str, Any]) -> set[str]:
    macs = set()
    for nic in _identity(document).get("nics") or []:
        mac = normalize_mac(str(nic.get("mac") or "")) if isinstance(nic, dict) else None
        if mac:
            macs.add(mac)
    return macs


def _profile_uuid(document: Mapping[str, Any]) -> str:
    return str(_identity(document).get("uuid") or "").lower()


# Statements are built once (they are immutable); each look-up is one indexed query.
_COLUMNS = (BladeRow.name, BindingRow.id, BindingRow.generation, BindingRow.job_id, ProfileRow.tenant,
            ProfileRow.name, ProfileRow.document, BladeRow.rack_id)
# 'live' inline, not a parameter: only then can SQLite use the partial indexes on live bindings.
_IS_LIVE = BindingRow.state == literal_column("'live'")
_LIVE_ON_BLADE = and_(BindingRow.blade_id == BladeRow.id, _IS_LIVE)
_BY_NIC = (select(*_COLUMNS).select_from(BladeNicRow).join(BladeRow, BladeRow.id == BladeNicRow.blade_id)
           .outerjoin(BindingRow, _LIVE_ON_BLADE).outerjoin(ProfileRow, ProfileRow.id == BindingRow.profile_id)
           .where(BladeNicRow.mac == bindparam("mac")))
_BY_BLADE = (select(*_COLUMNS, BladeRow.facts).select_from(BladeRow).outerjoin(BindingRow, _LIVE_ON_BLADE)
             .outerjoin(ProfileRow, ProfileRow.id == BindingRow.profile_id).where(BladeRow.id == bindparam("blade")))
_BY_BINDING = (select(*_COLUMNS).select_from(BindingRow).join(BladeRow, BladeRow.id == BindingRow.blade_id)
               .join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
               .where(BindingRow.id == bindparam("binding"), _IS_LIVE))
_NEWEST_BINDING = select(func.max(BindingRow.id))
_LIVE_PROFILES = (select(BindingRow.id, ProfileRow.document).join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
                  .where(_IS_LIVE))
_BLADE_FACTS = select(BladeRow.id, BladeRow.facts)


def _target(row: Row[Any]) -> Target:
    blade, binding_id, generation, job_id, tenant, name, document, rack = tuple(row)[:8]
    if binding_id is None:
        return Target(blade or "", None, None, rack)
    return Target(blade or "", Bound(binding_id, generation, job_id), BoundProfile(tenant, name, document or {}),
                  rack)


@dataclass(frozen=True, slots=True)
class _Index:
    newest: int | None
    built_at: float
    by_mac: Mapping[str, int] = field(default_factory=dict)         # profile MAC → binding id
    by_uuid: Mapping[str, int] = field(default_factory=dict)        # profile UUID → binding id
    blade_by_uuid: Mapping[str, int] = field(default_factory=dict)  # SMBIOS UUID in blade facts → blade id


class TargetFinder:
    """Answers "who is this MAC (or UUID)?".

    A burned-in MAC is one indexed query. Profile MACs and UUIDs live in JSON documents,
    so they are looked up in a map of the live bindings, rebuilt when a binding starts
    (the highest binding id moves) or once it is ``max_age`` s old; every hit is read
    back from its row, live and still matching, before it is believed, and a stale hit
    rebuilds the map at once. So a new or ended binding is seen at once, and an edit of a
    bound profile's MACs within ``max_age`` s. ``max_age=0`` reads everything every time.
    """

    def __init__(self, *, max_age: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self.clock = clock
        self._index: _Index | None = None   # replaced whole, never mutated: safe across threads

    def _current(self, conn: Connection, newest: int | None, force: bool) -> _Index:
        index = self._index
        now = self.clock()
        if not force and index is not None and index.newest == newest and now - index.built_at < self.max_age:
            return index
        by_mac: dict[str, int] = {}
        by_uuid: dict[str, int] = {}
        for binding_id, document in conn.execute(_LIVE_PROFILES):
            for mac in _profile_macs(document or {}):
                by_mac.setdefault(mac, binding_id)
            uuid = _profile_uuid(document or {})
            if uuid:
                by_uuid.setdefault(uuid, binding_id)
        blades: dict[str, int] = {}
        for blade_id, facts in conn.execute(_BLADE_FACTS):
            uuid = str((facts or {}).get("uuid") or "").lower()
            if uuid:
                blades.setdefault(uuid, blade_id)
        index = self._index = _Index(newest, now, by_mac, by_uuid, blades)
        return index

    def reader(self, conn: Connection) -> Callable[[str | None, str | None], Target | None]:
        """``find`` bound to one read transaction: the highest binding id is read once for all the
        look-ups made through it (it cannot move inside the transaction's snapshot)."""
        newest: list[int | None] = []

        def find(mac: str | None, uuid: str | None = None) -> Target | None:
            mac = normalize_mac(mac) if mac else None
            uuid = normalize_uuid(uuid)
            if mac:
                row = conn.execute(_BY_NIC, {"mac": mac}).first()
                if row is not None:
                    return _target(row)
            if not (mac or uuid):
                return None
            if not newest:
                newest.append(conn.execute(_NEWEST_BINDING).scalar())
            return self._by_identity(conn, newest[0], mac, uuid)

        return find

    def _by_identity(self, conn: Connection, newest: int | None, mac: str | None, uuid: str | None) -> Target | None:
        for force in (False, True):
            index = self._current(conn, newest, force)
            stale = False
            if mac and mac in index.by_mac:
                row = conn.execute(_BY_BINDING, {"binding": index.by_mac[mac]}).first()
                if row is not None and mac in _profile_macs(row.document or {}):
                    return _target(row)
                stale = True
            if uuid and uuid in index.by_uuid:
                row = conn.execute(_BY_BINDING, {"binding": index.by_uuid[uuid]}).first()
                if row is not None and _profile_uuid(row.document or {}) == uuid:
                    return _target(row)
                stale = True
            if uuid and uuid in index.blade_by_uuid:
                row = conn.execute(_BY_BLADE, {"blade": index.blade_by_uuid[uuid]}).first()
                if row is not None and str((row.facts or {}).get("uuid") or "").lower() == uuid:
                    return _target(row)
                stale = True
            if not stale:
                return None
        return None

    def find(self, conn: Connection, mac: str | None, uuid: str | None = None) -> Target | None:
        """The blade and live binding for this MAC (or UUID); None for a machine nobody knows."""
        return self.reader(conn)(mac, uuid)


def find_target(session: Session, mac: str | None, uuid: str | None = None) -> Target | None:
    """The blade and live binding for this MAC (or UUID), read afresh; None for a machine nobody knows."""
    return TargetFinder(max_age=0).find(session.connection(), mac, uuid)


def _image_url(base_url: str, path: str) -> str:
    return f"{base_url}/boot/images/{quote(path, safe='/')}"


def _split_portal(portal: str) -> tuple[str, str]:
    host, _, port = portal.rpartition(":")
    return (host, port) if host else (portal, "")


def _identity_args(profile: BoundProfile) -> list[str]:
    meta = profile.document.get("metadata") or {}
    identity = _identity(profile.document)
    args = [f"anvil.profile={meta.get('tenant', profile.tenant)}/{meta.get('name', profile.name)}"]
    if identity.get("uuid") and not str(identity["uuid"]).startswith("pool:"):
        args.append(f"anvil.uuid={identity['uuid']}")
    for nic in identity.get("nics") or []:
        if not isinstance(nic, dict):
            continue
        mac = normalize_mac(str(nic.get("mac") or ""))
        if not mac:
            continue
        parts = [str(nic.get("name") or ""), mac]
        if nic.get("ipv4"):
            parts.append(str(nic["ipv4"]))
        args.append("anvil.nic=" + ",".join(parts))
    return args


@dataclass(frozen=True, slots=True)
class Script:
    text: str
    template: str
    token_issued: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """A script with everything but its boot token: which templates, what context, and whether
    (and for which binding generation) a token goes on the kernel command line."""

    names: tuple[str, ...]
    context: Mapping[str, Any]
    token_for: Bound | None = None
    cmdline: tuple[str, ...] = ()


class ScriptRenderer:
    """Renders scripts; ``base_url`` is the boot HTTP service as blades reach it (no trailing /).

    Template look-ups (most specific first) are remembered for ``template_ttl`` s, so a
    per-profile template dropped in is picked up that soon, without a file-system search
    per request.
    """

    def __init__(self, base_url: str, *, template_dirs: Sequence[Path] | None = None,
                 key: BootKey | None = None,
                 agent_mode: str = "agent", template_ttl: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base_url = base_url.rstrip("/")
        self.env = make_environment(template_dirs)
        self.key = key
        self.agent_mode = agent_mode
        self.template_ttl = template_ttl
        self.clock = clock
        self._chosen: dict[tuple[str, ...], tuple[float, jinja2.Template]] = {}

    def _template(self, names: Sequence[str]) -> jinja2.Template:
        key = tuple(names)
        now = self.clock()
        hit = self._chosen.get(key)
        if hit is not None and now - hit[0] < self.template_ttl:
            return hit[1]
        template = self.env.select_template(list(names))
        if len(self._chosen) > 4096:
            self._chosen.clear()
        self._chosen[key] = (now, template)
        return template

    def _render(self, names: Sequence[str], context: Mapping[str, Any]) -> Script:
        template = self._template(names)
        return Script(template.render(**context), str(template.name), False)

    def discover(self, mac: str | None) -> Script:
        return self._render(["discover.ipxe.j2"], {
            "mac": normalize_mac(mac or "") or "", "discover_url": f"{self.base_url}/boot/discover"})

    def plan(self, target: Target | None, mac: str | None) -> Plan:
        """What to tell this machine, short of the token. Raises ValueError for a profile that cannot boot."""
        if target is None:
            return Plan(("discover.ipxe.j2",), {"mac": normalize_mac(mac or "") or "",
                                                "discover_url": f"{self.base_url}/boot/discover"})
        context: dict[str, Any] = {"mac": normalize_mac(mac or "") or "", "blade": target.blade}
        if target.binding is None or target.profile is None:
            return Plan(("boot.local.ipxe.j2",), {**context, "profile": "", "mode": "", "reason": "unbound"})
        profile = target.profile
        spec = profile.document.get("spec") or {}
        boot = spec.get("boot") or {}
        source = boot.get("source") or {"type": "local"}
        kind = str(source.get("type") or "local")
        mode = str(boot.get("mode") or "uefi")
        context.update(profile=f"{profile.tenant}/{profile.name}", mode=mode, reason="profile",
                       generation=target.binding.generation)
        names = [f"profiles/{profile.tenant}/{profile.name}.ipxe.j2", f"boot.{kind}.{mode}.ipxe.j2",
                 f"boot.{kind}.ipxe.j2"]
        kernel = source.get("kernel")
        initrd = source.get("initrd")
        if kind == "iscsi":
            host, port = _split_portal(str(source["portal"]))
            context.update(initiator_iqn=_identity(profile.document).get("iscsiInitiator") or "",
                           root_path=f"iscsi:{host}::{port}:{int(source.get('lun', 0))}:{source['target']}")
        elif kind not in ("image", "local"):
            # Boot from a source iPXE does not drive (FC): hand over to the next boot device.
            names = [names[0], f"boot.local.{mode}.ipxe.j2", "boot.local.ipxe.j2"]
        if kind in ("image", "iscsi") and kernel and initrd:
            initrd_name = str(initrd).rsplit("/", 1)[-1]
            args = [f"initrd={initrd_name}"]
            if source.get("cmdline"):
                args.append(str(source["cmdline"]))
            args += _identity_args(profile)
            context.update(kernel_url=_image_url(self.base_url, str(kernel)),
                           initrd_url=_image_url(self.base_url, str(initrd)))
            return Plan(tuple(names), context, target.binding, tuple(args))
        if kind == "image":
            raise ValueError(f"profile {profile.tenant}/{profile.name} has an image source without kernel/initrd")
        context.update(kernel_url="", initrd_url="", cmdline="")
        return Plan(tuple(names), context)

    def finish(self, plan: Plan, token: str | None) -> Script:
        """The script of ``plan``. Where the plan boots an image of ours and the engine opened a
        boot attempt, ``token`` and the callback go on the kernel command line; without an attempt
        the image boots all the same, but it cannot call back (nothing awaits it)."""
        context = dict(plan.context)
        if plan.token_for is not None:
            args = [*plan.cmdline]
            if token:
                args += [f"anvil.token={token}", f"anvil.callback={self.base_url}/boot/callback"]
            args.append(f"anvil.mode={self.agent_mode}")
            context["cmdline"] = " ".join(args)
        script = self._render(plan.names, context)
        return Script(script.text, script.template, plan.token_for is not None and bool(token))

    def token_of(self, conn: Connection, plan: Plan) -> str | None:
        """The token of the open boot attempt of the plan's binding, derived (a read)."""
        if plan.token_for is None or self.key is None:
            return None
        return attempt_token(conn, plan.token_for.id, plan.token_for.generation, self.key)

    def render(self, session: Session, mac: str | None, uuid: str | None = None) -> Script:
        """The script for whoever asks, read in the caller's transaction."""
        plan = self.plan(find_target(session, mac, uuid), mac)
        return self.finish(plan, self.token_of(session.connection(), plan))

    def serve(self, store: Store, finder: TargetFinder, mac: str | None, uuid: str | None = None) -> Script:
        """The script for whoever asks, as the boot HTTP service answers it (see :func:`serve_scripts`).
        Raises ValueError for a script that cannot be made. Blocking: call it on a worker thread."""
        result = serve_scripts(store, finder, [Ask(self, mac, uuid)])[0]
        if isinstance(result, ValueError):
            raise result
        return result


@dataclass(frozen=True, slots=True)
class Ask:
    """One request for a script."""

    renderer: ScriptRenderer
    mac: str | None
    uuid: str | None = None


class NotServedHere(ValueError):
    """The machine is a blade another rack controller serves: this one tells it nothing."""


def _finish(ask: Ask, plan: Plan, token: str | None) -> Script | ValueError:
    try:
        return ask.renderer.finish(plan, token)
    except ValueError as exc:
        return exc


def serve_scripts(store: Store, finder: TargetFinder, asks: Sequence[Ask], *,
                  rack: int | None = None) -> list[Script | ValueError]:
    """Scripts for several requests at once, in order; a ValueError in place of a script that
    cannot be made (a profile value that would break the script, say), and :class:`NotServedHere`
    for a blade of another rack controller than ``rack`` (None: the appliance's own boot role).

    One read transaction for every look-up and boot token of the batch; nothing is written.
    Raises the store's errors. Blocking: call it on a worker thread.
    """
    results: list[Script | ValueError] = []
    with store.engine.connect() as conn:
        find = finder.reader(conn)
        for ask in asks:
            target = find(ask.mac, ask.uuid)
            if target is not None and target.rack != rack:
                results.append(NotServedHere(f"{ask.mac or ask.uuid} is blade {target.blade or '?'}, served by "
                                             "another rack controller"))
                continue
            try:
                plan = ask.renderer.plan(target, ask.mac)
            except ValueError as exc:
                results.append(exc)
                continue
            results.append(_finish(ask, plan, ask.renderer.token_of(conn, plan)))
    return results
