"""DR rehearsal RTO at the recovery site against the emulated rack: 20 and 100 profiles.

    .venv/bin/python bench/dr.py                 # 20, then 100 profiles
    .venv/bin/python bench/dr.py --smoke         # CI: 5 profiles (< 60 s)

The recovery site is an in-process ``Engine`` with the production ``Hardware`` (real Redfish and
SNMP drivers) and boot service on a SQLite store (appliance.lab.inproc), against sushy-tools
Redfish emulators (one process per chassis of ``--per-chassis`` blades, power delay turned
down to 0-0.2 s; sushy-tools' own is 1-11 s) and one snmpsim switch. The primary is not
needed for a rehearsal: its profiles and its plan are put in the store as replication leaves
them (site lease held by the primary, the plan's origin the primary).

Each round runs ``anvil dr rehearse``'s job (appliance.dr.runs.submit) for a plan of N profiles
(two waves: 10 % "db" first, then the rest after them), and reads the run's report: the RTO of
the plan (submission to the last clone's stamp succeeded: clone made, VLANs, identity, power,
boot callback in) and of each profile, then the teardown time. Prints a table, then one JSON
line (also written to ``--json FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import userpath  # noqa: F401  (bench/userpath.py: puts the repository first on sys.path)
from sqlalchemy import select

from appliance.dr import runs
from appliance.dr.plan import parse
from appliance.dr.service import PlanService
from appliance.engine.model import EngineSettings
from appliance.lab.inproc import InprocRig
from appliance.services.profiles import ProfileService
from appliance.store import Store
from appliance.store.tables import DrPlanRow, JobRow, JobStepRow, ProfileRow
from profiles import bench_profile

POWER_DELAY = (0.0, 0.2)
# The rig's switch knows VLANs 1, 10, 20, 30, 100, 101, 200 (appliance.lab.snmp_switch): the recovery
# site's production VLANs keep the primary's numbers, its rehearsal VLANs are 10, 20, 30.
PLAN = """\
apiVersion: anvil/v1
kind: DrPlan
metadata: {{name: {name}}}
spec:
  recoverySite: bench-b
  profiles: [{{tenant: {tenant}}}]
  vlans: {{100: 100, 101: 101, 200: 200}}
  rehearsalVlans: {{100: 10, 101: 20, 200: 30}}
  dependencies: ["{first} before r*"]
"""


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _replicated(store: Store, names: list[str], tenant: str, plan_name: str, first: str, serial0: int) -> None:
    """The primary's profiles (a tenant per round) and plan as replication leaves them here."""
    profiles = ProfileService(store)
    for i, name in enumerate(names, serial0):
        profiles.import_document(bench_profile(name, i, prefix="d0").replace("tenant: bench", f"tenant: {tenant}"))
    plan = parse(PLAN.format(name=plan_name, first=first, tenant=tenant))
    with store.write() as s:
        for row in s.scalars(select(ProfileRow).where(ProfileRow.tenant == tenant)):
            row.site_lease = "bench-a"
        s.add(DrPlanRow(name=plan.name, recovery_site="bench-b", origin_site="bench-a", document=plan.document))


async def _round(rig: InprocRig, n: int, serial0: int, timeout: float) -> dict[str, Any]:
    db = max(1, n // 10)
    names = [f"db{i:03d}" for i in range(db)] + [f"r{i:03d}" for i in range(n - db)]
    plan_name = f"bench-{n}"
    await asyncio.to_thread(_replicated, rig.store, names, f"bench{n}", plan_name, "db*", serial0)
    t0 = time.monotonic()
    run = await asyncio.to_thread(runs.submit, rig.store, "rehearsal", plan_name, created_by="bench")
    assert rig.engine is not None and run.job_id is not None
    rig.engine.wake()
    deadline = time.monotonic() + timeout

    def state() -> str:
        with rig.store.read() as s:
            job = s.get(JobRow, run.job_id)
            return job.state if job is not None else "gone"
    while (st := await asyncio.to_thread(state)) in ("pending", "running", "waiting", "rolling_back"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"rehearsal of {n} not done in {timeout:g} s")
        await asyncio.sleep(0.25)
    wall = time.monotonic() - t0
    info = (await asyncio.to_thread(PlanService(rig.store).runs, plan_name))[0]

    def steps() -> dict[str, float]:
        with rig.store.read() as s:
            rows = s.scalars(select(JobStepRow).where(JobStepRow.job_id == run.job_id))
            return {r.name: round((_aware(r.finished_at) - _aware(r.started_at)).total_seconds(), 3)
                    for r in rows if r.started_at and r.finished_at}
    per = [p.rto_seconds for p in info.profiles if p.rto_seconds is not None]
    took = await asyncio.to_thread(steps)
    return {"n": n, "job": st, "run": info.state, "rto_s": info.rto_seconds, "wall_s": round(wall, 3),
            "profile_rto_median_s": round(statistics.median(per), 3) if per else None,
            "profile_rto_p95_s": round(_percentile(per, 0.95), 3) if per else None,
            "profile_rto_min_s": round(min(per), 3) if per else None,
            "waves": 1 + max((p.wave for p in info.profiles), default=0),
            "up": len(per), "failed": [f"{p.tenant}/{p.name}: {p.error}" for p in info.profiles
                                       if p.state == "failed"][:5],
            "steps_s": took}


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sizes = [5] if args.smoke else args.sizes
    blades = max(sizes)
    chassis = [min(args.per_chassis, blades - c * args.per_chassis)
               for c in range(math.ceil(blades / args.per_chassis))]
    t_setup = time.monotonic()
    out: list[dict[str, Any]] = []
    async with InprocRig(work, chassis=chassis, power_delay=POWER_DELAY, engine=EngineSettings()) as rig:
        setup_s = time.monotonic() - t_setup
        serial = 1
        for n in sizes:
            out.append(await _round(rig, n, serial, args.timeout))
            serial += n
    return {"setup_s": round(setup_s, 2), "chassis": len(chassis), "per_chassis": args.per_chassis,
            "power_delay_s": list(POWER_DELAY), "rounds": out}


def _report(out: dict[str, Any]) -> list[str]:
    lines = [
        "Anvil DR rehearsal benchmark: IN-PROCESS recovery site (engine objects in the benchmark's process; "
        "no REST, no TLS)",
        f"  power delay: SHORT, {out['power_delay_s'][0]:g}-{out['power_delay_s'][1]:g} s per power change "
        "(sushy-tools' own fake driver takes 1-11 s; DESIGN §7)",
        f"  rack: {out['chassis']} sushy-tools process(es) of up to {out['per_chassis']} Redfish blades; 1 snmpsim "
        "switch; SQLite store; in-process Engine + Hardware (real drivers) + boot service",
        "  RTO = rehearsal submitted -> the profile's clone stamped (rehearsal VLANs set, identity applied, powered "
        "on, boot callback in); plan RTO = the last profile's; two waves (10 % first, the rest after them)",
        "",
        f"  {'N':>5}{'plan RTO s':>12}{'profile med':>13}{'p95':>7}{'min':>7}{'teardown s':>12}{'wall s':>9}  "
        "run / failed",
    ]
    for r in out["rounds"]:
        lines.append(f"  {r['n']:>5}{r['rto_s'] or 0:>12.2f}{r['profile_rto_median_s'] or 0:>13.2f}"
                     f"{r['profile_rto_p95_s'] or 0:>7.2f}{r['profile_rto_min_s'] or 0:>7.2f}"
                     f"{r['steps_s'].get('teardown', 0):>12.2f}{r['wall_s']:>9.2f}  {r['run']} / {len(r['failed'])}")
    for r in out["rounds"]:
        lines.append(f"  steps of N={r['n']} (s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["steps_s"].items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CI mode: 5 profiles")
    ap.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[20, 100])
    ap.add_argument("--per-chassis", type=int, default=25, help="Redfish blades per emulator process")
    ap.add_argument("--timeout", type=float, default=900.0, help="bound on each rehearsal, s")
    ap.add_argument("--json", default=None, help="also write the JSON result here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="anvil-bench-dr-") as tmp:
        out = asyncio.run(run(args, Path(tmp)))
    for line in _report(out):
        print(line)
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if all(r["run"] == "succeeded" for r in out["rounds"]) else 1


if __name__ == "__main__":
    sys.exit(main())
