"""Stamp and release against the emulated rack, through a real ``anvil serve``.

What the appliance did is read back raw from the emulators: the Redfish System and
its NetworkDeviceFunctions over HTTP, the switch ports through the SNMP driver.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import select

from appliance.drivers.protocols import PortConfig
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeRow, ProfileRow
from tests.integration.engine.rig import PARKING_VLAN, PROFILE_VLANS, Anvil, Lab, Serve, profile_macs

Rig = tuple[Anvil, Lab, Serve]


def _bound_blade(store: Store, profile: str) -> str | None:
    with store.read() as s:
        return s.scalar(select(BladeRow.name).join(BindingRow, BindingRow.blade_id == BladeRow.id)
                        .join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
                        .where(ProfileRow.name == profile, BindingRow.state == "live"))


def _wait_job(serve: Serve, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = serve.request("GET", f"/api/v1/jobs/{job_id}")
        assert status == 200, body
        if body["state"] in ("succeeded", "failed", "rolled_back", "cancelled"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not final in {timeout:g} s: {body}")


def test_stamping_powers_on_with_pxe_virtual_macs_and_vlans_and_release_reverses_it(served_rack: Rig) -> None:
    anvil, lab, _ = served_rack
    store = anvil.store()
    try:
        inventory = lab.inventory(store)
        res = anvil("profile", "assign", "web-01", "--tenant", "acme")
        print(f"anvil profile assign (CLI, following the job): {res.seconds:.2f} s")
        assert "succeeded" in res.out
        blade = _bound_blade(store, "web-01")
        assert blade is not None
        system_url, ports = inventory[blade]
        other_url, other_ports = next(v for k, v in inventory.items() if k != blade)

        system = lab.system(system_url)
        assert system["PowerState"] == "On"
        assert system["Boot"]["BootSourceOverrideTarget"] == "Pxe"
        assert system["Boot"]["BootSourceOverrideEnabled"] == "Once"
        eth = lab.ethernet_functions(system_url)
        assert [e["MACAddress"] for e in eth] == list(profile_macs(1))
        assert all(e["PermanentMACAddress"] != e["MACAddress"] for e in eth)
        got = lab.read_ports(store, ports + other_ports)
        for port, (native, tagged) in zip(ports, PROFILE_VLANS, strict=True):
            assert got[port] == PortConfig(native=native, tagged=tagged, up=True), port
        out = anvil("switch", "port-vlans", *ports[0]).out.strip()
        assert out == f"{ports[0][0]} port {ports[0][1]}: native 100 tagged 200 up"
        # The spare blade was not touched.
        assert lab.system(other_url)["PowerState"] == "Off"
        assert all(e["MACAddress"] == e["PermanentMACAddress"] for e in lab.ethernet_functions(other_url))
        assert all(got[p].native != 100 for p in other_ports)

        res = anvil("profile", "release", "web-01", "--tenant", "acme")
        print(f"anvil profile release (CLI, following the job): {res.seconds:.2f} s")
        assert "succeeded" in res.out
        assert _bound_blade(store, "web-01") is None
        assert lab.system(system_url)["PowerState"] == "Off"
        eth = lab.ethernet_functions(system_url)
        assert [e["MACAddress"] for e in eth] == [e["PermanentMACAddress"] for e in eth]
        got = lab.read_ports(store, ports)
        assert all(got[p] == PortConfig(native=PARKING_VLAN, tagged=frozenset(), up=True) for p in ports), got
        with store.read() as s:
            assert {b.name: b.state for b in s.scalars(select(BladeRow))} == dict.fromkeys(inventory, "spare")
    finally:
        store.close()


def test_twenty_concurrent_rest_assigns_of_one_profile_give_one_202_and_nineteen_409(served_rack: Rig) -> None:
    _, _, serve = served_rack
    start = threading.Barrier(20)

    def post(_: int) -> tuple[int, str, dict[str, Any]]:
        start.wait(timeout=30)
        return serve.request("POST", "/api/v1/profiles/web-02/assign", {"tenant": "acme"})

    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(post, range(20)))
    statuses = sorted(r[0] for r in replies)
    assert statuses == [202] + [409] * 19, [(r[0], r[2].get("detail")) for r in replies]
    accepted = next(r[2] for r in replies if r[0] == 202)
    for status, ctype, body in replies:
        if status != 409:
            continue
        assert ctype.startswith("application/problem+json")
        assert body["status"] == 409 and body["title"] == "Conflict"
        # Either the job is still running or it already bound the blade; both say which profile and why.
        assert body["detail"] in (f"profile acme/web-02 already has a job in progress (stamp job {accepted['id']})",
                                  ) or body["detail"].startswith("profile acme/web-02 is already assigned to blade"), \
            body["detail"]
    done = _wait_job(serve, accepted["id"])
    assert done["state"] == "succeeded", done
    status, _, body = serve.request("POST", "/api/v1/profiles/web-02/release", {"tenant": "acme"})
    assert status == 202, body
    assert _wait_job(serve, body["id"])["state"] == "succeeded"


def test_assign_without_a_running_appliance_fails_at_once(tmp_path: Path) -> None:
    anvil = Anvil(tmp_path)
    anvil.import_profiles([("web-01", 1)])
    never = anvil("profile", "assign", "web-01", "--tenant", "acme", check=False)
    assert never.code != 0
    assert "no appliance is running (start `anvil serve`)" in never.err
    assert never.seconds < 10, never.seconds   # the CLI's own start-up; it does not wait for a leader

    # A leader lease left behind by a kill -9 does not count: its PID is dead.
    serve = Serve(anvil)
    try:
        serve.start()
        time.sleep(1.5)   # let the engine take the lease
        serve.kill()
        killed = anvil("profile", "assign", "web-01", "--tenant", "acme", check=False)
    finally:
        serve.stop()
    assert killed.code != 0 and "no appliance is running (start `anvil serve`)" in killed.err
    assert killed.seconds < 10, killed.seconds
