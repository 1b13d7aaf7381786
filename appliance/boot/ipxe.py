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
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from sqlalchemy import select
from sqlalchemy.orm import Session

from appliance.assets import asset_dir
from appliance.boot.tokens import issue_boot_token
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
    """A value fit for one iPXE statement: printable, no line breaks."""
    text = "" if value is None else str(value)
    if not _SAFE.match(text):
        raise ValueError(f"refusing a value with control characters in an iPXE script: {text!r}")
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
class Target:
    """Who is booting: the blade (if enrolled) and the live binding (if any)."""

    blade: BladeRow | None
    binding: BindingRow | None
    profile: ProfileRow | None


def _live_bindings(session: Session) -> list[tuple[BindingRow, ProfileRow]]:
    rows = session.execute(select(BindingRow, ProfileRow).join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
                           .where(BindingRow.state == "live")).all()
    return [(b, p) for b, p in rows]


def _identity(profile: ProfileRow) -> dict[str, Any]:
    spec = profile.document.get("spec") or {}
    identity = spec.get("identity") or {}
    return identity if isinstance(identity, dict) else {}


def _profile_macs(profile: ProfileRow) -> set[str]:
    macs = set()
    for nic in _identity(profile).get("nics") or []:
        mac = normalize_mac(str(nic.get("mac") or "")) if isinstance(nic, dict) else None
        if mac:
            macs.add(mac)
    return macs


def _bound(session: Session, blade: BladeRow) -> Target:
    row = session.execute(select(BindingRow, ProfileRow).join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
                          .where(BindingRow.blade_id == blade.id, BindingRow.state == "live")).first()
    if row is None:
        return Target(blade, None, None)
    return Target(blade, row[0], row[1])


def find_target(session: Session, mac: str | None, uuid: str | None = None) -> Target | None:
    """The blade and live binding for this MAC (or UUID); None for a machine nobody knows."""
    mac = normalize_mac(mac) if mac else None
    uuid = normalize_uuid(uuid)
    if mac:
        blade = session.scalars(select(BladeRow).join(BladeNicRow, BladeNicRow.blade_id == BladeRow.id)
                                .where(BladeNicRow.mac == mac)).first()
        if blade is not None:
            return _bound(session, blade)
    live = _live_bindings(session) if (mac or uuid) else []
    if mac:
        for binding, profile in live:
            if mac in _profile_macs(profile):
                return Target(session.get(BladeRow, binding.blade_id), binding, profile)
    if uuid:
        for binding, profile in live:
            if str(_identity(profile).get("uuid") or "").lower() == uuid:
                return Target(session.get(BladeRow, binding.blade_id), binding, profile)
        for blade in session.scalars(select(BladeRow)):
            if str((blade.facts or {}).get("uuid") or "").lower() == uuid:
                return _bound(session, blade)
    return None


def _image_url(base_url: str, path: str) -> str:
    return f"{base_url}/boot/images/{quote(path, safe='/')}"


def _split_portal(portal: str) -> tuple[str, str]:
    host, _, port = portal.rpartition(":")
    return (host, port) if host else (portal, "")


def _identity_args(profile: ProfileRow) -> list[str]:
    meta = profile.document.get("metadata") or {}
    identity = _identity(profile)
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


class ScriptRenderer:
    """Renders scripts; ``base_url`` is the boot HTTP service as blades reach it (no trailing /)."""

    def __init__(self, base_url: str, *, template_dirs: Sequence[Path] | None = None,
                 token_factory: Callable[[Session, BindingRow], str] = issue_boot_token,
                 agent_mode: str = "agent") -> None:
        self.base_url = base_url.rstrip("/")
        self.env = make_environment(template_dirs)
        self.token_factory = token_factory
        self.agent_mode = agent_mode

    def _render(self, names: Sequence[str], context: Mapping[str, Any]) -> Script:
        template = self.env.select_template(list(names))
        return Script(template.render(**context), str(template.name), False)

    def discover(self, mac: str | None) -> Script:
        return self._render(["discover.ipxe.j2"], {
            "mac": normalize_mac(mac or "") or "", "discover_url": f"{self.base_url}/boot/discover"})

    def render(self, session: Session, mac: str | None, uuid: str | None = None) -> Script:
        """The script for whoever asks; issues (and so rotates) a boot token where one is needed."""
        target = find_target(session, mac, uuid)
        if target is None:
            return self.discover(mac)
        context: dict[str, Any] = {"mac": normalize_mac(mac or "") or "",
                                   "blade": target.blade.name if target.blade else ""}
        if target.binding is None or target.profile is None:
            return self._render(["boot.local.ipxe.j2"], {**context, "profile": "", "mode": "", "reason": "unbound"})
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
        token_issued = False
        if kind == "iscsi":
            host, port = _split_portal(str(source["portal"]))
            context.update(initiator_iqn=_identity(profile).get("iscsiInitiator") or "",
                           root_path=f"iscsi:{host}::{port}:{int(source.get('lun', 0))}:{source['target']}")
        elif kind not in ("image", "local"):
            # Boot from a source iPXE does not drive (FC): hand over to the next boot device.
            names = [names[0], f"boot.local.{mode}.ipxe.j2", "boot.local.ipxe.j2"]
        if kind in ("image", "iscsi") and kernel and initrd:
            token = self.token_factory(session, target.binding)
            token_issued = True
            initrd_name = str(initrd).rsplit("/", 1)[-1]
            args = [f"initrd={initrd_name}"]
            if source.get("cmdline"):
                args.append(str(source["cmdline"]))
            args += _identity_args(profile)
            args += [f"anvil.token={token}", f"anvil.callback={self.base_url}/boot/callback",
                     f"anvil.mode={self.agent_mode}"]
            context.update(kernel_url=_image_url(self.base_url, str(kernel)),
                           initrd_url=_image_url(self.base_url, str(initrd)), cmdline=" ".join(args))
        else:
            context.update(kernel_url="", initrd_url="", cmdline="")
        if kind == "image" and not token_issued:
            raise ValueError(f"profile {profile.tenant}/{profile.name} has an image source without kernel/initrd")
        script = self._render(names, context)
        return Script(script.text, script.template, token_issued)
