"""An admin's day from the console only, in Chromium (Playwright), against the emulated rack.

On a lab of four Redfish blades (rf-01/02 small, rf-03/04 large) and `anvil serve`, an
appliance admin, using nothing but the console: creates identity pools and a blade pool;
imports a template and instantiates it into two profiles; enrols a second switch (a real
snmpsim agent this test starts) and cables a blade NIC to it, and reads its port back; creates
a failover domain; stamps a profile, with the form offering only the blades that fit; runs a
failover drill out and back; creates a viewer token (shown once) and uses it; and finds the
power, health and binding of every blade in the blade list and the rack view. A screenshot
of every page lands in test-artifacts/console/.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.lab.snmp_switch import SnmpSwitch
from appliance.services.users import UserService
from tests.integration.engine.rig import Anvil, Lab, Serve, rig

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
JOB_DONE = 90_000     # ms: a stamp or a failover of the emulated rack takes a few seconds

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")]

TEMPLATE = """apiVersion: anvil/v1
kind: ServerProfileTemplate
metadata: {name: kvm-host, tenant: acme}
spec:
  requirements: {minCpus: 16, minMemoryGiB: 128, nics: 2}
  identity:
    uuid: pool:uuids
    nics:
      - {name: eth0, mac: "pool:macs", vlans: {native: 10}, pxe: true}
      - {name: eth1, mac: "pool:macs", vlans: {native: 20}}
  boot: {mode: uefi, source: {type: local}}
  failover: {domain: kvm-pool, priority: 5, policy: n+1}
"""


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Anvil, Lab, Serve, SnmpSwitch]]:
    tmp = tmp_path_factory.mktemp("workflow")
    with SnmpSwitch(tmp / "tor-2", ports=24, vlans=(1, 10, 20, 4094), community="tor2-community") as tor, \
            rig(tmp, redfish=4) as (anvil, lab, serve):
        anvil.env["ANVIL_MONITOR_INTERVAL"] = "2"     # power and health samples while the test runs
        store = anvil.store()
        try:
            UserService(store).add("root", "root-pass-1", role="admin")
        finally:
            store.close()
        serve.start()
        yield anvil, lab, serve, tor


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


def api(url: str, token: str, method: str = "GET", body: dict[str, object] | None = None) -> int:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_an_admin_runs_the_whole_workflow_from_the_console(appliance: tuple[Anvil, Lab, Serve, SnmpSwitch],
                                                           browser: object) -> None:
    expect = playwright_sync.expect
    _anvil, _lab, serve, tor = appliance
    url = serve.url
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = ctx.new_page()
    confirmations: list[str] = []

    def accept(dialog: object) -> None:
        confirmations.append(dialog.message)  # type: ignore[attr-defined]
        dialog.accept()  # type: ignore[attr-defined]

    page.on("dialog", accept)
    page.goto(url + "/login")
    page.get_by_label("User name").fill("root")
    page.get_by_label("Password").fill("root-pass-1")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

    # Identity pools: the form says how each kind's range reads.
    page.goto(url + "/identity-pools")
    expect(page.locator("#range-help")).to_contain_text("8-4-4-4-12 hex digits")
    for name, kind, start, end in (("macs", "mac", "02:c0:00:00:00:00", "02:c0:00:00:00:ff"),
                                   ("uuids", "uuid", "4c4c4544-1000-0000-0000-000000000000",
                                    "4c4c4544-1000-0000-0000-0000000000ff")):
        page.locator("#ip-name").fill(name)
        page.locator("#ip-kind").select_option(kind)
        page.locator("#ip-start").fill(start)
        page.locator("#ip-end").fill(end)
        page.get_by_role("button", name="Create pool").click()
        expect(page.locator("#page-message")).to_contain_text(f"Created {kind} pool {name}: 256 identities")
    shot(page, "20-identity-pools")

    # A blade pool of the two large blades.
    page.goto(url + "/pools")
    page.locator("#bp-name").fill("big")
    page.locator("#bp-blades").select_option(["rf-03", "rf-04"])
    page.get_by_role("button", name="Create pool").click()
    expect(page.get_by_role("heading", name=re.compile("Blade pool big"))).to_be_visible()
    expect(page.locator("#members-table tbody tr")).to_have_count(2)
    shot(page, "21-blade-pool")

    # A template, imported, then instantiated into two profiles.
    page.goto(url + "/profiles")
    page.get_by_label("Paste YAML or XML").fill(TEMPLATE)
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_role("heading", name="Template acme/kvm-host")).to_be_visible()
    page.locator("#inst-prefix").fill("kvm-")
    page.locator("#inst-count").fill("2")
    shot(page, "22-template")
    page.get_by_role("button", name="Create profiles").click()
    expect(page.locator("#page-message")).to_contain_text("Created 2 profiles from acme/kvm-host: kvm-01, kvm-02")
    expect(page.locator('tr[data-profile="acme/kvm-02"]')).to_be_visible()
    shot(page, "23-profiles-from-template")

    # A second switch, enrolled; rf-04's eth1 cabled to its port 5, read back from the switch.
    page.goto(url + "/switches")
    page.locator("#sw-name").fill("tor-2")
    page.locator("#sw-address").fill(tor.address)
    page.locator("#sw-password").fill("tor2-community")
    page.get_by_role("button", name="Enrol").click()
    expect(page.get_by_role("heading", name=re.compile("Switch tor-2"))).to_be_visible()
    page.locator("#cable-blade").select_option("rf-04")
    page.locator("#cable-nic").fill("eth1")
    page.locator("#cable-port").fill("5")
    page.get_by_role("button", name="Cable", exact=True).click()
    expect(page.locator("#page-message")).to_contain_text("Cabled rf-04/eth1 to port 5")
    expect(page.locator('tr[data-port="5"] .native')).to_have_text("1")      # the switch's own answer
    expect(page.locator('tr[data-port="5"] .portstate')).to_have_text("up")
    shot(page, "24-switch")

    # A failover domain whose spares come from the blade pool.
    page.goto(url + "/failover")
    page.locator("#nd-name").fill("kvm-pool")
    page.locator("#nd-pool").select_option("big")
    page.get_by_role("button", name="Create domain").click()
    expect(page.locator("#failover-message")).to_contain_text("Created failover domain kvm-pool")
    expect(page.locator("#failover-message")).to_contain_text("acme/kvm-01")
    shot(page, "25-failover-domain")

    # Stamping: only the large blades fit; the small ones are greyed with the reason.
    page.goto(url + "/profiles/acme/kvm-01")
    for small in ("rf-01", "rf-02"):
        option = page.locator(f'#target option[value="blade:{small}"]')
        expect(option).to_be_disabled()
        expect(option).to_contain_text("too little memory (64 GiB < 128 GiB)")
    expect(page.locator('#fit-list li.nofit[data-blade="rf-01"]')).to_contain_text("too little memory")
    expect(page.locator("#fit-list li.fit")).to_have_count(2)
    expect(page.locator('#target option[value="blade:rf-03"]')).to_be_enabled()
    expect(page.locator('#target option[value="blade:rf-03"]')).to_contain_text("best fit")
    page.locator("#target").select_option("blade:rf-03")
    expect(page.locator("#dry-run")).to_contain_text("Would stamp blade rf-03")
    expect(page.locator("#assign-button")).to_be_enabled()
    shot(page, "26-assign-form")
    page.get_by_role("button", name="Assign").click()
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=JOB_DONE)
    assert confirmations[-1] == "Stamp acme/kvm-01 onto blade rf-03?"
    shot(page, "27-stamp-job")

    # A drill: out to the domain's other spare, then back from the failover page.
    page.goto(url + "/failover-domains/kvm-pool")
    page.get_by_role("button", name="Run a drill").click()
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=JOB_DONE)
    expect(page.locator("#job-blade")).to_contain_text("rf-04")
    page.goto(url + "/failover")
    page.get_by_role("button", name="Move back to rf-03").click()
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=JOB_DONE)
    expect(page.locator("#job-blade")).to_contain_text("rf-03")
    page.goto(url + "/failover")
    expect(page.locator("article.failover")).to_have_count(2)
    expect(page.get_by_role("button", name=re.compile("Move back"))).to_have_count(0)   # it is back
    shot(page, "28-failover-drill")

    # A viewer token: shown once, reads the API, may not stamp.
    page.goto(url + "/users")
    page.locator("#t-name").fill("ci")
    page.locator("#t-role").select_option("viewer")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#token-value").inner_text().strip()
    shot(page, "29-viewer-token")
    assert api(url + "/api/v1/blades", token) == 200
    assert api(url + "/api/v1/profiles/kvm-02/assign", token, "POST", {"tenant": "acme"}) == 403
    page.goto(url + "/users")
    expect(page.locator("#token-value")).to_have_count(0)
    expect(page.locator("#tokens-table")).to_contain_text("ci")

    # Every blade's power, health and binding, in the list and in the rack view.
    page.goto(url + "/blades")
    for name, power in (("rf-01", "off"), ("rf-02", "off"), ("rf-03", "on"), ("rf-04", "off")):
        row = page.locator(f'tr[data-blade="{name}"]')
        expect(row.locator(".bpower")).to_have_text(power, timeout=15_000)
        expect(row.locator(".bhealth")).to_contain_text("ok")
        expect(row.locator(".bhealth")).to_contain_text("ago")
    expect(page.locator('tr[data-blade="rf-03"] .bprofile')).to_have_text("acme/kvm-01")
    expect(page.locator('tr[data-blade="rf-01"] .bprofile')).to_have_text("\u2013")   # none
    shot(page, "30-blades-power-health")
    page.goto(url + "/")
    slot = page.locator("#slot-rf-03")
    expect(slot).to_contain_text("acme/kvm-01")
    expect(slot.locator(".bpower")).to_have_text("power on")
    expect(slot.locator(".bhealth")).to_have_text("ok")
    expect(page.locator("#slot-rf-01 .bpower")).to_have_text("power off")
    shot(page, "31-rack-power-health")
    ctx.close()
