"""Control-plane failover time against the emulated rack: failure signal → spare powered on.

    .venv/bin/python bench/failover.py             # 20 failovers, one after another (in-process, FAST timers)
    .venv/bin/python bench/failover.py --smoke     # CI: 2 failovers
    .venv/bin/python bench/failover.py --events --poll 30   # detection by Redfish event
    .venv/bin/python bench/failover.py --shipped   # the user's path: ForceOff and hung-OS failures, shipped defaults
    .venv/bin/python bench/failover.py --hung      # the user's path, hung-OS failures only
    .venv/bin/python bench/failover.py --shipped --smoke   # CI: one of each, shipped timers

The user's path (``--shipped``, ``--hung``; bench/userpath.py): a real ``anvil serve`` in a
fresh state directory with no configuration file (the shipped monitor and engine timers of
appliance/config.py: 30 s polls, 3 bad polls to fail, heartbeats every 2 s with a 6.5 s
timeout swept every second, BMC events on), the same emulated rack enrolled through its REST
API over TLS, the protected profile imported, its domain created and the profile stamped
through that API. Before each failure the monitor has passed over the running blade once (so
it is subscribed to its BMC's events and has seen it healthy, as in a rack that has been up
a while); the failure then comes at a random moment of the poll cycle (0 to one interval
after that pass; ``--after-pass S`` bounds it to 0-S s). The CI smoke (``--shipped --smoke``)
fails within 2 s of the pass, when the monitor's next regular poll is furthest away, so what
notices the failure is one of the paths between polls (a BMC event, the heartbeat sweep: each
round reports which); sampling the whole cycle is for full runs. Each round waits for a pass
after the last one's failover, so the last round's phase was pure waiting (15 s on average).
Two failures:

- ``forceoff``: the blade is powered off straight on its BMC (as below);
- ``hung``: the blade's OS hangs (emulated OS agent stopped: its heartbeats stop) while
  its BMC still reads On; time runs from that moment (and, beside it, from the last
  heartbeat the appliance received).

One protected profile (n+1, 2 NICs on VLANs, virtual MACs, network boot) runs on a blade
of a sushy-tools chassis; its blade dies (powered off straight on the emulated BMC, behind
the appliance's back: the failure signal), and the appliance's own monitor (1 s poll,
failure after 2 missed polls), engine and boot service — in this process, with the real
Redfish and SNMP drivers (appliance.lab.inproc) — fence it and bring the profile up on a
spare. Time = the spare's power-on step finished minus the moment of the crash request;
also split into detection (crash → failover record opened) and the rest. The failed blade
stays failed, so N failovers need N spares. With ``--events`` the monitor also subscribes
to the emulator's Redfish EventService, and the dead blade's power event makes it poll at
once (the event is confirmed by polls ``event_confirm_interval`` apart, never trusted).
Power changes take 0-0.2 s (sushy-tools' own fake driver takes 1-11 s; DESIGN §7). Prints a table, then one JSON line.
The in-process mode's timers are FASTER than shipped (monitor poll 1 s, failed after 2, engine polls 0.1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import userpath  # bench/userpath.py: the script's own folder is first on sys.path
from sqlalchemy import func, select

from appliance.domain.health import DetectorPolicy
from appliance.lab.inproc import InprocRig, fast_engine
from appliance.monitor.runner import MonitorSettings
from appliance.services.failover import FailoverService
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.store import Store
from appliance.store.tables import (
    BindingRow,
    BladeHealthRow,
    BladeRow,
    BootTokenRow,
    FailoverRow,
    JobStepRow,
    ProfileRow,
)

TARGET = 5.0   # DESIGN §5: failure signal → spare powered on with the profile, incl. detection, shipped defaults
TARGET_HUNG_DETECT = 10.0   # DESIGN §5: a hung OS whose BMC still reads On detected within 10 s
# The smoke runs the shipped timers too: a hung OS is found in seconds since the heartbeat sweep.
SMOKE_OVERRIDES: dict[str, str] = {}
# The smoke fails a blade within this many seconds of the monitor's pass over it (see the docstring).
SMOKE_AFTER_PASS = 2.0

PROFILE = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {name: web, tenant: bench}
spec:
  requirements: {minCpus: 8, nics: 2}
  identity:
    nics:
      - {name: eth0, mac: "02:fb:00:00:00:01", vlans: {native: 100, tagged: [200]}, pxe: true}
      - {name: eth1, mac: "02:fb:00:00:00:02", vlans: {native: 101}}
  boot: {mode: uefi, source: {type: image, kernel: lab/vmlinuz, initrd: lab/initrd.img}}
  failover: {domain: bench, priority: 1, policy: n+1}
"""


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _current_blade(store: Store) -> str | None:
    with store.read() as s:
        return s.scalar(select(BladeRow.name).join(BindingRow, BindingRow.blade_id == BladeRow.id)
                        .join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
                        .where(ProfileRow.name == "web", BindingRow.state == "live",
                               ProfileRow.state == "active"))


def _failover_of(store: Store, failed: str) -> dict[str, Any] | None:
    """The succeeded failover away from ``failed``: where to, when detected, when the spare came on."""
    with store.read() as s:
        row = s.scalar(select(FailoverRow).where(FailoverRow.from_blade == failed))
        if row is None or row.state != "succeeded" or row.job_id is None:
            return None
        power = s.scalar(select(JobStepRow.finished_at).where(JobStepRow.job_id == row.job_id,
                                                              JobStepRow.name == "power-on"))
        return {"to": row.to_blade, "detected": _aware(row.detected_at), "power_on": _aware(power)}


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rounds = 2 if args.smoke else args.rounds
    monitor = MonitorSettings(interval=args.poll, probe_timeout=3.0,
                              policy=DetectorPolicy(fail_after=args.fail_after, recover_after=1))
    results = []
    settle = 2.5 * (1.0 if args.events else args.poll)   # until the monitor has seen the blade healthy
    async with InprocRig(work, chassis=[rounds + 1], engine=fast_engine(), monitor=monitor,
                         events=args.events) as rig:
        FailoverService(rig.store, rig.box).create_domain("bench")
        ProfileService(rig.store).import_document(PROFILE)
        JobService(rig.store).submit_assign("web", tenant="bench")
        blade = await rig.until("web active", lambda: _current_blade(rig.store), 60)
        for i in range(rounds):
            await asyncio.sleep(settle)
            crashed_at = datetime.now(UTC)
            t0 = time.monotonic()
            await asyncio.to_thread(rig.crash, blade)

            got = await rig.until(f"failover {i + 1}", lambda failed=blade: _failover_of(rig.store, failed),
                                  args.timeout)
            total = (got["power_on"] - crashed_at).total_seconds()
            detect = (got["detected"] - crashed_at).total_seconds()
            results.append({"round": i + 1, "from": blade, "to": got["to"], "total_s": round(total, 3),
                            "detect_s": round(detect, 3), "failover_s": round(total - detect, 3),
                            "wall_to_active_s": round(time.monotonic() - t0, 3)})
            blade = await rig.until("web active again", lambda: _current_blade(rig.store), 60)
    totals = [r["total_s"] for r in results]
    return {"poll_s": args.poll, "fail_after": args.fail_after, "events": args.events, "rounds": results,
            "median_s": round(statistics.median(totals), 3), "worst_s": round(max(totals), 3),
            "median_detect_s": round(statistics.median(r["detect_s"] for r in results), 3),
            "median_failover_s": round(statistics.median(r["failover_s"] for r in results), 3)}


def report(out: dict[str, Any]) -> list[str]:
    lines = [
        "Anvil failover benchmark: IN-PROCESS, FAST TIMERS (engine + monitor objects in the benchmark's "
        "process; timers faster than shipped)",
        f"  monitor poll {out['poll_s']:g} s, failure after {out['fail_after']} missed polls, engine polls 0.1 s"
        f"{', Redfish events on' if out.get('events') else ''}; power delay "
        "SHORT, 0-0.2 s per power change (sushy-tools' own fake driver takes 1-11 s; DESIGN §7)",
        "  time = crash of the blade (powered off on its BMC) -> spare's power-on confirmed with the profile",
        f"  {'round':>5} {'from':>6} {'to':>6} {'total s':>8} {'detect s':>9} {'failover s':>11}",
    ]
    for r in out["rounds"]:
        lines.append(f"  {r['round']:>5} {r['from']:>6} {r['to']:>6} {r['total_s']:>8.2f} {r['detect_s']:>9.2f}"
                     f" {r['failover_s']:>11.2f}")
    verdict = "met" if out["worst_s"] <= TARGET else ("median met" if out["median_s"] <= TARGET else "MISSED")
    lines.append(f"  median {out['median_s']:.2f} s (detection {out['median_detect_s']:.2f} s + failover "
                 f"{out['median_failover_s']:.2f} s), worst {out['worst_s']:.2f} s of {len(out['rounds'])}; "
                 f"target <= {TARGET:g} s: {verdict} (the target is for shipped defaults; these timers are faster)")
    return lines


# ---- the user's path: a real `anvil serve` with shipped defaults --------------------------------

def _live_binding(store: Store, blade: str) -> int | None:
    with store.read() as s:
        return s.scalar(select(BindingRow.id).join(BladeRow, BladeRow.id == BindingRow.blade_id)
                        .where(BladeRow.name == blade, BindingRow.state == "live"))


def _last_beat(store: Store, binding: int) -> datetime | None:
    """When the appliance last heard a heartbeat of this binding (None: none yet)."""
    with store.read() as s:
        last = s.scalar(select(func.max(BootTokenRow.last_seen_at)).where(BootTokenRow.binding_id == binding,
                                                                          BootTokenRow.kind == "heartbeat"))
    return _aware(last) if last else None


def _noticed_by(store: Store, blade: str, since: datetime) -> str:
    """What first saw ``blade`` failing after ``since``: the source of its first failing health
    sample (poll, event, heartbeat), or "-" when none is kept."""
    with store.read() as s:
        source = s.scalar(select(BladeHealthRow.source).join(BladeRow, BladeRow.id == BladeHealthRow.blade_id)
                          .where(BladeRow.name == blade, BladeHealthRow.ok.is_(False), BladeHealthRow.at >= since)
                          .order_by(BladeHealthRow.id).limit(1))
    return source or "-"


def _seen_healthy_since(store: Store, blade: str, since: datetime) -> bool:
    """The monitor's regular pass has seen ``blade`` healthy after ``since``."""
    with store.read() as s:
        at = s.scalar(select(func.max(BladeHealthRow.at)).join(BladeRow, BladeRow.id == BladeHealthRow.blade_id)
                      .where(BladeRow.name == blade, BladeHealthRow.ok.is_(True), BladeHealthRow.source == "poll"))
    return at is not None and _aware(at) > since


async def _shipped_round(app: userpath.Appliance, rack: userpath.Rack, store: Store, blade: str, kind: str,
                         n: int, args: argparse.Namespace) -> dict[str, Any]:
    active_at = datetime.now(UTC)
    interval = app.timers()["monitor_interval_s"]
    settle = 2 * interval + 30   # one pass over the running blade (the first one also subscribes to events)
    await userpath.until(f"monitor pass over {blade}",
                         lambda: asyncio.to_thread(_seen_healthy_since, store, blade, active_at), settle, 0.5)
    # A failure comes at any moment of the monitor's cycle, not just after a pass: pick one at random.
    phase = random.uniform(0.0, interval if args.after_pass is None else min(args.after_pass, interval))
    await asyncio.sleep(phase)
    binding = await asyncio.to_thread(_live_binding, store, blade)
    if kind == "hung":
        # Heartbeats flowing before the hang: at least one since this binding's boot.
        await userpath.until(f"a heartbeat from {blade}", lambda: asyncio.to_thread(_last_beat, store, binding),
                             30, 0.5)
    failed_at = datetime.now(UTC)
    if kind == "hung":
        await asyncio.to_thread(rack.hang, blade)
    else:
        await asyncio.to_thread(rack.crash, blade)
    # The point of a hang: the BMC still reads On (a ForceOff's own change is still pending here).
    power_at_failure = await asyncio.to_thread(rack.raw_power, blade) if kind == "hung" else "-"
    last_beat = await asyncio.to_thread(_last_beat, store, binding) if binding else None
    got = await userpath.until(f"{kind} failover {n}", lambda: asyncio.to_thread(_failover_of, store, blade),
                               args.shipped_timeout, 0.2)
    total = (got["power_on"] - failed_at).total_seconds()
    detect = (got["detected"] - failed_at).total_seconds()
    noticed_by = await asyncio.to_thread(_noticed_by, store, blade, failed_at)
    out = {"round": n, "kind": kind, "from": blade, "to": got["to"], "total_s": round(total, 3),
           "detect_s": round(detect, 3), "failover_s": round(total - detect, 3),
           "bmc_power_after_failure": power_at_failure, "after_pass_s": round(phase, 2), "noticed_by": noticed_by}
    if kind == "hung" and last_beat is not None:
        out["last_beat_to_failure_s"] = round((failed_at - last_beat).total_seconds(), 3)
        out["detect_from_last_beat_s"] = round((got["detected"] - last_beat).total_seconds(), 3)
    return out


async def _shipped(args: argparse.Namespace, app: userpath.Appliance, rack: userpath.Rack,
                   kinds: list[tuple[str, int]]) -> list[dict[str, Any]]:
    app.start()
    results: list[dict[str, Any]] = []
    store = app.store()
    try:
        async with userpath.Rest(app) as rest:
            rack.enroll_switch(app)
            await userpath.enroll(rest, (rack.enrollment(b) for b in rack.blades))
            await rest.call("POST", "/api/v1/failover-domains", {"name": "bench"})
            await rest.call("POST", "/api/v1/profiles", text=PROFILE, content_type="application/yaml")
            await rest.call("POST", "/api/v1/profiles/web/assign", {"tenant": "bench"})
            blade = await userpath.until("web active", lambda: asyncio.to_thread(_current_blade, store), 120)
            n = 0
            for kind, count in kinds:
                for _ in range(count):
                    n += 1
                    results.append(await _shipped_round(app, rack, store, blade, kind, n, args))
                    blade = await userpath.until("web active again",
                                                 lambda: asyncio.to_thread(_current_blade, store), 120)
    finally:
        store.close()
    return results


def run_shipped(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    if args.smoke:
        kinds = [(k, 1) for k in args.kinds]
    else:
        kinds = [(k, args.rounds if k == "forceoff" else args.hung_rounds) for k in args.kinds]
    blades = sum(c for _, c in kinds) + 1   # a failed blade stays failed: one spare per failover
    app = userpath.Appliance(work, overrides=SMOKE_OVERRIDES or None)
    with app, userpath.Rack(work / "rack", app.boot_url, [blades], (0.0, 0.2)) as rack, \
            userpath.StallWatch() as watch:
        rounds = asyncio.run(_shipped(args, app, rack, kinds))
    out: dict[str, Any] = {"path": "shipped", "timers": app.timers(), "timers_text": app.describe_timers(),
                           "machine": watch.summary(), "machine_text": watch.describe(),
                           "power_delay_s": [0.0, 0.2], "rounds": rounds, "kinds": {},
                           "after_pass_max_s": min(args.after_pass, app.timers()["monitor_interval_s"])
                           if args.after_pass is not None else app.timers()["monitor_interval_s"]}
    for kind, _ in kinds:
        rs = [r for r in rounds if r["kind"] == kind]
        out["kinds"][kind] = {
            "median_s": round(statistics.median(r["total_s"] for r in rs), 3), "worst_s": max(r["total_s"] for r in rs),
            "median_detect_s": round(statistics.median(r["detect_s"] for r in rs), 3),
            "worst_detect_s": max(r["detect_s"] for r in rs),
            "median_failover_s": round(statistics.median(r["failover_s"] for r in rs), 3)}
    return out


def report_shipped(out: dict[str, Any]) -> list[str]:
    lines = [
        "Anvil failover benchmark: USER PATH (a real `anvil serve`, set up through its REST API over HTTPS)",
        f"  {out['timers_text']}",
        "  rack: 1 sushy-tools process, Redfish blades with emulated OS agents (boot callback, then a heartbeat "
        "every 2 s), power delay SHORT 0-0.2 s per change; 1 snmpsim switch; SQLite store",
        "  forceoff = blade powered off on its BMC; hung = its OS hangs (heartbeats stop) while the BMC reads On; "
        f"each at a random moment 0-{out['after_pass_max_s']:g} s after the monitor's pass over the blade "
        "(after pass = seconds after that pass)",
        "  total = failure -> spare's power-on confirmed with the profile; detect = failure -> failover opened; "
        "failover = the rest; beat->detect = last heartbeat received -> failover opened; noticed by = what first "
        "saw the blade failing (monitor poll, BMC event, heartbeat sweep)",
        "",
        f"  {'kind':<9}{'round':>6}{'from':>6}{'to':>6}{'total s':>9}{'detect s':>10}{'failover s':>12}"
        f"{'beat->detect s':>16}{'after pass s':>14}  {'noticed by':<11}BMC reads at hang",
    ]
    for r in out["rounds"]:
        beat = f"{r['detect_from_last_beat_s']:.2f}" if "detect_from_last_beat_s" in r else "-"
        lines.append(f"  {r['kind']:<9}{r['round']:>6}{r['from']:>6}{r['to']:>6}{r['total_s']:>9.2f}"
                     f"{r['detect_s']:>10.2f}{r['failover_s']:>12.2f}{beat:>16}{r['after_pass_s']:>14.1f}"
                     f"  {r['noticed_by']:<11}{r['bmc_power_after_failure']}")
    lines.append(f"  {out['machine_text']}")
    lines.append("")
    for kind, k in out["kinds"].items():
        lines.append(f"  {kind}: median {k['median_s']:.2f} s (detection {k['median_detect_s']:.2f} s + failover "
                     f"{k['median_failover_s']:.2f} s), worst {k['worst_s']:.2f} s")
    if "forceoff" in out["kinds"]:
        k = out["kinds"]["forceoff"]
        verdict = "met" if k["worst_s"] <= TARGET else ("median met" if k["median_s"] <= TARGET else "MISSED")
        lines.append(f"  target failure signal -> spare powered on <= {TARGET:g} s with shipped defaults: {verdict}")
    if "hung" in out["kinds"]:
        k = out["kinds"]["hung"]
        verdict = ("met" if k["worst_detect_s"] <= TARGET_HUNG_DETECT
                   else ("median met" if k["median_detect_s"] <= TARGET_HUNG_DETECT else "MISSED"))
        lines.append(f"  target hung OS (BMC reads On) detected <= {TARGET_HUNG_DETECT:g} s: {verdict} "
                     f"(median {k['median_detect_s']:.2f} s, worst {k['worst_detect_s']:.2f} s)")
    if out["timers"]["overrides"]:
        lines.append("  SMOKE run: timers shortened as printed above; these figures are NOT the shipped ones")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CI mode: 2 failovers (--shipped: one of each kind)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="failovers (in-process: 20; --shipped: ForceOff failovers, 5)")
    ap.add_argument("--poll", type=float, default=1.0, help="in-process: monitor poll interval, s")
    ap.add_argument("--fail-after", type=int, default=2, help="in-process: missed polls that declare a failure")
    ap.add_argument("--events", action="store_true", help="in-process: subscribe to the BMCs' Redfish events too")
    ap.add_argument("--timeout", type=float, default=60.0, help="in-process: bound on each failover, s")
    ap.add_argument("--shipped", action="store_true",
                    help="the user's path: a real anvil serve with shipped defaults; ForceOff and hung-OS failures")
    ap.add_argument("--hung", action="store_true", help="the user's path with hung-OS failures only")
    ap.add_argument("--hung-rounds", type=int, default=3, help="--shipped: hung-OS failovers")
    ap.add_argument("--shipped-timeout", type=float, default=300.0, help="--shipped: bound on each failover, s")
    ap.add_argument("--after-pass", type=float, default=None, metavar="S",
                    help="--shipped: each failure comes 0-S s after the monitor's pass over the blade "
                         "(default: any moment of the poll interval; with --smoke: 2 s)")
    ap.add_argument("--json", default=None, help="also write the JSON result here")
    args = ap.parse_args(argv)
    shipped = args.shipped or args.hung
    args.kinds = ["hung"] if args.hung else ["forceoff", "hung"]
    if args.rounds is None:
        args.rounds = 5 if shipped else 20
    if args.after_pass is None and args.smoke:
        args.after_pass = SMOKE_AFTER_PASS
    if args.after_pass is not None and args.after_pass < 0:
        ap.error(f"--after-pass {args.after_pass:g}: a number of seconds >= 0")
    with tempfile.TemporaryDirectory(prefix="anvil-bench-failover-") as tmp:
        out = run_shipped(args, Path(tmp)) if shipped else asyncio.run(run(args, Path(tmp)))
    for line in (report_shipped(out) if shipped else report(out)):
        print(line)
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
