"""The console's sites page: each paired site with its reachability, pending records and lag;
for appliance admins only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from appliance.drivers.protocols import Secret
from appliance.secrets import SecretBox
from appliance.services.users import UserService
from appliance.store.tables import LocalSiteRow, ReplicationOutboxRow, SiteRow
from tests.api.conftest import Api
from tests.console.test_console_forms import login


async def test_the_sites_page_shows_reachability_and_lag(api: Api) -> None:
    from appliance.api.keys import SETTINGS

    box = SecretBox(api.client.server.app[SETTINGS].secrets_key_path)
    with api.store.write() as s:
        s.add(LocalSiteRow(name="site-a"))
        s.add(SiteRow(name="site-b", url="https://127.0.0.1:9", cert_fingerprint="0" * 64, cert_pem="", push=True,
                      token_enc=box.encrypt(Secret("t")), key_enc=box.encrypt(Secret("00" * 32)), outbox_seq=3,
                      acked_seq=1))
        s.flush()
        sid = s.scalar(select(SiteRow.id))
        assert sid is not None
        for seq in (2, 3):
            s.add(ReplicationOutboxRow(site_id=sid, seq=seq, kind="profile", key=f"acme/web-0{seq}", op="put",
                                       data={}, at=datetime.now(UTC) - timedelta(seconds=30), sig="0" * 64))
    UserService(api.store).add("root", "password1", role="admin")
    UserService(api.store).add("tenant-admin", "password1", role="admin", tenant="acme")
    c = api.client
    await login(c, "root", "password1")
    page = await (await c.get("/sites")).text()
    assert 'data-site="site-b"' in page and "this site: site-a" in page
    row = page.split('data-site="site-b"', 1)[1].split("</tr>", 1)[0]
    assert "no: site site-b is unreachable" in row
    assert '<td class="pending">2</td>' in row
    lag = float(row.split('class="lag">', 1)[1].split(" s<", 1)[0])
    assert 29 <= lag < 120
    await c.post("/logout", allow_redirects=False)
    c.session.cookie_jar.clear()
    await login(c, "tenant-admin", "password1")
    assert (await c.get("/sites")).status == 403
