"""Site DR with two appliances on one machine (issue 16's done-when): two state dirs, two API
ports (HTTPS, the primary's certificate pinned by the recovery site), two emulated racks.

The sites pair as an operator pairs them (`anvil site pair-code` / `anvil site pair`), and A's 20
profiles and its plan replicate to B. Then, with a watcher thread
polling both racks' BMCs throughout (Redfish, raw) and the recovery site's switch:
a rehearsal brings all 20 up at B as clones on the rehearsal VLANs (read back from B's switch
while they run), reports RTO per profile and tears down, A's 20 untouched; an activation with A
reachable fences A (its blades read back off) and brings the 20 up at B; failback returns them;
with A's appliance killed (and its rack powered off: the site is lost), activation is refused
without --primary-lost, and done with it. The watcher asserts that no profile's MAC is ever on
a powered-on blade at both sites at once.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.services.profiles import ProfileService
from appliance.store.tables import BindingRow, DrPlanRow, ProfileRow
from tests.integration.engine.rig import PROFILE, Anvil, Lab, Serve, profile_macs

pytestmark = pytest.mark.timeout(1800)   # two racks of 20, two appliances, five DR runs on a shared 2-core machine
N = 20
NAMES = [f"db-{i:02d}" if i <= 2 else f"web-{i:02d}" for i in range(1, N + 1)]
# VLANs the lab's switch knows (appliance.lab.rack): B's production VLANs 300, 310, 311; rehearsal 40, 500, 312.
PLAN = """\
apiVersion: anvil/v1
kind: DrPlan
metadata: {name: prod}
spec:
  recoverySite: b
  profiles: [{tenant: acme}]
  vlans: {100: 300, 101: 310, 200: 311}
  rehearsalVlans: {100: 40, 101: 500, 200: 312}
  priorities: {"db-*": 10}
  dependencies: ["db-* before web-*"]
"""
PROFILE_MACS = {mac: name for i, name in enumerate(NAMES, 1) for mac in profile_macs(i)}


class Site:
    def __init__(self, tmp: Path, name: str) -> None:
        tmp.mkdir()
        self.name = name
        self.anvil = Anvil(tmp)
        self.lab = Lab(self.anvil)
        self.serve = Serve(self.anvil, tls=True)
        self.systems: list[str] = []

        self._functions: dict[str, list[str]] = {}    # system → its Ethernet function URLs (fixed)
        self._pool = ThreadPoolExecutor(8)

    def _function_urls(self, system_url: str) -> list[str]:
        """The system's Ethernet NetworkDeviceFunctions, found once by following the links."""
        if system_url not in self._functions:
            root = system_url.split("/redfish/")[0]
            get = self.lab.get
            urls = []
            for iface in get(root + get(system_url)["NetworkInterfaces"]["@odata.id"])["Members"]:
                for member in get(root + get(root + iface["@odata.id"])["NetworkDeviceFunctions"]["@odata.id"])[
                        "Members"]:
                    if "Ethernet" in get(root + member["@odata.id"]):
                        urls.append(root + member["@odata.id"])
            self._functions[system_url] = urls
        return self._functions[system_url]

    def _macs(self, system_url: str) -> set[str]:
        return {self.lab.get(u)["Ethernet"]["MACAddress"].lower() for u in self._function_urls(system_url)}

    def on_macs(self) -> dict[str, set[str]]:
        """Powered-on blade → the MACs its NetworkDeviceFunctions carry, read from the BMCs (in parallel)."""
        on = [u for u, yes in zip(self.systems, self._pool.map(self.is_on, self.systems), strict=True) if yes]
        return dict(zip(on, self._pool.map(self._macs, on), strict=True))

    def is_on(self, system_url: str) -> bool:
        return self.lab.system(system_url).get("PowerState") == "On"

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Watcher(threading.Thread):
    """Polls both racks until stopped: a profile MAC on a powered-on blade at A and at B at once is
    a violation. B is read first, then A; a suspect is confirmed by reading B's blade again after
    A's (on at B before and after A's read, so on throughout it). A second thread samples every
    port of B's blades on B's switch (their native VLANs), apart from the power reads: reading
    only the ports of blades just read on lost the rehearsal's short window on a loaded CI (the
    ports were parked again, 4094, by the time they were read)."""

    def __init__(self, a: Site, b: Site, b_ports: dict[str, list[tuple[str, str]]]) -> None:
        super().__init__(daemon=True)
        self.a, self.b, self.b_ports = a, b, b_ports
        self.stop = threading.Event()
        self.violations: list[str] = []
        self.samples = 0
        self.port_samples = 0
        self.b_natives: set[int] = set()
        self.errors: list[str] = []
        self.b_store = b.anvil.store()

    def run(self) -> None:
        ports = threading.Thread(target=self._ports, daemon=True)
        ports.start()
        deadline = time.monotonic() + 3600
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                self.sample()
            except Exception as exc:     # an emulator busy for a moment: counted, not fatal
                self.errors.append(repr(exc)[:200])
            self.stop.wait(0.1)
        ports.join(timeout=30)
        self.b_store.close()

    def _ports(self) -> None:
        every = [p for ports in self.b_ports.values() for p in ports]
        deadline = time.monotonic() + 3600
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                for cfg in self.b.lab.read_ports(self.b_store, every).values():
                    if cfg.native is not None:
                        self.b_natives.add(cfg.native)
                self.port_samples += 1
            except Exception as exc:
                self.errors.append(repr(exc)[:200])
            self.stop.wait(0.1)

    def sample(self) -> None:
        b_on = self.b.on_macs()
        a_on = self.a.on_macs()
        a_profiles = {PROFILE_MACS[m]: url for url, macs in a_on.items() for m in macs if m in PROFILE_MACS}
        for url, macs in b_on.items():
            for m in macs & set(PROFILE_MACS):
                name = PROFILE_MACS[m]
                # On at B before A's read and again after it: on at B while A showed it on.
                if name in a_profiles and self.b.is_on(url):
                    self.violations.append(f"{name} live at A ({a_profiles[name]}) and at B ({url})")
        self.samples += 1


def _pair(a: Site, b: Site) -> None:
    """As an operator pairs them: B prints a one-time code, A pairs with it (A replicates to B),
    each side pins the other's certificate and holds a DR token for the other."""
    out = b.anvil("site", "pair-code", "--as", "b").out
    code, fp = re.search(r"code:\s+(\S+)", out), re.search(r"fingerprint:\s+(\S+)", out)
    assert code and fp, out
    got = a.anvil("site", "pair", "b", "--url", b.serve.url, "--code", code.group(1), "--fingerprint", fp.group(1),
                  "--as", "a", "--our-url", a.serve.url)
    assert "paired with site b" in got.out


def _replicated(b: Site, timeout: float = 300) -> None:
    """Until B holds A's 20 profiles (lease "a") and the plan, as replication applied them."""
    store = b.anvil.store()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with store.read() as s:
                held = set(s.scalars(select(ProfileRow.name).where(ProfileRow.site_lease == "a")))
                plan = s.scalar(select(DrPlanRow.origin_site).where(DrPlanRow.name == "prod"))
            if held == set(NAMES) and plan == "a":
                return
            time.sleep(0.5)
        raise AssertionError(f"not replicated in {timeout:g} s: {len(held)} profiles, plan from {plan}")
    finally:
        store.close()


def _import(site: Site) -> None:
    """The 20 profiles, in one go (20 CLI calls cost minutes on a busy 2-core machine)."""
    store = site.anvil.store()
    try:
        svc = ProfileService(store)
        for i, name in enumerate(NAMES, 1):
            svc.import_document(PROFILE.format(name=name, tenant="acme", n=i))
    finally:
        store.close()


def _inventory(site: Site) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    store = site.anvil.store()
    try:
        return site.lab.inventory(store)
    finally:
        store.close()


def _live(site: Site) -> set[str]:
    """Profiles with a live binding at the site (bound: from the bind step of a stamp on)."""
    store = site.anvil.store()
    try:
        with store.read() as s:
            return set(s.scalars(select(ProfileRow.name).join(BindingRow, BindingRow.profile_id == ProfileRow.id)
                                 .where(BindingRow.state == "live")))
    finally:
        store.close()


def _up(site: Site) -> set[str]:
    """Profiles whose stamp finished (booted) at the site."""
    store = site.anvil.store()
    try:
        with store.read() as s:
            return set(s.scalars(select(ProfileRow.name).where(ProfileRow.state == "active")))
    finally:
        store.close()


def _wait_up(site: Site, want: set[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _up(site) == want and _live(site) == want:
            return
        time.sleep(0.5)
    raise AssertionError(f"site {site.name}: up {sorted(_up(site))}, wanted {sorted(want)}")


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Site]]:
    tmp = tmp_path_factory.mktemp("dr-two-sites")
    a, b = Site(tmp / "a", "a"), Site(tmp / "b", "b")
    try:
        a.lab.up(N)
        b.lab.up(N)
        _import(a)
        (tmp / "plan.yaml").write_text(PLAN)
        a.anvil("dr", "plan", "create", str(tmp / "plan.yaml"))
        a.serve.start(timeout=60)
        b.serve.start(timeout=60)
        _pair(a, b)
        _replicated(b)
        yield a, b
    finally:
        for site in (a, b):
            site.serve.stop()
        for site in (a, b):
            site.lab.down()
            site.close()


def test_rehearse_activate_fail_back_and_lose_the_primary_never_live_at_both_sites(
        two_sites: tuple[Site, Site]) -> None:
    a, b = two_sites
    inv_a, inv_b = _inventory(a), _inventory(b)
    a.systems = [v[0] for v in inv_a.values()]
    b.systems = [v[0] for v in inv_b.values()]
    for name in NAMES:
        status, _, body = a.serve.request("POST", f"/api/v1/profiles/{name}/assign", {"tenant": "acme"})
        assert status == 202, body
    _wait_up(a, set(NAMES))
    a_on_before = a.on_macs()
    assert len(a_on_before) == N

    watcher = Watcher(a, b, {url: ports for url, ports in inv_b.values()})
    watcher.start()
    try:
        # -- rehearsal ---------------------------------------------------------------------------
        res = b.anvil("dr", "rehearse", "prod", timeout=900)
        print(res.out)
        assert "rehearsal" in res.out and "succeeded" in res.out
        report = b.anvil("dr", "report", "prod").out
        assert "last successful rehearsal:" in report and "none" not in report.splitlines()[0]
        assert report.count("torn-down") == N
        assert {40, 500} <= watcher.b_natives, (watcher.b_natives, watcher.port_samples, watcher.errors[-3:])
        assert not watcher.b_natives & {100, 101, 300, 310}
        assert _live(b) == set() and not b.on_macs()
        assert _live(a) == set(NAMES) and a.on_macs() == a_on_before        # A untouched

        # -- activation with A reachable -------------------------------------------------------------
        res = b.anvil("dr", "activate", "prod", timeout=900)
        print(res.out)
        assert "succeeded" in res.out
        assert _live(a) == set() and not any(a.is_on(u) for u in a.systems)   # fenced: read back off
        assert _up(b) == set(NAMES) == _live(b)
        b_on = b.on_macs()
        assert {m for macs in b_on.values() for m in macs} >= set(PROFILE_MACS)
        assert {300, 310} <= watcher.b_natives
        refused = a.anvil("profile", "assign", "web-03", "--tenant", "acme", check=False)
        assert refused.code != 0 and "held by site b" in refused.err

        # -- failback --------------------------------------------------------------------------------
        res = b.anvil("dr", "failback", "prod", timeout=900)
        print(res.out)
        assert "succeeded" in res.out
        assert _live(b) == set() and not b.on_macs()
        _wait_up(a, set(NAMES))

        # -- the primary is lost ---------------------------------------------------------------------
        a.serve.kill()
        for url in a.systems:       # the site's power is gone with it
            a.lab.crash(url)
        deadline = time.monotonic() + 60
        while any(a.is_on(u) for u in a.systems) and time.monotonic() < deadline:
            time.sleep(0.5)
        refused = b.anvil("dr", "activate", "prod", check=False, timeout=120)
        assert refused.code != 0 and "--primary-lost" in refused.err, refused.err
        res = b.anvil("dr", "activate", "prod", "--primary-lost", "--reason", "site A lost in the test",
                      timeout=900)
        assert "succeeded" in res.out and "primary declared lost" in res.out
        assert _up(b) == set(NAMES) == _live(b)
        audit = b.anvil("audit", "list", "-o", "json").out
        assert "dr.primary-lost" in audit and "site A lost in the test" in audit
    finally:
        watcher.stop.set()
        watcher.join(timeout=30)
    print(f"watcher: {watcher.samples} power samples, {watcher.port_samples} port samples, "
          f"{len(watcher.errors)} read errors")
    assert watcher.samples > 10
    assert not watcher.violations, watcher.violations[:5]

