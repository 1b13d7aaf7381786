"""The site lease: a profile is live at one site at most. ``profiles.site_lease`` NULL means this
site holds the profile; a site's name means the profile is owned or live there (a replica from
it, or one whose lease DR activation moved to it), and this site must not stamp it."""

from __future__ import annotations

from appliance.errors import Conflict
from appliance.store.tables import ProfileRow


class HeldElsewhere(Conflict):
    """The profile's lease is held by another site."""

    def __init__(self, tenant: str, name: str, site: str) -> None:
        self.site = site
        super().__init__(f"profile {name} is held by site {site} (tenant {tenant}): it can be stamped here "
                         f"only once DR activation takes its lease")


def check_stampable(row: ProfileRow) -> None:
    """Raise :class:`HeldElsewhere` unless this site holds ``row``'s lease."""
    if row.site_lease is not None:
        raise HeldElsewhere(row.tenant, row.name, row.site_lease)
