"""Rack controllers: boot roles on their own provisioning networks, registered with the region.

As in MAAS, the region (``anvil serve``) holds the store; a rack controller (``anvil serve
--role boot --region URL --rack-token FILE``) serves DHCP, TFTP and boot HTTP on its rack's
provisioning network, for the blades cabled to it (``blades.rack_id``) and nobody else.

* ``anvil rack add NAME --network CIDR`` creates the rack and its token (shown once, stored
  as its SHA-256), the one credential the rack controller holds;
* the rack controller's heartbeat (every :data:`HEARTBEAT_S` s) says its version, its
  networks and its boot URL; a rack not heard from for :data:`DOWN_AFTER_S` s is *down*;
* ``anvil blade set-rack BLADE RACK`` (or ``--none``) says which rack serves a blade.

Blades without a rack are served by the appliance's own boot role, as before racks existed.
"""

from __future__ import annotations

import builtins
import hashlib
import ipaddress
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from appliance.errors import Conflict, Issue, NotFound, ValidationError
from appliance.store import Store
from appliance.store.tables import BladeRow, RackRow, utcnow

HEARTBEAT_S = 5.0
DOWN_AFTER_S = 15.0         # three heartbeats lost
TOKEN_PREFIX = "anvil-rack-"
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MAX_NETWORKS = 16


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ValidationError([Issue("name", f"{name!r}: a rack name is 1-63 lower-case letters, digits and '-', "
                                             "starting and ending with a letter or digit")])
    return name


def check_networks(networks: list[str], where: str = "network") -> list[str]:
    """The networks as canonical CIDRs; ValidationError naming the bad one."""
    if len(networks) > _MAX_NETWORKS:
        raise ValidationError([Issue(where, f"at most {_MAX_NETWORKS} networks per rack")])
    out = []
    for i, net in enumerate(networks):
        try:
            out.append(str(ipaddress.ip_network(str(net), strict=False)))
        except ValueError:
            raise ValidationError([Issue(f"{where}[{i}]", f"{str(net)[:64]!r} is not a network (CIDR, e.g. "
                                                          "10.77.0.0/24)")]) from None
    return out


def _aware(t: datetime | None) -> datetime | None:
    return t if t is None or t.tzinfo else t.replace(tzinfo=utcnow().tzinfo)


def health(last_seen: datetime | None, now: datetime, *, down_after: float = DOWN_AFTER_S) -> str:
    """``up``, ``down`` (heard from, but not lately) or ``never`` (never registered)."""
    seen = _aware(last_seen)
    if seen is None:
        return "never"
    return "up" if now - seen <= timedelta(seconds=down_after) else "down"


@dataclass(frozen=True, slots=True)
class RackInfo:
    name: str
    networks: tuple[str, ...]
    reported_networks: tuple[str, ...]
    version: str | None
    boot_url: str | None
    last_seen_at: datetime | None
    health: str
    blades: tuple[str, ...]

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "networks": list(self.networks), "reportedNetworks": list(self.reported_networks),
                "version": self.version, "bootUrl": self.boot_url,
                "lastSeenAt": self.last_seen_at.isoformat() if self.last_seen_at else None,
                "health": self.health, "blades": list(self.blades)}


@dataclass(frozen=True, slots=True)
class RackIdentity:
    """Who a rack token belongs to."""

    id: int
    name: str


def rack_down_reason(session: Session, blade_id: int, *, now: datetime | None = None,
                     down_after: float = DOWN_AFTER_S) -> str | None:
    """Why the rack controller serving this blade cannot boot it now (down, never registered); None
    when it is up or the blade is served by the appliance's own boot role."""
    row = session.execute(select(RackRow.name, RackRow.last_seen_at)
                          .join(BladeRow, BladeRow.rack_id == RackRow.id).where(BladeRow.id == blade_id)).first()
    if row is None:
        return None
    name, seen = row
    now = now or utcnow()
    state = health(seen, now, down_after=down_after)
    if state == "up":
        return None
    if state == "never":
        return f"rack controller {name} has never registered (start it: anvil serve --role boot --region …)"
    ago = (now - _aware(seen)).total_seconds() if seen else 0.0     # type: ignore[operator]
    return f"rack controller {name} is down (last heartbeat {ago:.0f} s ago)"


class RackService:
    def __init__(self, store: Store, *, down_after: float = DOWN_AFTER_S) -> None:
        self._store = store
        self.down_after = down_after

    def _info(self, s: Session, row: RackRow, now: datetime) -> RackInfo:
        blades = tuple(s.scalars(select(BladeRow.name).where(BladeRow.rack_id == row.id).order_by(BladeRow.name)))
        return RackInfo(row.name, tuple(row.networks or ()), tuple(row.reported_networks or ()), row.version,
                        row.boot_url, _aware(row.last_seen_at), health(row.last_seen_at, now,
                                                                       down_after=self.down_after), blades)

    def add(self, name: str, networks: builtins.list[str]) -> tuple[RackInfo, str]:
        """A new rack and its token (returned once; only its hash is kept)."""
        check_name(name)
        nets = check_networks(networks)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._store.write() as s:
            if s.scalar(select(RackRow.id).where(RackRow.name == name)) is not None:
                raise Conflict(f"rack {name!r} already exists (anvil rack rotate-token {name} for a new token)")
            row = RackRow(name=name, networks=nets, token_hash=hash_token(token), reported_networks=[])
            s.add(row)
            s.flush()
            return self._info(s, row, utcnow()), token

    def rotate_token(self, name: str) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._store.write() as s:
            row = s.scalar(select(RackRow).where(RackRow.name == name))
            if row is None:
                raise NotFound("rack", name)
            row.token_hash = hash_token(token)
        return token

    def get(self, name: str) -> RackInfo:
        with self._store.read() as s:
            row = s.scalar(select(RackRow).where(RackRow.name == name))
            if row is None:
                raise NotFound("rack", name)
            return self._info(s, row, utcnow())

    def list(self) -> builtins.list[RackInfo]:
        now = utcnow()
        with self._store.read() as s:
            return [self._info(s, r, now) for r in s.scalars(select(RackRow).order_by(RackRow.name))]

    def remove(self, name: str) -> None:
        """Remove a rack; refused while blades are cabled to it (move them first)."""
        with self._store.write() as s:
            row = s.scalar(select(RackRow).where(RackRow.name == name))
            if row is None:
                raise NotFound("rack", name)
            blades = builtins.list(s.scalars(select(BladeRow.name).where(BladeRow.rack_id == row.id)))
            if blades:
                raise Conflict(f"rack {name} still serves blades {', '.join(blades[:10])}; move them first "
                               "(anvil blade set-rack BLADE OTHER, or --none)")
            s.delete(row)

    def set_blade_rack(self, blade: str, rack: str | None) -> None:
        """Cable ``blade`` to ``rack`` (None: the appliance's own boot role serves it)."""
        with self._store.write() as s:
            row = s.scalar(select(BladeRow).where(BladeRow.name == blade))
            if row is None:
                raise NotFound("blade", blade)
            if rack is None:
                row.rack_id = None
                return
            rack_id = s.scalar(select(RackRow.id).where(RackRow.name == rack))
            if rack_id is None:
                raise NotFound("rack", rack)
            row.rack_id = rack_id

    def authenticate(self, token: str) -> RackIdentity | None:
        """The rack a token belongs to; None for anything else."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 256:
            return None
        with self._store.read() as s:
            row = s.execute(select(RackRow.id, RackRow.name)
                            .where(RackRow.token_hash == hash_token(token))).first()
            return RackIdentity(row[0], row[1]) if row is not None else None

    def heartbeat(self, rack: RackIdentity, *, version: str, networks: builtins.list[str],
                  boot_url: str | None) -> None:
        """Record a rack controller's heartbeat (its registration, the first time)."""
        nets = check_networks(networks, "networks")
        with self._store.write() as s:
            # A core UPDATE: every few seconds per rack, bookkeeping, not a change for the audit trail.
            done = s.execute(update(RackRow).where(RackRow.id == rack.id).values(
                version=version[:64], reported_networks=nets, boot_url=boot_url or None, last_seen_at=utcnow())
                .returning(RackRow.id))
            if done.first() is None:
                raise NotFound("rack", rack.name)
