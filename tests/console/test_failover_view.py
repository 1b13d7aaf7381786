"""The console's Failover page in a real browser (Chromium through Playwright) over the seeded app.

Domains show their spare pool, masked webhook, protected profiles and queue; every event
of a failover's timeline shows with its timestamp; an admin confirms the fence of a blade
that needs an operator; a tenant's viewer sees only its own failovers and no buttons.
Forms without their CSRF token are refused. The screenshot goes to
test-artifacts/console/failover.png.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from appliance.domain.failover import FailoverState, FenceMethod
from appliance.drivers.protocols import Secret
from appliance.secrets import SecretBox
from appliance.services.failover import FailoverService, HealthSample
from appliance.services.users import UserService
from appliance.store.tables import ProfileRow
from tests.api.conftest import Api
from tests.api.test_failover_routes import fenced, protect
from tests.console.test_console_forms import login

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
SECRET = "whsec-console-0123456789-NEVER-SHOWN"
T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
# (event, seconds after detection, detail) of a failover that went all the way.
TIMELINE = [("detected", 0.0, "3 heartbeats missed"), ("fenced", 0.8, "b04 by power"),
            ("spare-chosen", 1.1, "b03"), ("powered-on", 2.4, None), ("booted", 31.0, "boot signal, generation 2"),
            ("active", 31.2, None)]


def build_scene(api: Api, key: Path) -> dict[str, int]:
    """A domain, protected profiles of two tenants and failovers in several states, through the services."""
    svc = FailoverService(api.store, SecretBox(key))
    svc.create_domain("prod", description="web and databases", restart_attempts=2,
                      webhook_url="https://hooks.example/anvil", webhook_secret=Secret(SECRET))
    protect(api.store, "acme", "app-a", 1, priority=10)
    protect(api.store, "globex", "db-g", 2, priority=100)
    protect(api.store, "acme", "app-big", 3, priority=50, cpus=64)
    fo = svc.open_failover(tenant="acme", profile="app-a", reason="3 heartbeats missed", from_blade="b04",
                           detected_at=T0)
    at = {ev: T0 + timedelta(seconds=s) for ev, s, _ in TIMELINE}
    svc.advance(fo.id, FailoverState.FENCING, at=at["detected"])
    svc.advance(fo.id, FailoverState.FENCED, fence=FenceMethod.POWER, detail="b04 by power", at=at["fenced"])
    svc.advance(fo.id, FailoverState.MOVING, to_blade="b03", at=at["spare-chosen"])
    svc.advance(fo.id, FailoverState.BOOTING, at=at["powered-on"])
    svc.add_event(fo.id, "booted", detail="boot signal, generation 2", at=at["booted"])
    svc.advance(fo.id, FailoverState.SUCCEEDED, at=at["active"])
    # acme/web-01 runs on b01 (seeded); its BMC stopped answering and no port is cabled.
    with api.store.write() as s:
        s.execute(update(ProfileRow).where(ProfileRow.name == "web-01").values(state="active"))
    held = svc.open_failover(tenant="acme", profile="web-01", reason="BMC unreachable", domain="prod")
    svc.advance(held.id, FailoverState.FENCING)
    svc.mark_needs_operator(held.id, "no fence could be confirmed: BMC unreachable, no cabled port")
    theirs = fenced(api.store, "globex", "db-g", "b02")
    big = fenced(api.store, "acme", "app-big")
    for i in range(3):
        svc.record_health("b01", HealthSample(ok=i == 0, source="poll", at=T0 - timedelta(seconds=30 * (3 - i)),
                                              power="on", health="ok" if i == 0 else None,
                                              detail="answers" if i == 0 else "BMC timeout"))
    return {"done": fo.id, "held": held.id, "theirs": theirs, "big": big}


def _stamp(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)   # the browser proves the page, not the store
async def test_failover_page_shows_every_timeline_event_and_an_admin_confirms_a_fence(api: Api,
                                                                                       tmp_path: Path) -> None:
    async_api: Any = pytest.importorskip("playwright.async_api")
    ids = build_scene(api, tmp_path / "state" / "secrets.key")
    UserService(api.store).add("ada", "ada-pass-1", role="admin")
    UserService(api.store).add("tina", "tina-pass-1", role="viewer", tenant="acme")
    url = str(api.client.make_url("/")).rstrip("/")
    expect = async_api.expect
    async with async_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await ctx.new_page()
            page.on("dialog", lambda d: d.accept())
            await log_in(async_api, page, url, "ada", "ada-pass-1")
            await page.get_by_role("link", name="Failover", exact=True).click()
            await expect(page.get_by_role("heading", name="Failover", exact=True)).to_be_visible()

            domain = page.locator("#domain-prod")
            await expect(domain.locator(".webhook")).to_contain_text("https://hooks.example/anvil")
            await expect(domain.locator(".webhook")).to_contain_text("***")
            assert SECRET not in await page.content()
            await expect(domain.locator("table.protected tbody tr")).to_have_count(3)   # most important first
            await expect(domain.locator("table.protected tbody tr").first).to_contain_text("globex/db-g")
            await expect(domain.locator("ul.spares")).to_contain_text("b03")
            queue = domain.locator("table.queue")
            await expect(queue).to_contain_text("globex/db-g")
            await expect(queue.locator("tr.waiting")).to_contain_text("waiting for a spare that meets its requirements")

            done = page.locator(f"#failover-{ids['done']}")
            rows = done.locator("table.timeline tbody tr")
            await expect(rows).to_have_count(len(TIMELINE))
            for i, (event, seconds, detail) in enumerate(TIMELINE):
                row = rows.nth(i)
                await expect(row).to_have_attribute("data-event", event)
                await expect(row.locator("time")).to_have_text(_stamp(seconds))
                await expect(row.locator("td").nth(2)).to_have_text(f"+{seconds:.3f} s")
                if detail:
                    await expect(row).to_contain_text(detail)
            await expect(done.locator(".fo-summary")).to_contain_text("took 31.200 s")

            held = page.locator(f"#failover-{ids['held']}")
            await expect(held.locator(f"#failover-{ids['held']}-state")).to_have_text("needs-operator")
            await expect(page.locator("#needs-operator")).to_contain_text("BMC unreachable")
            await shot(page, "failover-needs-operator")
            await page.locator("#needs-operator").get_by_role("button", name="Confirm b01 fenced").click()
            await expect(page.locator("#failover-message")).to_contain_text(
                f"Blade b01 confirmed fenced; failover #{ids['held']} of acme/web-01 goes on.")
            await expect(page.locator("#needs-operator")).to_have_count(0)
            await expect(held.locator(f"#failover-{ids['held']}-state")).to_have_text("fenced")
            confirmed = held.locator('tr[data-event="fence-confirmed"]')
            await expect(confirmed).to_contain_text("by user:ada")
            await expect(confirmed.locator("time")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$"))
            await expect(page.locator("#repair")).to_contain_text("b01")
            await shot(page, "failover")

            await page.get_by_role("link", name="b01").first.click()
            await expect(page.get_by_role("heading", name="Health history of blade b01")).to_be_visible()
            await expect(page.locator("#health-history tbody tr")).to_have_count(3)
            await expect(page.locator("#health-history tbody tr").first).to_contain_text("BMC timeout")
            await ctx.close()

            tenant = await browser.new_context(viewport={"width": 1280, "height": 900})
            tpage = await tenant.new_page()
            await log_in(async_api, tpage, url, "tina", "tina-pass-1")
            await tpage.goto(url + "/failover")
            shown = await tpage.locator("article.failover").evaluate_all("(els) => els.map((e) => e.id)")
            assert sorted(shown) == sorted(f"failover-{ids[k]}" for k in ("done", "held", "big"))
            await expect(tpage.locator("#domain-prod table.protected")).not_to_contain_text("globex")
            await expect(tpage.locator("#domain-prod")).not_to_contain_text("hooks.example")
            await expect(tpage.locator("#domain-prod ul.spares")).to_have_count(0)
            await expect(tpage.locator("#domain-prod table.queue")).not_to_contain_text("b03")
            await expect(tpage.get_by_role("button", name=re.compile("Confirm|Return"))).to_have_count(0)
            await tenant.close()
        finally:
            await browser.close()


async def log_in(async_api: Any, page: Any, url: str, user: str, password: str) -> None:
    await page.goto(url + "/login")
    await page.get_by_label("User name").fill(user)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await async_api.expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def test_failover_forms_need_csrf_and_an_appliance_admin(api: Api, tmp_path: Path) -> None:
    ids = build_scene(api, tmp_path / "state" / "secrets.key")
    users = UserService(api.store)
    users.add("ada", "ada-pass-1", role="admin")
    users.add("gina", "gina-pass-1", role="admin", tenant="globex")
    c = api.client
    csrf = await login(c, "gina", "gina-pass-1")
    page = await (await c.get("/failover")).text()
    assert "confirm-fenced" not in page and "clear-failed" not in page and SECRET not in page
    assert f"failover-{ids['theirs']}" in page and f"failover-{ids['held']}" not in page
    refused = await c.post("/failover/blades/b02/clear-failed", data={"csrf_token": csrf}, allow_redirects=False)
    assert refused.status == 403 and "tenant-scoped admin" in await refused.text()
    assert (await c.get("/failover/blades/b01/health")).status == 404    # not its blade
    await c.post("/logout", data={"csrf_token": csrf})
    c.session.cookie_jar.clear()

    csrf = await login(c, "ada", "ada-pass-1")
    for data in ({}, {"csrf_token": "forged"}):
        assert (await c.post("/failover/blades/b01/confirm-fenced", data=data, allow_redirects=False)).status == 403
    ok = await c.post("/failover/blades/b01/confirm-fenced", data={"csrf_token": csrf}, allow_redirects=False)
    assert ok.status == 303 and ok.headers["Location"].startswith("/failover?msg=")
    again = await c.post("/failover/blades/b01/confirm-fenced", data={"csrf_token": csrf}, allow_redirects=False)
    assert again.status == 409 and "no failover waiting" in await again.text()
    entries = (await (await c.get("/api/v1/audit?action=confirm-fenced")).json())["items"]
    assert entries[0]["who"] == "user:ada" and entries[0]["origin"].startswith("console ")
