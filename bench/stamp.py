"""Control-plane stamp time against the emulated rack: per blade, and 1 / 10 / 100 blades at once.

    .venv/bin/python bench/stamp.py                 # 1, 10 and 100 blades at once
    .venv/bin/python bench/stamp.py --smoke         # CI: 1 and 5 blades (< 30 s)
    .venv/bin/python bench/stamp.py --sizes 100 --profile out.prof    # cProfile the engine process
    .venv/bin/python bench/stamp.py --prometheus    # user's path, scraped by Debian's prometheus

Rack: sushy-tools Redfish emulators, one process per chassis of ``--per-chassis``
blades (25 by default: one process serving 100 systems is itself a bottleneck), with
the power delay turned down to 0-0.2 s (sushy-tools' own is 1-11 s), plus one snmpsim
switch with every blade's two NICs cabled to it. The appliance side is an in-process
``Engine`` with the production ``Hardware`` (real Redfish and
SNMP drivers) and boot service on a SQLite store (appliance.lab.inproc), with the same
settings ``anvil serve`` uses.

Each round imports N profiles (2 NICs, native + tagged VLANs, virtual MACs, network
boot), submits N assigns at once through JobService, and waits until all succeeded.
Per-blade time = the power-on step's finish minus the job's creation (request to
powered on, identity, VLANs and boot set). Wall = first submit to the last blade
powered on (DESIGN §5's measure); "done" = to the last job succeeded, which for a stamp
includes the boot callback that the emulated OS of each blade posts to the boot service
running in this process. Every round is then released (timed too) so the next one has spares.
Prints a table, then one JSON line (also written to ``--json FILE``).

``--prometheus`` (the user's path, ``--rest`` implied): a real Prometheus (Debian's package, in the
bench's temporary folder, on a loopback port, scraping every second) scrapes the appliance's
``[metrics] listen`` for the whole run; afterwards the bench asks Prometheus, not the appliance, for
each step's duration quantiles (``histogram_quantile`` over the ``rate`` of
``anvil_job_step_duration_seconds_bucket`` by step, over the run) and prints them per job kind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import math
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import promrig  # bench/promrig.py
import userpath  # bench/userpath.py: the script's own folder is first on sys.path
from sqlalchemy import select

from appliance.domain.states import ACTIVE_JOB_STATES
from appliance.engine.model import EngineSettings
from appliance.engine.runner import Engine
from appliance.engine.steps import KINDS
from appliance.lab import procs
from appliance.lab.inproc import InprocRig
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.store import Store
from appliance.store.tables import JobRow, JobStepRow
from profiles import bench_profile

POWER_DELAY = (0.0, 0.2)
TARGET_PER_BLADE = 2.0      # DESIGN §5
TARGET_100_WALL = 15.0
IRONIC_100_WALL = (16.8, 18.7)   # ../shared/lab/peer-ironic.md: 100 nodes, fake-hardware, enroll → active
ACTIVE = [s.value for s in ACTIVE_JOB_STATES]



def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def _wait_final(store: Store, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    def unfinished() -> str | None:
        with store.read() as s:
            return s.scalar(select(JobRow.id).where(JobRow.id.in_(ids), JobRow.state.in_(ACTIVE)).limit(1))

    # The measuring side polls off the event loop (the engine's loop is what is being measured).
    while time.monotonic() < deadline:
        if await asyncio.to_thread(unfinished) is None:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"jobs not final within {timeout:g} s")


def _cpu(rig: InprocRig) -> dict[str, float]:
    return {
        "appliance (engine + drivers, this process)": procs.cpu_seconds(os.getpid()),
        "redfish emulators": sum(procs.cpu_seconds(e.proc.pid) for e in rig.emulators),
        "snmpsim switch": procs.cpu_seconds(rig.switch.pid) if rig.switch and rig.switch.pid else 0.0,
    }


async def _round(store: Store, engine: Engine, names: list[str], kind: str, timeout: float,
                 rack: InprocRig | None = None) -> dict[str, Any]:
    cpu0 = _cpu(rack) if rack else {}
    jobs = JobService(store)
    start = datetime.now(UTC)
    t0 = time.monotonic()
    submit = jobs.submit_assign if kind == "stamp" else jobs.submit_release
    ids = [(await asyncio.to_thread(submit, name, tenant="bench")).id for name in names]
    engine.wake()
    submitted = time.monotonic() - t0
    await _wait_final(store, ids, timeout)
    with store.read() as s:
        rows = {j.id: j for j in s.scalars(select(JobRow).where(JobRow.id.in_(ids)))}
        step_rows = list(s.scalars(select(JobStepRow).where(JobStepRow.job_id.in_(ids))))
    power = {r.job_id: r.finished_at for r in step_rows
             if r.name in ("power-on", "power-off") and r.finished_at is not None}
    took: dict[str, list[float]] = {}
    for r in step_rows:
        if r.started_at and r.finished_at:
            took.setdefault(r.name, []).append((_aware(r.finished_at) - _aware(r.started_at)).total_seconds())
    cpu = {k: round(v - cpu0[k], 2) for k, v in _cpu(rack).items()} if rack else {}
    bad = {j.id: (j.state, j.error) for j in rows.values() if j.state != "succeeded"}
    last = max(_aware(j.finished_at) for j in rows.values() if j.finished_at)
    per = [(_aware(power[i]) - _aware(rows[i].created_at)).total_seconds() for i in ids if power.get(i)]
    last_power = max((_aware(power[i]) for i in ids if power.get(i)), default=last)
    return {
        "n": len(names), "kind": kind, "wall_s": round((last_power - start).total_seconds(), 3),
        "wall_done_s": round((last - start).total_seconds(), 3),
        "submit_s": round(submitted, 3),
        "per_blade_median_s": round(statistics.median(per), 3) if per else None,
        "per_blade_p95_s": round(_percentile(per, 0.95), 3) if per else None,
        "per_blade_max_s": round(max(per), 3) if per else None,
        "not_succeeded": bad,
        "cpu_s": cpu,
        # Last attempt of each step, start to finish: where a job's time goes.
        "steps_median_max_s": {k: [round(statistics.median(v), 3), round(max(v), 3)] for k, v in took.items()},
    }


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sizes = [1, 5] if args.smoke else args.sizes
    blades = max(sizes)
    chassis = [min(args.per_chassis, blades - c * args.per_chassis)
               for c in range(math.ceil(blades / args.per_chassis))]
    results: list[dict[str, Any]] = []
    t_setup = time.monotonic()
    # The engine and the boot service run in this process, with the production drivers, as
    # `anvil serve` runs them; the rack's emulated OS posts its boot callback there (DESIGN §7).
    async with InprocRig(work, chassis=chassis, power_delay=POWER_DELAY, engine=EngineSettings()) as rig:
        setup_s = time.monotonic() - t_setup
        assert rig.engine is not None
        profiles = ProfileService(rig.store)
        serial = 0
        plan = [("cold", 1)] + [("", n) for n in sizes]
        for label, n in plan:
            names = []
            for _ in range(n):
                serial += 1
                name = f"p{serial:04d}"
                profiles.import_document(bench_profile(name, serial, prefix="b0"))
                names.append(name)
            prof = cProfile.Profile() if args.profile and n == max(sizes) and not label else None
            if prof is not None:
                prof.enable()
            # The first round pays the drivers' one-time start (pysnmp engine and MIBs, HTTP
            # connections): reported as "cold", kept out of the targets.
            results.append({**await _round(rig.store, rig.engine, names, "stamp", args.timeout, rig),
                            "cold": bool(label)})
            if prof is not None:
                prof.disable()
                prof.dump_stats(args.profile)
            results.append({**await _round(rig.store, rig.engine, names, "unstamp", args.timeout),
                            "cold": bool(label)})
    return {"setup_s": round(setup_s, 2), "chassis": len(chassis), "per_chassis": args.per_chassis,
            "power_delay_s": list(POWER_DELAY), "rounds": results}


def _report(out: dict[str, Any]) -> list[str]:
    lines = [
        "Anvil stamp benchmark: IN-PROCESS (engine objects in the benchmark's process; no REST, no TLS)",
        f"  power delay: SHORT, {out['power_delay_s'][0]:g}-{out['power_delay_s'][1]:g} s per power change "
        "(sushy-tools' own fake driver takes 1-11 s; DESIGN §7)",
        f"  rack: {out['chassis']} sushy-tools process(es), one per chassis of up to {out['per_chassis']} "
        "Redfish blades; 1 snmpsim switch; SQLite store; in-process Engine + Hardware (real drivers)",
        "  ->on = first submit -> last blade's power-on confirmed; ->done = first submit -> last job succeeded "
        "(a stamp: boot callback in)",
        "  per blade = its job created -> its power-on step finished (median, p95, max); submit = all jobs in the "
        "store; cold = the first round after start",
        "",
        f"  {'kind':<14}{'N':>5}{'->on s':>9}{'->done s':>10}{'blade med':>11}{'p95':>7}{'max':>7}{'submit s':>10}"
        "  failed",
    ]
    for r in out["rounds"]:
        kind = r["kind"] + ("(cold)" if r.get("cold") else "")
        lines.append(f"  {kind:<14}{r['n']:>5}{r['wall_s']:>9.2f}{r['wall_done_s']:>10.2f}"
                     f"{r['per_blade_median_s'] or 0:>11.2f}"
                     f"{r['per_blade_p95_s'] or 0:>7.2f}{r['per_blade_max_s'] or 0:>7.2f}{r['submit_s']:>10.2f}"
                     f"  {len(r['not_succeeded'])}")
    biggest = max((r for r in out["rounds"] if r["kind"] == "stamp"), key=lambda r: r["n"])
    lines.append(f"  steps of stamp N={biggest['n']} (median / max s): " + ", ".join(
        f"{k} {v[0]:.2f}/{v[1]:.2f}" for k, v in biggest["steps_median_max_s"].items() if v[1] >= 0.05))
    if biggest.get("cpu_s"):
        total = sum(biggest["cpu_s"].values())
        lines.append(f"  CPU seconds during stamp N={biggest['n']} (2 cores = {2 * biggest['wall_s']:.1f} CPU-s "
                     "available): " + ", ".join(f"{k} {v:.1f}" for k, v in biggest["cpu_s"].items())
                     + f"; total {total:.1f}")
    stamps = {r["n"]: r for r in out["rounds"] if r["kind"] == "stamp" and not r.get("cold")}
    lines.append("")
    one = stamps.get(1)
    cold = next((r for r in out["rounds"] if r["kind"] == "stamp" and r.get("cold")), None)
    if one:
        ok = one["per_blade_median_s"] <= TARGET_PER_BLADE
        lines.append(f"  target per blade <= {TARGET_PER_BLADE:g} s: {one['per_blade_median_s']:.2f} s "
                     f"({'met' if ok else 'MISSED'})"
                     + (f"; cold first round {cold['per_blade_median_s']:.2f} s "
                        f"({'met' if cold['per_blade_median_s'] <= TARGET_PER_BLADE else 'MISSED'})" if cold else ""))
    big = stamps.get(100)
    if big:
        ok = big["wall_s"] <= TARGET_100_WALL
        lo, hi = IRONIC_100_WALL
        verdict = "met" if ok else "MISSED"
        lines.append(f"  target 100 at once <= {TARGET_100_WALL:g} s: {big['wall_s']:.2f} s ({verdict})")
        lines.append(f"  vs Ironic 39 fake-hardware 100-node deploy wall {lo}-{hi} s (peer-ironic.md): "
                     f"ratio {big['wall_s'] / hi:.2f}-{big['wall_s'] / lo:.2f} (Anvil/Ironic; < 1 is faster). "
                     "Ironic's steps are no-ops; Anvil's drive real emulated BMCs and an SNMP switch.")
    return lines


# ---- the user's path: a real `anvil serve` (shipped defaults), REST over TLS ----------------------

TARGET_100_FAKE = 3.5   # DESIGN §5: 100 at once through the REST API, fake BMC driver
REST_CLIENTS = 16       # connections the client submits over, as the Ironic peer's 16 client threads


def _power_steps(app: userpath.Appliance, ids: list[str]) -> dict[str, datetime]:
    """Each job's power-on/off step finish, from the appliance's store (REST shows no step times)."""
    store = app.store()
    try:
        with store.read() as s:
            rows = s.execute(select(JobStepRow.job_id, JobStepRow.finished_at).where(
                JobStepRow.job_id.in_(ids), JobStepRow.name.in_(("power-on", "power-off")))).all()
    finally:
        store.close()
    return {job: _aware(at) for job, at in rows if at is not None}


async def _rest_round(app: userpath.Appliance, rest: userpath.Rest, rack: userpath.Rack | None, names: list[str],
                      kind: str, args: argparse.Namespace) -> dict[str, Any]:
    cpu0 = {"anvil serve": app.cpu(), **(rack.cpu() if rack else {})}
    action = "assign" if kind == "stamp" else "release"
    start = datetime.now(UTC)
    t0 = time.monotonic()

    async def submit(name: str) -> tuple[str, float]:
        job = await rest.call("POST", f"/api/v1/profiles/{name}/{action}", {"tenant": "bench"})
        return str(job["id"]), time.monotonic() - t0

    sent = await asyncio.gather(*(submit(n) for n in names))
    ids = [i for i, _ in sent]
    wanted = set(ids)
    seen: dict[str, float] = {}
    jobs: dict[str, dict[str, Any]] = {}
    deadline = t0 + args.timeout
    # What a user's script does: poll the job list (one request) until every job is over.
    for _ in range(int(args.timeout / args.poll) + 2):
        page = await rest.call("GET", "/api/v1/jobs",
                               params={"tenant": "bench", "limit": str(min(1000, len(ids) + 10))})
        now = time.monotonic() - t0
        for j in page["items"]:
            if j["id"] in wanted and j["state"] in userpath.FINAL and j["id"] not in seen:
                seen[j["id"]], jobs[j["id"]] = now, j
        if len(seen) == len(ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(args.poll)
    if len(seen) < len(ids):
        raise TimeoutError(f"{kind} of {len(ids)}: {len(ids) - len(seen)} job(s) not over within {args.timeout:g} s")
    cpu = {"anvil serve": app.cpu(), **(rack.cpu() if rack else {})}
    power = await asyncio.to_thread(_power_steps, app, ids)
    finished = [userpath.iso(j["finishedAt"]) for j in jobs.values()]
    on = [(power[i] - start).total_seconds() for i in ids if i in power]
    bad = {i: (j["state"], j["error"]) for i, j in jobs.items() if j["state"] != "succeeded"}
    return {
        "n": len(names), "kind": kind,
        "submit_s": round(max(s for _, s in sent), 3),
        "on_s": round(max(on), 3) if on else None,
        "active_s": round(max((f - start).total_seconds() for f in finished if f), 3),
        "seen_s": round(max(seen.values()), 3),
        "per_blade_on_median_s": round(statistics.median(on), 3) if on else None,
        "per_blade_on_p95_s": round(_percentile(on, 0.95), 3) if on else None,
        "per_blade_on_max_s": round(max(on), 3) if on else None,
        "not_succeeded": bad,
        "cpu_s": {k: round(v - cpu0[k], 2) for k, v in cpu.items()},
    }


def _fake_enrollment(i: int) -> dict[str, Any]:
    name = f"f{i:03d}"
    return {"name": name, "bmc": f"fake://{name}", "driver": "fake", "username": "bench", "password": "bench",
            "cpus": 32, "memoryGiB": 256, "chassis": f"fake{i // 16}", "slot": i % 16,
            "nics": [{"name": f"eth{k}", "mac": f"aa:bb:00:{i >> 8:02x}:{i & 0xFF:02x}:{k:02x}"} for k in range(2)]}


async def _rest_run(args: argparse.Namespace, work: Path, app: userpath.Appliance,
                    rack: userpath.Rack | None, sizes: list[int], cold: int,
                    prom: promrig.Prometheus | None = None) -> dict[str, Any]:
    t_setup = time.monotonic()
    app.start()
    if prom is not None:
        # Scraped before the first stamp: a 3 s run otherwise fits in Prometheus' own start and the
        # first scrapes, leaving 2 points (seen in CI).
        await asyncio.to_thread(prom.wait_up)
    results: list[dict[str, Any]] = []
    async with userpath.Rest(app, connections=REST_CLIENTS) as rest:
        blades = max([cold, *sizes])
        if rack is not None:
            rack.enroll_switch(app)
            await userpath.enroll(rest, (rack.enrollment(b) for b in rack.blades))
        else:
            await userpath.enroll(rest, (_fake_enrollment(i) for i in range(1, blades + 1)))
        serial = 0
        plan = [(True, cold)] + [(False, n) for n in sizes]
        docs: list[list[str]] = []
        for _, n in plan:
            names = [f"p{serial + k + 1:04d}" for k in range(n)]
            serial += n
            await userpath.import_profiles(rest, (bench_profile(nm, int(nm[1:]), prefix="b0", image=rack is not None)
                                                  for nm in names))
            docs.append(names)
        setup_s = time.monotonic() - t_setup
        for (is_cold, _), names in zip(plan, docs, strict=True):
            # The cold round is the first stamp this `anvil serve` ever runs: drivers, TLS sessions to
            # BMCs and the SNMP engine start inside it, as they do for a user.
            results.append({**await _rest_round(app, rest, rack, names, "stamp", args), "cold": is_cold})
            results.append({**await _rest_round(app, rest, rack, names, "unstamp", args), "cold": is_cold})
    return {"path": "rest", "driver": args.driver, "setup_s": round(setup_s, 2), "timers": app.timers(),
            "timers_text": app.describe_timers(), "poll_s": args.poll, "clients": REST_CLIENTS,
            "chassis": len(rack.chassis) if rack else 0, "per_chassis": args.per_chassis,
            "power_delay_s": list(args.power_delay) if rack else None, "rounds": results}


def _prometheus_steps(prom: promrig.Prometheus, began: float) -> dict[str, Any]:
    """The step quantiles Prometheus computes from what it scraped over the whole run."""
    # Wait for a scrape that began after the last job ended (plus one interval of margin), so the
    # last tries are in the series Prometheus holds.
    over = time.time() + 1.5
    prom.until("a scrape after the run", lambda: [r for r in prom.query('timestamp(up{job="anvil"})')
                                                  if float(r["value"][1]) >= over], 15)
    window = f"{math.ceil(time.monotonic() - began) + 5}s"
    kinds = {kind: promrig.step_quantiles(prom, window, kind) for kind in ("stamp", "unstamp")}
    scrapes = prom.query(f'count_over_time(up{{job="anvil"}}[{window}])')
    return {"window": window, "scrapes": int(float(scrapes[0]["value"][1])) if scrapes else 0, "steps": kinds}


def run_rest(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    sizes = [1, 5] if args.smoke else args.sizes
    cold = 1 if args.smoke else args.cold
    blades = max([cold, *sizes])
    with contextlib.ExitStack() as stack:
        app = stack.enter_context(userpath.Appliance(work))
        prom = None
        if args.prometheus:
            # Started first: it scrapes the appliance from its first second (a target down until then).
            prom = stack.enter_context(promrig.Prometheus(work / "prometheus",
                                                          [promrig.Target("anvil", app.metrics_address)]))
        began = time.monotonic()
        watch = stack.enter_context(userpath.StallWatch())
        if args.driver == "fake":
            out = asyncio.run(_rest_run(args, work, app, None, sizes, cold, prom))
        else:
            chassis = [min(args.per_chassis, blades - c * args.per_chassis)
                       for c in range(math.ceil(blades / args.per_chassis))]
            with userpath.Rack(work / "rack", app.boot_url, chassis, tuple(args.power_delay)) as rack:
                out = asyncio.run(_rest_run(args, work, app, rack, sizes, cold, prom))
        if prom is not None:
            out["prometheus"] = _prometheus_steps(prom, began)
    return {**out, "machine": watch.summary(), "machine_text": watch.describe()}


def _report_prometheus(prom: dict[str, Any]) -> list[str]:
    lines = ["", f"  Prometheus (Debian's, scraping /metrics every {promrig.SCRAPE_INTERVAL}; {prom['scrapes']} "
                 "scrapes over the run): step duration quantiles, histogram_quantile(q, sum by (le, step) "
                 f"(last_over_time(anvil_job_step_duration_seconds_bucket{{kind=K,outcome=\"done\"}}[{prom['window']}])))",
             f"  {'kind':<9}{'step':<22}{'tries':>7}{'p50 s':>9}{'p95 s':>9}{'p99 s':>9}"]
    for kind, steps in prom["steps"].items():
        order = KINDS[kind].step_names if kind in KINDS else []
        for step, q in sorted(steps.items(), key=lambda i: order.index(i[0]) if i[0] in order else len(order)):
            lines.append(f"  {kind:<9}{step:<22}{q.get('tries', 0):>7.0f}{q.get('p50', 0):>9.3f}"
                         f"{q.get('p95', 0):>9.3f}{q.get('p99', 0):>9.3f}")
    if not any(prom["steps"].values()):
        lines.append("  (no step histogram in Prometheus)")
    lines.append("  (quantiles are interpolated within histogram buckets: "
                 "0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 ... s)")
    return lines


def _report_rest(out: dict[str, Any]) -> list[str]:
    fake = out["driver"] == "fake"
    if fake:
        rack = "the `fake` BMC driver inside anvil serve (no BMC, no switch; local boot: active at power-on)"
    else:
        lo, hi = out["power_delay_s"]
        rack = (f"{out['chassis']} sushy-tools process(es) of up to {out['per_chassis']} Redfish blades, power delay "
                f"{lo:g}-{hi:g} s per change{' (SHORT; sushy-tools own: 1-11 s)' if hi < 1 else ''}; 1 snmpsim "
                "switch; image boot: active once the blade's emulated OS posts its boot callback")
    lines = [
        "Anvil stamp benchmark: USER PATH (a real `anvil serve`, REST API over HTTPS with the admin token)",
        f"  {out['timers_text']}",
        f"  rack: {rack}; SQLite store",
        f"  client: POST /api/v1/profiles/NAME/assign (release) for all N at once over {out['clients']} TLS "
        f"connections; follows GET /api/v1/jobs every {out['poll_s']:g} s",
        "  submit = all N answered 202; ->on = request -> last blade's power-on confirmed (engine step record); "
        "->active = request -> last job succeeded (job finishedAt); seen = request -> client saw the last job over",
        "  per blade = request -> its power-on confirmed (median, p95, max); cold = the first round this anvil "
        "serve runs (counted, not discarded)",
        "",
        f"  {'kind':<14}{'N':>5}{'submit s':>10}{'->on s':>9}{'->active s':>12}{'seen s':>9}{'blade med':>11}"
        f"{'p95':>7}{'max':>7}  failed",
    ]
    for r in out["rounds"]:
        kind = r["kind"] + ("(cold)" if r.get("cold") else "")
        lines.append(f"  {kind:<14}{r['n']:>5}{r['submit_s']:>10.2f}{r['on_s'] or 0:>9.2f}{r['active_s']:>12.2f}"
                     f"{r['seen_s']:>9.2f}{r['per_blade_on_median_s'] or 0:>11.2f}{r['per_blade_on_p95_s'] or 0:>7.2f}"
                     f"{r['per_blade_on_max_s'] or 0:>7.2f}  {len(r['not_succeeded'])}")
    biggest = max((r for r in out["rounds"] if r["kind"] == "stamp"), key=lambda r: r["n"])
    total = sum(biggest["cpu_s"].values())
    lines.append(f"  CPU seconds during stamp N={biggest['n']} ({2 * biggest['active_s']:.1f} CPU-s on 2 cores): "
                 + ", ".join(f"{k} {v:.1f}" for k, v in biggest["cpu_s"].items()) + f"; total {total:.1f}")
    lines.append(f"  {out['machine_text']}")
    if out.get("prometheus"):
        lines += _report_prometheus(out["prometheus"])
    lines.append("")
    stamps = [r for r in out["rounds"] if r["kind"] == "stamp"]
    for r in stamps:
        label = f"N={r['n']}{' cold' if r.get('cold') else ''}"
        if r["n"] == 1:
            v = r["on_s"] or 0
            lines.append(f"  target per blade <= {TARGET_PER_BLADE:g} s (request -> powered on), {label}: {v:.2f} s "
                         f"({'met' if v <= TARGET_PER_BLADE else 'MISSED'})")
        if r["n"] == 100:
            target = TARGET_100_FAKE if fake else TARGET_100_WALL
            v = r["active_s"] if fake else (r["on_s"] or 0)
            what = "request -> all active" if fake else "request -> all powered on"
            lines.append(f"  target 100 at once <= {target:g} s ({what}), {label}: {v:.2f} s "
                         f"({'met' if v <= target else 'MISSED'}); all active {r['active_s']:.2f} s")
            if fake:
                lo, hi = IRONIC_100_WALL
                lines.append(f"  vs Ironic 39 fake-hardware, 100 nodes enroll -> active {lo}-{hi} s (peer-ironic.md): "
                             f"{lo / r['active_s']:.1f}-{hi / r['active_s']:.1f}x faster (target >= 5x)")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CI mode: 1 and 5 blades")
    ap.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1, 10, 100])
    ap.add_argument("--per-chassis", type=int, default=25, help="Redfish blades per emulator process")
    ap.add_argument("--timeout", type=float, default=300.0, help="bound on each round, s")
    ap.add_argument("--profile", default=None, help="cProfile the largest stamp round into this file (in-process)")
    ap.add_argument("--rest", action="store_true",
                    help="the user's path: a real anvil serve with shipped defaults, stamped through REST over TLS")
    ap.add_argument("--driver", choices=["redfish", "fake"], default="redfish",
                    help="with --rest: emulated Redfish BMCs, or the in-process fake BMC driver (implies --rest)")
    ap.add_argument("--cold", type=int, default=1, help="with --rest: blades in the cold first round")
    ap.add_argument("--poll", type=float, default=0.25, help="with --rest: seconds between the client's job polls")
    ap.add_argument("--power-delay", type=lambda v: tuple(float(x) for x in v.split(",")), default=POWER_DELAY,
                    help="with --rest: LO,HI seconds an emulated power change takes (default 0,0.2; 1,11 = sushy's)")
    ap.add_argument("--prometheus", action="store_true",
                    help="the user's path (--rest implied), scraped by Debian's prometheus; prints the step "
                         "duration quantiles Prometheus computes from the histograms")
    ap.add_argument("--json", default=None, help="also write the JSON result here")
    args = ap.parse_args(argv)
    rest = args.rest or args.driver == "fake" or args.prometheus
    with tempfile.TemporaryDirectory(prefix="anvil-bench-stamp-") as tmp:
        out = run_rest(args, Path(tmp)) if rest else asyncio.run(run(args, Path(tmp)))
    for line in (_report_rest(out) if rest else _report(out)):
        print(line)
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 1 if any(r["not_succeeded"] for r in out["rounds"]) else 0


if __name__ == "__main__":
    sys.exit(main())
