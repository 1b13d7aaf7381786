"""The recovery site's calls to the primary's DR routes (appliance.api.routes.dr), through the
paired site's pinned HTTPS client. Both calls are idempotent and are polled until done."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from appliance.errors import NotFound
from appliance.secrets import SecretBox
from appliance.sites.peer import SitePeer
from appliance.store import Store
from appliance.store.tables import LocalSiteRow, SiteRow

FENCE = "/api/v1/dr/plans/{plan}/fence"
RETURN = "/api/v1/dr/plans/{plan}/return"
PING = "/api/v1/dr/ping"


def local_site(store: Store) -> str | None:
    """This appliance's site name (set when it first paired); None before."""
    with store.read() as s:
        return s.scalar(select(LocalSiteRow.name).limit(1))


def peer(store: Store, box: SecretBox, site: str, *, timeout: float = 15.0) -> SitePeer:
    """A client of the paired ``site``. NotFound when it is not paired."""
    with store.read() as s:
        row = s.scalar(select(SiteRow).where(SiteRow.name == site))
        if row is None:
            raise NotFound("site", site)
        s.expunge(row)
    return SitePeer.of(row, box, timeout=timeout)


async def call(store: Store, box: SecretBox, site: str, path: str, body: Any | None = None) -> Any:
    """One call to ``site``: GET without a body, else POST. PeerUnreachable, PeerRefused."""
    async with peer(store, box, site) as client:
        return await (client.get(path) if body is None else client.post(path, body))
