"""Every console page names the Anvil version and the store's schema revision in its footer
(the same two figures as `anvil version`)."""

from __future__ import annotations

from appliance import __version__
from appliance.services.users import UserService
from appliance.store.migrate import HEAD
from tests.api.conftest import Api
from tests.console.test_console_forms import login


async def test_footer_shows_version_and_schema(api: Api) -> None:
    footer = f"<footer>Anvil {__version__} · store schema {HEAD}</footer>"
    assert footer in await (await api.client.get("/login")).text()
    UserService(api.store).add("ann", "password1", role="viewer")
    await login(api.client, "ann", "password1")
    assert footer in await (await api.client.get("/")).text()
