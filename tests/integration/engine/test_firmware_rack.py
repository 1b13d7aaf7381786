"""Firmware baselines and update jobs against the emulated rack (appliance.lab.inproc): real
sushy-tools BMCs with the lab's FirmwareInventory/UpdateService, the production engine and
Redfish driver, the image served by the rig's boot HTTP. The CLI runs as a user runs it (a
subprocess on the rig's state dir); what the blades run is read around the appliance, from
the emulators."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from appliance.lab import redfish_emulator
from appliance.lab.inproc import InprocRig, fast_engine
from appliance.services.changes import ChangeFilter, ChangeService
from appliance.services.jobs import JobInfo, JobService
from appliance.services.profiles import ProfileService
from appliance.store.tables import BladeRow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

FINAL = ("succeeded", "failed", "rolled_back", "cancelled")
BASELINE = "lab-2026"


def _write_baseline(work: Path, *, nic_image: bool = True) -> None:
    """A BIOS and NIC image in the rig's images/ and a baseline naming them with their SHA-256."""
    comps = {"BMC": '"1.0.0"'}
    for comp, version in (("BIOS", "2.19.1"), ("NIC", "22.31.6")):
        if comp == "NIC" and not nic_image:
            comps[comp] = f'"{version}"'
            continue
        rel = f"firmware/{comp.lower()}-{version}.fw"
        path = work / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"AnvilLabFirmware": {"Component": comp, "Version": version}}))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        comps[comp] = f'{{version: "{version}", image: {rel}, sha256: "{digest}"}}'
    folder = work / "firmware" / "baselines"
    folder.mkdir(parents=True, exist_ok=True)
    lines = "\n".join(f"  {k}: {v}" for k, v in comps.items())
    (folder / f"{BASELINE}.yaml").write_text(f"name: {BASELINE}\ncomponents:\n{lines}\n")


def _version(rig: InprocRig, blade: str, comp: str) -> str:
    b = rig.blade(blade)
    path = f"/redfish/v1/UpdateService/FirmwareInventory/{b.system['uuid']}-{comp}"
    doc = redfish_emulator.get_json(b.emulator, path)
    return str(doc["Version"])


async def _anvil(work: Path, *args: str) -> tuple[int, str, str]:
    """The real `anvil` command on the rig's state dir (its store and secrets key), nothing from the caller's env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANVIL_")}
    env.update(ANVIL_STATE_DIR=str(work), ANVIL_CONFIG=str(work / "anvil.toml"))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "appliance", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 150)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(), err.decode()


def _rows(out: str) -> dict[str, str]:
    """`firmware compliance` table rows by blade."""
    return {line.split()[0]: line for line in out.splitlines() if line.startswith("b0")}


async def test_a_rolling_wave_of_ten_blades_stops_at_its_failure_budget(tmp_path: Path) -> None:
    async with InprocRig(tmp_path, chassis=[5, 5], engine=fast_engine(firmware_poll=0.1)) as rig:
        _write_baseline(rig.work)
        code, before, err = await _anvil(rig.work, "firmware", "compliance", "--baseline", BASELINE, "--pool", "spares")
        assert code == 0, err
        rows = _rows(before)
        assert sorted(rows) == [f"b{i:03d}" for i in range(1, 11)], before
        assert all("BIOS 1.0.0 (want 2.19.1); NIC 1.0.0 (want 22.31.6)" in r for r in rows.values()), before
        assert "0 of 10 blade(s) comply with lab-2026" in before

        b = rig.blade("b003")
        redfish_emulator.fail_next_update(b.emulator, b.system)   # b003's first flash fails (wave 2)
        code, out, err = await _anvil(rig.work, "firmware", "update", "--baseline", BASELINE, "--pool", "spares",
                                      "--wave", "2", "--failure-budget", "0")
        assert code != 0, out
        assert "anvil: error: job" in err and "wave stopped: 1 failure(s) exceed the failure budget of 0" in err, err
        table = {line.split()[0]: line.split()[1] for line in out.splitlines()
                 if line.startswith("b0") and not line.split()[1].endswith(":")}
        assert table == {**{f"b{i:03d}": "updated" for i in (1, 2, 4)}, "b003": "failed",
                         **{f"b{i:03d}": "skipped" for i in range(5, 11)}}, out
        assert ("b003 failed: blade b003: BIOS update to 2.19.1 failed: flashing BIOS failed (lab fault)") in out, out

        # Around the appliance: the first two waves flashed (b003 failed), the rest untouched.
        for i in (1, 2, 4):
            assert (_version(rig, f"b{i:03d}", "BIOS"), _version(rig, f"b{i:03d}", "NIC")) == ("2.19.1", "22.31.6")
        assert _version(rig, "b003", "BIOS") == "1.0.0"
        for i in range(5, 11):
            assert (_version(rig, f"b{i:03d}", "BIOS"), _version(rig, f"b{i:03d}", "NIC")) == ("1.0.0", "1.0.0")

        # Two at a time: every flash of wave 1 ended before any of wave 2 started.
        job = JobService(rig.store).list(kind="firmware-update", limit=1)[0]
        events = [e["message"] for e in JobService(rig.store).events(job.id, 0)]
        first_of_wave2 = min(i for i, m in enumerate(events)
                             if m.startswith(("b003: BIOS update", "b004: BIOS update")))
        last_of_wave1 = max(i for i, m in enumerate(events) if m.startswith(("b001: updated", "b002: updated")))
        assert last_of_wave1 < first_of_wave2, events
        # Held in maintenance only while flashed: every blade is a spare again.
        with rig.store.read() as s:
            assert {r.name: r.state for r in s.query(BladeRow)} == {f"b{i:03d}": "spare" for i in range(1, 11)}

        code, after, err = await _anvil(rig.work, "firmware", "compliance", "--baseline", BASELINE, "--pool", "spares")
        rows = _rows(after)
        assert [n for n, r in sorted(rows.items()) if " compliant" in r.split("lab-2026", 1)[1]] == [
            "b001", "b002", "b004"], after
        assert "BIOS 1.0.0 (want 2.19.1)" in rows["b003"], after
        assert "3 of 10 blade(s) comply with lab-2026" in after

        # Run again with a budget: it converges (finished blades are compliant; the rest are flashed).
        code, out, err = await _anvil(rig.work, "firmware", "update", "--baseline", BASELINE, "--pool", "spares",
                                      "--wave", "2", "--failure-budget", "1")
        assert code == 0, err
        code, after, err = await _anvil(rig.work, "firmware", "compliance", "--baseline", BASELINE)
        assert "10 of 10 blade(s) comply with lab-2026" in after, after


async def _stamp(rig: InprocRig, name: str, policy: str, n: int = 1) -> JobInfo:
    ProfileService(rig.store).import_document(f"""\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: acme}}
spec:
  requirements: {{minCpus: 8, nics: 2}}
  identity:
    nics:
      - {{name: eth0, mac: "02:f1:00:00:{n:02x}:01", vlans: {{native: 100}}, pxe: true}}
      - {{name: eth1, mac: "02:f1:00:00:{n:02x}:02", vlans: {{native: 101}}}}
  boot: {{mode: uefi, source: {{type: image, kernel: lab/vmlinuz, initrd: lab/initrd.img}}}}
  firmware: {{baseline: {BASELINE}, policy: {policy}}}
""")
    jobs = JobService(rig.store)
    job = jobs.submit_assign(name, tenant="acme", blade="b001")
    return await rig.until(f"{name} final", lambda: (lambda i: i if i.state in FINAL else None)(jobs.get(job.id)), 90)


async def test_a_stamp_refuses_a_non_compliant_blade_before_any_change(tmp_path: Path) -> None:
    async with InprocRig(tmp_path, chassis=[1], engine=fast_engine(firmware_poll=0.1)) as rig:
        _write_baseline(rig.work)
        info = await _stamp(rig, "fw-refuse", "refuse")
        assert info.state in ("failed", "rolled_back"), info.state
        assert ("blade b001 does not comply with firmware baseline lab-2026: BIOS 1.0.0 (want 2.19.1); "
                "NIC 1.0.0 (want 22.31.6); profile fw-refuse says policy: refuse") in (info.error or ""), info.error
        ran = [s.name for s in info.steps if s.state != "pending"]
        assert ran == ["check-requirements", "choose-blade", "check-bios", "check-firmware"], ran
        assert redfish_emulator.power_history(rig.blade("b001").emulator) == []
        assert _version(rig, "b001", "BIOS") == "1.0.0"
        # policy: report (the default) records the finding and stamps.
        info = await _stamp(rig, "fw-report", "report", n=2)
        assert info.state == "succeeded", info.error
        check = next(s for s in info.steps if s.name == "check-firmware")
        assert check.result == {"firmware": "blade b001 does not comply with lab-2026: BIOS 1.0.0 (want 2.19.1); "
                                            "NIC 1.0.0 (want 22.31.6) (policy: report)"}, check.result


async def test_a_stamp_with_update_first_flashes_the_blade_then_boots_it(tmp_path: Path) -> None:
    async with InprocRig(tmp_path, chassis=[1], engine=fast_engine(firmware_poll=0.1)) as rig:
        _write_baseline(rig.work)
        info = await _stamp(rig, "fw-update", "update-first")
        assert info.state == "succeeded", info.error
        check = next(s for s in info.steps if s.name == "check-firmware")
        assert check.result == {"firmware": "blade b001 updated to lab-2026: BIOS 1.0.0 -> 2.19.1, "
                                            "NIC 1.0.0 -> 22.31.6"}, check.result
        assert (_version(rig, "b001", "BIOS"), _version(rig, "b001", "NIC")) == ("2.19.1", "22.31.6")
        # The flash came before the blade was powered on for the profile.
        assert redfish_emulator.power_history(rig.blade("b001").emulator), "the stamp booted the blade"
        # Each flashed component is on record for the CMDB, with the job and step that flashed it.
        records, _ = ChangeService(rig.store).list(ChangeFilter(resource="firmware"))
        assert sorted((r["name"], r["action"], r["after"]["was"], r["after"]["version"], r["step"])
                      for r in records if r["job"] == info.id) == [
            ("b001:BIOS", "update", "1.0.0", "2.19.1", "check-firmware"),
            ("b001:NIC", "update", "1.0.0", "22.31.6", "check-firmware")], records


async def test_the_api_shows_compliance_and_runs_an_update_job(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from appliance.api.app import create_app
    from appliance.config import load_settings
    from appliance.services.tokens import TokenService

    async with InprocRig(tmp_path, chassis=[2], engine=fast_engine(firmware_poll=0.1)) as rig:
        _write_baseline(rig.work)
        settings = load_settings(env={"ANVIL_STATE_DIR": str(rig.work), "ANVIL_CONFIG": str(tmp_path / "none.toml")})
        tokens = TokenService(rig.store)
        op, tenant_op = tokens.create("op", role="operator"), tokens.create("acme-op", role="operator", tenant="acme")
        app = create_app(settings, rig.store, engine=rig.engine, hardware=rig.hw)
        async with TestClient(TestServer(app)) as c:
            auth, tenant = {"Authorization": f"Bearer {op}"}, {"Authorization": f"Bearer {tenant_op}"}
            got = await c.get("/api/v1/firmware/compliance", params={"baseline": BASELINE}, headers=auth)
            assert got.status == 200, await got.text()
            before = await got.json()
            assert (before["total"], before["compliant"]) == (2, 0)
            assert before["items"][0]["components"]["BIOS"] == {"wanted": "2.19.1", "found": "1.0.0", "ok": False}

            for bad, status, text in (({"baseline": "lab-2062", "blade": "b001"}, 404, "firmware baseline 'lab-2062' "
                                       "not found; did you mean lab-2026?"),
                                      ({"baseline": BASELINE, "blade": "b001", "wave": 0}, 400, "wave"),
                                      ({"baseline": BASELINE, "blade": "b001", "pool": "spares"}, 409, "one of them")):
                r = await c.post("/api/v1/firmware/updates", json=bad, headers=auth)
                assert r.status == status and text in await r.text(), (bad, r.status, await r.text())
            assert (await c.post("/api/v1/firmware/updates", json={"baseline": BASELINE, "blade": "b001"},
                                 headers=tenant)).status == 403
            assert (await c.get("/api/v1/firmware/compliance", params={"baseline": BASELINE},
                                headers=tenant)).status == 403

            r = await c.post("/api/v1/firmware/updates", json={"baseline": BASELINE, "blade": "b001"}, headers=auth)
            assert r.status == 202, await r.text()
            job = (await r.json())["id"]

            async def final() -> dict | None:
                info = await (await c.get(f"/api/v1/jobs/{job}", headers=auth)).json()
                return info if info["state"] in FINAL else None
            deadline = asyncio.get_running_loop().time() + 60
            info = None
            while info is None and asyncio.get_running_loop().time() < deadline:
                info = await final()
                await asyncio.sleep(0.2)
            assert info is not None and info["state"] == "succeeded", info
            after = await (await c.get("/api/v1/firmware/compliance", params={"baseline": BASELINE},
                                       headers=auth)).json()
            assert {i["blade"]: i["compliant"] for i in after["items"]} == {"b001": True, "b002": False}
            assert _version(rig, "b002", "BIOS") == "1.0.0"

            # The blade list (API and console) shows each blade's last reading.
            listed = await (await c.get("/api/v1/blades", headers=auth)).json()
            want = {"b001": "lab-2026 ✓", "b002": "lab-2026: BIOS 1.0.0 (want 2.19.1); NIC 1.0.0 (want 22.31.6)"}
            assert {b["name"]: b["firmware"] for b in listed["items"]} == want
            from appliance.services.users import UserService
            from tests.console.test_console_forms import login

            UserService(rig.store).add("ann", "password1", role="viewer")
            await login(c, "ann", "password1")
            page = await (await c.get("/blades")).text()
            assert ">Firmware</th>" in page
            for blade, cell in want.items():
                row = page.split(f'data-blade="{blade}"', 1)[1].split("</tr>", 1)[0]
                assert f">{cell}</td>" in row, row


async def test_a_blade_pool_names_the_baseline_its_stamps_and_updates_use(tmp_path: Path) -> None:
    async with InprocRig(tmp_path, chassis=[3], engine=fast_engine(firmware_poll=0.1)) as rig:
        _write_baseline(rig.work)
        code, out, err = await _anvil(rig.work, "blade-pool", "create", "fwp", "--firmware-baseline", "lab-2062")
        assert code != 0 and "firmware baseline 'lab-2062' not found; did you mean lab-2026?" in err, (out, err)
        for args in (("blade-pool", "create", "fwp", "--firmware-baseline", BASELINE, "--firmware-policy", "refuse"),
                     ("blade-pool", "add", "fwp", "b001", "b002")):
            code, out, err = await _anvil(rig.work, *args)
            assert code == 0, err
        code, out, err = await _anvil(rig.work, "firmware", "compliance", "--pool", "fwp")
        assert code == 0, err
        assert sorted(_rows(out)) == ["b001", "b002"] and "0 of 2 blade(s) comply with lab-2026" in out, out
        code, out, err = await _anvil(rig.work, "firmware", "compliance")
        assert code != 0 and "blade pool spares names no firmware baseline" in err, err

        # A profile naming no baseline, stamped from the pool: the pool's baseline and policy apply.
        jobs = JobService(rig.store)

        async def stamp(name: str, n: int) -> JobInfo:
            ProfileService(rig.store).import_document(f"""\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {{name: {name}, tenant: acme}}
spec:
  requirements: {{minCpus: 8, nics: 2}}
  identity:
    nics:
      - {{name: eth0, mac: "02:f2:00:00:{n:02x}:01", vlans: {{native: 100}}, pxe: true}}
      - {{name: eth1, mac: "02:f2:00:00:{n:02x}:02", vlans: {{native: 101}}}}
  boot: {{mode: uefi, source: {{type: image, kernel: lab/vmlinuz, initrd: lab/initrd.img}}}}
""")
            job = jobs.submit_assign(name, tenant="acme", pool="fwp")
            return await rig.until(f"{name} final",
                                   lambda: (lambda i: i if i.state in FINAL else None)(jobs.get(job.id)), 90)

        info = await stamp("pool-refuse", 1)
        assert info.state in ("failed", "rolled_back"), info.state
        assert "does not comply with firmware baseline lab-2026" in (info.error or "") and \
            "blade pool fwp says policy: refuse" in (info.error or ""), info.error
        assert all(_version(rig, b, "BIOS") == "1.0.0" for b in ("b001", "b002"))

        code, out, err = await _anvil(rig.work, "blade-pool", "firmware", "fwp", BASELINE, "--policy", "update-first")
        assert code == 0 and "firmware baseline lab-2026 (policy update-first)" in out, (out, err)
        info = await stamp("pool-update", 2)
        assert info.state == "succeeded", info.error
        chosen = next(s for s in info.steps if s.name == "choose-blade").result["blade"]
        other = ({"b001", "b002"} - {chosen}).pop()
        check = next(s for s in info.steps if s.name == "check-firmware")
        assert check.result == {"firmware": f"blade {chosen} updated to lab-2026: BIOS 1.0.0 -> 2.19.1, "
                                            "NIC 1.0.0 -> 22.31.6"}, check.result
        assert (_version(rig, chosen, "BIOS"), _version(rig, other, "BIOS")) == ("2.19.1", "1.0.0")

        # An update of the pool without --baseline: the pool's (the stamped blade holds a profile: skipped).
        code, out, err = await _anvil(rig.work, "firmware", "update", "--pool", "fwp")
        assert code == 0, (out, err)
        assert (_version(rig, other, "BIOS"), _version(rig, other, "NIC")) == ("2.19.1", "22.31.6")
        assert _version(rig, "b003", "BIOS") == "1.0.0", "b003 is not in the pool"


async def test_a_wave_stopped_mid_flash_resumes_without_flashing_anything_twice(tmp_path: Path) -> None:
    """The engine is stopped while the first group's flashes run on the BMCs, and a new engine
    takes the job over: it polls the tasks already started instead of starting them again."""
    from appliance.services import firmware as sfw

    async with InprocRig(tmp_path, chassis=[4], engine=fast_engine(firmware_poll=0.1), update_seconds=3.0) as rig:
        _write_baseline(rig.work)
        emu = rig.blade("b001").emulator
        baseline = sfw.load_baseline(sfw.baseline_dirs(rig.work), BASELINE)
        job = sfw.submit_update(rig.store, baseline, sfw.targets(rig.store, pool="spares"), wave=2)
        assert rig.engine is not None
        rig.engine.wake()
        jobs = JobService(rig.store)

        def flashing() -> JobInfo | None:
            # Stopped once a started task is checkpointed (a stop between the BMC's answer and the
            # checkpoint would start that component again: that gap is the BMC call itself).
            info = jobs.get(job.id)
            started = redfish_emulator.update_history(emu)
            return info if started and any(k.startswith("fwTask:") for k in info.data) else None
        await rig.until("a flash under way", flashing, 60, every=0.05)
        await rig.stop_engine()
        with rig.store.read() as s:
            held = {r.name for r in s.query(BladeRow) if r.state == "maintenance"}
        assert held == {"b001", "b002"}, held       # the first group, held while flashed
        # Back while the BMCs still run the tasks (3 s each): the versions they report are the old
        # ones, so only the checkpointed task says the flash is under way.
        assert any(redfish_emulator.get_json(emu, f"/redfish/v1/TaskService/Tasks/{t}")["TaskState"] == "Running"
                   for t in ("anvil-1", "anvil-2"))
        rig.start_engine()

        info = await rig.until("job final", lambda: (lambda i: i if i.state in FINAL else None)(jobs.get(job.id)), 90)
        assert info.state == "succeeded", info.error
        calls = redfish_emulator.update_history(emu)
        by_blade = {b.system["uuid"]: b.name for b in rig.blades}
        flashed = sorted((by_blade[c.system], c.component) for c in calls)
        assert flashed == sorted((f"b{i:03d}", comp) for i in range(1, 5) for comp in ("BIOS", "NIC")), flashed
        for i in range(1, 5):
            assert (_version(rig, f"b{i:03d}", "BIOS"), _version(rig, f"b{i:03d}", "NIC")) == ("2.19.1", "22.31.6")
        with rig.store.read() as s:
            assert {r.name: r.state for r in s.query(BladeRow)} == {f"b{i:03d}": "spare" for i in range(1, 5)}


async def test_an_engine_stopped_before_the_bmcs_answer_finds_the_running_flash_instead_of_flashing_twice(
        tmp_path: Path) -> None:
    """The BMC takes b001's first SimpleUpdate but answers it 4 s later; the engine is stopped in
    between, so the task's URI was never kept. The new engine asks the BMC for the update it runs
    (its TaskService, the task's payload naming the component) and polls that task: every
    component is flashed once."""
    from appliance.services import firmware as sfw

    async with InprocRig(tmp_path, chassis=[2], engine=fast_engine(firmware_poll=0.1), update_seconds=3.0) as rig:
        _write_baseline(rig.work)
        b001 = rig.blade("b001")
        redfish_emulator.slow_next_update_answer(b001.emulator, b001.system, 4)
        baseline = sfw.load_baseline(sfw.baseline_dirs(rig.work), BASELINE)
        job = sfw.submit_update(rig.store, baseline, sfw.targets(rig.store, pool="spares"), wave=2)
        assert rig.engine is not None
        rig.engine.wake()
        jobs = JobService(rig.store)

        def asked() -> list[redfish_emulator.UpdateCall] | None:
            calls = [c for c in redfish_emulator.update_history(b001.emulator) if c.system == b001.system["uuid"]]
            return calls or None
        first = await rig.until("b001's first flash taken by its BMC", asked, 60, every=0.05)
        await rig.stop_engine()
        data = jobs.get(job.id).data
        comp = first[0].component
        assert f"fwTask:b001:{comp}" not in data, data   # the gap itself: the task's URI never kept
        rig.start_engine()

        info = await rig.until("job final", lambda: (lambda i: i if i.state in FINAL else None)(jobs.get(job.id)), 90)
        assert info.state == "succeeded", info.error
        by_blade = {b.system["uuid"]: b.name for b in rig.blades}
        flashed = sorted((by_blade[c.system], c.component) for c in redfish_emulator.update_history(b001.emulator))
        assert flashed == sorted((f"b{i:03d}", c) for i in (1, 2) for c in ("BIOS", "NIC")), flashed
        for i in (1, 2):
            assert (_version(rig, f"b{i:03d}", "BIOS"), _version(rig, f"b{i:03d}", "NIC")) == ("2.19.1", "22.31.6")
