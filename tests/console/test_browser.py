"""The console in a real browser (Chromium through Playwright) against the emulated rack and `anvil serve`.

Log in; import a profile with an error and see it at its line; fix it; assign it to a
blade of the emulated rack and watch the job reach done; see the blade change state on
an open dashboard without reloading; release it. A viewer sees no assign button and
gets 403 from the API. Screenshots go to test-artifacts/console/.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.services.users import UserService
from tests.integration.engine.rig import Anvil, Lab, Serve, rig

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")]

GOOD = """apiVersion: anvil/v1
kind: ServerProfile
metadata: {name: web-ui, tenant: acme}
spec:
  requirements: {minCpus: 2, nics: 2}
  identity:
    nics:
      - {name: eth0, mac: "02:a0:00:00:7e:01", vlans: {native: 100}, pxe: true}
      - {name: eth1, mac: "02:a0:00:00:7e:02", vlans: {native: 101}}
  boot: {mode: uefi, source: {type: local}}
"""
BAD = GOOD.replace('"02:a0:00:00:7e:02"', '"02:a0:00:zz:7e:02"')   # line 9


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Anvil, Lab, Serve]]:
    with rig(tmp_path_factory.mktemp("console"), redfish=2) as (anvil, lab, serve):
        store = anvil.store()
        try:
            UserService(store).add("alice", "alice-pass-1", role="operator")
            UserService(store).add("victor", "victor-pass-1", role="viewer")
        finally:
            store.close()
        serve.start()
        yield anvil, lab, serve


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


def shot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def log_in(page: object, url: str, user: str, password: str) -> None:
    page.goto(url + "/login")  # type: ignore[attr-defined]
    page.get_by_label("User name").fill(user)  # type: ignore[attr-defined]
    page.get_by_label("Password").fill(password)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Log in").click()  # type: ignore[attr-defined]
    playwright_sync.expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()  # type: ignore[attr-defined]


def test_operator_imports_fixes_assigns_watches_and_releases(appliance: tuple[Anvil, Lab, Serve],
                                                             browser: object) -> None:
    expect = playwright_sync.expect
    _anvil, _lab, serve = appliance
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
    page = ctx.new_page()
    page.on("dialog", lambda d: d.accept())
    log_in(page, serve.url, "alice", "alice-pass-1")
    dash = ctx.new_page()   # stays open, never reloaded
    dash.goto(serve.url + "/")
    slot = dash.locator("#slot-rf-01")
    expect(slot).to_have_attribute("data-state", "spare")
    shot(dash, "01-dashboard")

    page.goto(serve.url + "/profiles")
    page.get_by_label("Paste YAML or XML").fill(BAD)
    page.get_by_role("button", name="Import").click()
    bad_line = page.locator("ol.code li.bad")
    expect(bad_line).to_have_count(1)
    expect(bad_line).to_have_attribute("data-line", "9")
    expect(bad_line).to_contain_text("spec.identity.nics[1].mac")
    expect(page.locator("#import-errors")).to_contain_text("line 9")
    shot(page, "02-import-error-at-line")

    page.get_by_label("Paste YAML or XML").fill(GOOD)
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_role("heading", name="Profile acme/web-ui")).to_be_visible()
    page.get_by_label("Assign to").select_option("blade:rf-01")
    page.get_by_role("button", name="Dry run").click()
    expect(page.locator("#dry-run")).to_contain_text("Would stamp blade rf-01")
    shot(page, "03-profile-dry-run")
    page.get_by_role("button", name="Assign").click()
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=90_000)
    expect(page.locator("#job-progress-text")).to_have_text(re.compile(r"^(\d+)/\1$"))
    shot(page, "04-job-done")

    expect(slot).to_have_attribute("data-state", "active", timeout=10_000)
    expect(slot).to_contain_text("acme/web-ui")
    expect(dash.locator("#cap-stamped")).to_have_text("1")
    shot(dash, "05-dashboard-live-active")

    page.goto(serve.url + "/blades/rf-01")
    expect(page.locator("#blade-profile")).to_contain_text("acme/web-ui")
    expect(page.locator("#bmc-power")).to_have_text("on", timeout=15_000)
    shot(page, "06-blade")

    page.goto(serve.url + "/profiles/acme/web-ui")
    page.get_by_role("button", name="Release").click()
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=90_000)
    expect(slot).to_have_attribute("data-state", "spare", timeout=10_000)
    shot(dash, "07-dashboard-after-release")

    page.goto(serve.url + "/jobs")
    expect(page.locator("#jobs-table tbody tr")).to_have_count(2)
    expect(page.locator("#jobs-table .jstate").first).to_have_text("succeeded")
    shot(page, "08-jobs")

    page.goto(serve.url + "/audit?resource=job")
    expect(page.locator("table.audit tbody tr")).to_have_count(2)
    expect(page.locator("table.audit")).to_contain_text("user:alice")
    shot(page, "08-audit-log")

    tablet = browser.new_context(viewport={"width": 768, "height": 1024},  # type: ignore[attr-defined]
                                 storage_state=ctx.storage_state())
    tpage = tablet.new_page()
    tpage.goto(serve.url + "/")
    expect(tpage.locator("#slot-rf-01")).to_be_visible()
    assert tpage.evaluate("document.documentElement.scrollWidth") <= 768
    shot(tpage, "09-dashboard-tablet")
    tablet.close()
    ctx.close()


def test_a_viewer_sees_no_assign_button_and_the_api_refuses_it(appliance: tuple[Anvil, Lab, Serve],
                                                               browser: object) -> None:
    expect = playwright_sync.expect
    anvil, _lab, serve = appliance
    (anvil.tmp / "viewer-profile.yaml").write_text(GOOD.replace("web-ui", "web-view").replace("7e:0", "7f:0"))
    anvil("profile", "import", str(anvil.tmp / "viewer-profile.yaml"))
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
    page = ctx.new_page()
    log_in(page, serve.url, "victor", "victor-pass-1")
    page.goto(serve.url + "/profiles/acme/web-view")
    expect(page.get_by_role("heading", name="Profile acme/web-view")).to_be_visible()
    expect(page.get_by_role("button", name="Assign")).to_have_count(0)
    expect(page.get_by_role("button", name="Release")).to_have_count(0)
    status = page.evaluate("""async () => {
        const csrf = document.querySelector('meta[name="csrf-token"]').content;
        const r = await fetch('/api/v1/profiles/web-view/assign', {method: 'POST', headers: {
            'Content-Type': 'application/json', 'X-CSRF-Token': csrf}, body: JSON.stringify({tenant: 'acme'})});
        return r.status; }""")
    assert status == 403
    shot(page, "10-viewer-profile")
    ctx.close()
