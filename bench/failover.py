"""Control-plane failover time against the emulated rack: failure signal → spare powered on.

    .venv/bin/python bench/failover.py             # 20 failovers, one after another
    .venv/bin/python bench/failover.py --smoke     # CI: 2 failovers
    .venv/bin/python bench/failover.py --events --poll 30   # detection by Redfish event

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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from appliance.domain.health import DetectorPolicy
from appliance.lab.inproc import InprocRig, fast_engine
from appliance.monitor.runner import MonitorSettings
from appliance.services.failover import FailoverService
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.store.tables import BindingRow, BladeRow, FailoverRow, JobStepRow, ProfileRow

TARGET = 5.0   # DESIGN §5: failure signal → spare powered on with the profile, incl. detection at a 1 s poll

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


def _current_blade(rig: InprocRig) -> str | None:
    with rig.store.read() as s:
        return s.scalar(select(BladeRow.name).join(BindingRow, BindingRow.blade_id == BladeRow.id)
                        .join(ProfileRow, ProfileRow.id == BindingRow.profile_id)
                        .where(ProfileRow.name == "web", BindingRow.state == "live",
                               ProfileRow.state == "active"))


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
        blade = await rig.until("web active", lambda: _current_blade(rig), 60)
        for i in range(rounds):
            await asyncio.sleep(settle)
            crashed_at = datetime.now(UTC)
            t0 = time.monotonic()
            await asyncio.to_thread(rig.crash, blade)

            def finished(failed: str = blade) -> dict[str, Any] | None:
                with rig.store.read() as s:
                    row = s.scalar(select(FailoverRow).where(FailoverRow.from_blade == failed))
                    if row is None or row.state != "succeeded" or row.job_id is None:
                        return None
                    power = s.scalar(select(JobStepRow.finished_at).where(JobStepRow.job_id == row.job_id,
                                                                          JobStepRow.name == "power-on"))
                    return {"to": row.to_blade, "detected": _aware(row.detected_at), "power_on": _aware(power)}

            got = await rig.until(f"failover {i + 1}", finished, args.timeout)
            total = (got["power_on"] - crashed_at).total_seconds()
            detect = (got["detected"] - crashed_at).total_seconds()
            results.append({"round": i + 1, "from": blade, "to": got["to"], "total_s": round(total, 3),
                            "detect_s": round(detect, 3), "failover_s": round(total - detect, 3),
                            "wall_to_active_s": round(time.monotonic() - t0, 3)})
            blade = await rig.until("web active again", lambda: _current_blade(rig), 60)
    totals = [r["total_s"] for r in results]
    return {"poll_s": args.poll, "fail_after": args.fail_after, "events": args.events, "rounds": results,
            "median_s": round(statistics.median(totals), 3), "worst_s": round(max(totals), 3),
            "median_detect_s": round(statistics.median(r["detect_s"] for r in results), 3),
            "median_failover_s": round(statistics.median(r["failover_s"] for r in results), 3)}


def report(out: dict[str, Any]) -> list[str]:
    lines = [
        "Anvil failover benchmark (control plane, emulated rack)",
        f"  monitor poll {out['poll_s']:g} s, failure after {out['fail_after']} missed polls"
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
                 f"target <= {TARGET:g} s: {verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CI mode: 2 failovers")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--poll", type=float, default=1.0, help="monitor poll interval, s")
    ap.add_argument("--fail-after", type=int, default=2, help="missed polls that declare a failure")
    ap.add_argument("--events", action="store_true", help="subscribe to the BMCs' Redfish events too")
    ap.add_argument("--timeout", type=float, default=60.0, help="bound on each failover, s")
    ap.add_argument("--json", default=None, help="also write the JSON result here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="anvil-bench-failover-") as tmp:
        out = asyncio.run(run(args, Path(tmp)))
    for line in report(out):
        print(line)
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
