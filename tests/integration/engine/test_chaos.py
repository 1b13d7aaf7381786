"""Chaos: stamp/release jobs while ``anvil serve`` is killed with SIGKILL at random moments.

Six profiles on a rack of six Redfish blades and the snmp switch. For each profile, as
soon as its previous job is final the next is submitted (assign if the profile is
unassigned, release if it is active) through JobService, straight into the SQLite
store, until 50 jobs exist; meanwhile serve is SIGKILLed 0.3-2 s after each start
(20 times, each restart at once) while jobs run; after the 20th kill serve is left
running, the remaining jobs up to 50 are submitted, and every job must end succeeded
or rolled_back, with store, BMCs and switch agreeing, and the BMCs' own power history showing no profile on two
powered-on blades at once and no blade running two profiles without a power-off between.

The seed is printed; rerun one with ANVIL_CHAOS_SEED=<seed>.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from appliance.domain.states import ACTIVE_JOB_STATES, JobState
from appliance.drivers.protocols import PortConfig
from appliance.errors import Conflict
from appliance.lab import redfish_emulator
from appliance.services.jobs import JobService
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeRow, JobRow, ProfileRow
from tests.integration.engine.rig import PARKING_VLAN, PROFILE_VLANS, Lab, profile_macs, rig
from tests.support import world, world_io

BLADES = 6
PROFILES = 6
JOBS = 50
MIN_KILLS = 20
KILL_PHASE_LIMIT = 180.0   # s; bounds the kill phase (a start-up takes 2-6 s on a busy 2-core machine)
SETTLE_LIMIT = 90.0        # s with serve left running for every job to end
ACTIVE = {s.value for s in ACTIVE_JOB_STATES}


def _submit_next(jobs: JobService, store: Store, last: dict[str, str | None], names: list[str],
                 submitted: list[str], notes: list[str]) -> None:
    """For each profile whose previous job is final: assign if unassigned, release if active."""
    with store.read() as s:
        states = dict(s.execute(select(ProfileRow.name, ProfileRow.state)).all())
        finals = {j: st for j, st in s.execute(select(JobRow.id, JobRow.state)
                                               .where(JobRow.id.in_([v for v in last.values() if v]))).all()}
    for name in names:
        if len(submitted) >= JOBS:
            return
        prev = last[name]
        if prev is not None and finals.get(prev) in ACTIVE:
            continue
        try:
            if states[name] == "unassigned":
                info = jobs.submit_assign(name, tenant="acme")
            elif states[name] == "active":
                info = jobs.submit_release(name, tenant="acme")
            else:
                notes.append(f"{name} is {states[name]} after its job {prev} ended ({finals.get(prev)})")
                continue
        except Conflict as exc:
            notes.append(f"{name}: submit refused: {exc}")
            continue
        last[name] = info.id
        submitted.append(info.id)


def _check_consistency(store: Store, lab: Lab, names: list[str]) -> list[str]:
    """What the store, the emulated BMCs and the switch disagree on (empty when they agree)."""
    problems: list[str] = []
    inventory = lab.inventory(store)
    with store.read() as s:
        live = s.execute(select(ProfileRow.name, BladeRow.name).join(BindingRow, BindingRow.profile_id == ProfileRow.id)
                         .join(BladeRow, BladeRow.id == BindingRow.blade_id).where(BindingRow.state == "live")).all()
        ever = set(s.scalars(select(BladeRow.name).join(BindingRow, BindingRow.blade_id == BladeRow.id)))
        profiles = {p.name: p.state for p in s.scalars(select(ProfileRow))}
        blades = {b.name: b.state for b in s.scalars(select(BladeRow))}
    bound = dict(live)
    ports = [p for _, nic_ports in inventory.values() for p in nic_ports]
    switch = lab.read_ports(store, ports)
    for name in names:
        state = profiles[name]
        if name in bound and state != "active":
            problems.append(f"profile {name} is bound to {bound[name]} but {state}")
        if name not in bound and state != "unassigned":
            problems.append(f"profile {name} has no binding but is {state}")
    for profile, blade in bound.items():
        n = names.index(profile) + 1
        url, nic_ports = inventory[blade]
        system = lab.system(url)
        if blades[blade] != "active":
            problems.append(f"blade {blade} holds {profile} but is {blades[blade]}")
        if system["PowerState"] != "On":
            problems.append(f"blade {blade} ({profile}) is {system['PowerState']}")
        macs = [e["MACAddress"] for e in lab.ethernet_functions(url)]
        if macs != list(profile_macs(n)):
            problems.append(f"blade {blade} ({profile}) shows MACs {macs}, expected {list(profile_macs(n))}")
        for port, (native, tagged) in zip(nic_ports, PROFILE_VLANS, strict=True):
            if switch[port] != PortConfig(native=native, tagged=tagged, up=True):
                problems.append(f"{profile} on {blade}: port {port} is {switch[port]}")
    for blade in sorted(ever - set(bound.values())):
        url, nic_ports = inventory[blade]
        system = lab.system(url)
        if blades[blade] != "spare":
            problems.append(f"unbound blade {blade} is {blades[blade]}")
        if system["PowerState"] != "Off":
            problems.append(f"unbound blade {blade} is {system['PowerState']}")
        eth = lab.ethernet_functions(url)
        if any(e["MACAddress"] != e["PermanentMACAddress"] for e in eth):
            problems.append(f"unbound blade {blade} still shows MACs {[e['MACAddress'] for e in eth]}")
        for port in nic_ports:
            if switch[port] != PortConfig(native=PARKING_VLAN, tagged=frozenset(), up=True):
                problems.append(f"unbound blade {blade}: port {port} is {switch[port]}")
    # The store's unique indexes make "one live binding per profile and per blade" and "one holder
    # per identity" true of the store whatever happened; the blades' own power history (read
    # last: reading a system above applies its pending power change) says whether a profile
    # ever ran on two blades at once, or a blade ran two profiles without a power-off between.
    problems += world_violations(lab, inventory, store)
    return problems


def world_violations(lab: Lab, inventory: dict[str, tuple[str, list[tuple[str, str]]]], store: Store) -> list[str]:
    """What the Redfish emulator's power history and the bindings' times say really ran twice."""
    blade_of = {url.rsplit("/", 1)[1]: blade for blade, (url, _ports) in inventory.items()}
    changes = redfish_emulator.read_power_history(lab.lab_dir / "redfish" / "state")
    assert changes, "the emulator recorded no power change at all"
    return world.violations(world_io.power(changes, blade_of), world_io.stamps(store))


@pytest.mark.slow
@pytest.mark.timeout(540)
def test_jobs_survive_random_sigkills_of_the_appliance(tmp_path: Path) -> None:
    seed = int(os.environ.get("ANVIL_CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
    rng = random.Random(seed)
    print(f"\nchaos seed {seed} (rerun: ANVIL_CHAOS_SEED={seed})")
    names = [f"app-{i:02d}" for i in range(1, PROFILES + 1)]
    with rig(tmp_path, redfish=BLADES) as (anvil, lab, serve):
        anvil.import_profiles([(n, i) for i, n in enumerate(names, 1)])
        store = anvil.store()
        try:
            jobs = JobService(store)
            last: dict[str, str | None] = dict.fromkeys(names)
            submitted: list[str] = []
            notes: list[str] = []
            kills = 0
            t0 = time.monotonic()
            serve.start()
            while time.monotonic() - t0 < KILL_PHASE_LIMIT and kills < MIN_KILLS:
                kill_at = time.monotonic() + rng.uniform(0.3, 2.0)
                while time.monotonic() < kill_at:
                    _submit_next(jobs, store, last, names, submitted, notes)
                    time.sleep(0.05)
                serve.kill()
                kills += 1
                serve.start()
            kill_phase = time.monotonic() - t0

            settle_deadline = time.monotonic() + SETTLE_LIMIT
            while time.monotonic() < settle_deadline:
                _submit_next(jobs, store, last, names, submitted, notes)
                with store.read() as s:
                    open_jobs = s.scalar(select(func.count()).select_from(JobRow).where(JobRow.state.in_(ACTIVE)))
                if len(submitted) >= JOBS and not open_jobs:
                    break
                time.sleep(0.1)
            wall = time.monotonic() - t0

            with store.read() as s:
                rows = list(s.execute(select(JobRow.id, JobRow.kind, JobRow.state, JobRow.error)).all())
            by_state = Counter(r.state for r in rows)
            by_kind_state = Counter(f"{r.kind}:{r.state}" for r in rows)
            bad = [r for r in rows if r.state not in (JobState.SUCCEEDED, JobState.ROLLED_BACK)]
            startup = sorted(serve.startup_seconds)
            print(f"chaos: {len(rows)} jobs {dict(by_state)} ({dict(by_kind_state)}); {kills} SIGKILLs; "
                  f"kill phase {kill_phase:.1f} s, wall {wall:.1f} s; serve start-up median "
                  f"{startup[len(startup) // 2]:.2f} s over {len(startup)} starts")
            for r in rows:
                if r.state == JobState.ROLLED_BACK:
                    print(f"  rolled back {r.kind} {r.id}: {r.error}")
            for note, count in Counter(notes).items():
                print(f"  note ({count}x): {note}")
            for r in bad:
                print(f"  NOT OK {r.kind} {r.id}: {r.state}: {r.error}")

            problems = _check_consistency(store, lab, names)
            for p in problems:
                print(f"  INCONSISTENT: {p}")
            assert kills >= MIN_KILLS
            assert len(rows) >= JOBS, f"only {len(rows)} jobs submitted in {KILL_PHASE_LIMIT:g} s"
            assert not bad, [(r.kind, r.id, r.state, r.error) for r in bad]
            assert not problems, problems
        finally:
            store.close()
