"""Power-status polls per second against the emulated rack (Redfish and IPMI).

    .venv/bin/python bench/bmc_poll.py            # 1, 10, 100 concurrent blades, 5 s each
    .venv/bin/python bench/bmc_poll.py --smoke    # CI: 1 and 10 blades, 1 s each

Redfish: one sushy-tools emulator process (one BMC) serving N systems, basic auth
(bcrypt rounds=4); the driver caps concurrent requests per BMC at 4. IPMI: one process
with N pyghmi BMCs (one UDP port each). Power delay is turned down to 0-0.2 s (it does
not matter for status polls). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from appliance.drivers.errors import DriverError
from appliance.drivers.ipmi import IpmiDriver
from appliance.drivers.protocols import Bmc, BmcDriver, Secret
from appliance.drivers.redfish import RedfishDriver
from appliance.lab import ipmi_emulator, procs, redfish_emulator

POWER_DELAY = (0.0, 0.2)


async def _poll(driver: BmcDriver, bmcs: list[Bmc], seconds: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    # Warm-up: one call per blade (logins), not measured.
    await asyncio.gather(*(driver.get_power(b) for b in bmcs), return_exceptions=True)
    end = loop.time() + seconds

    async def worker(b: Bmc) -> None:
        nonlocal errors
        while loop.time() < end:
            t = loop.time()
            try:
                await driver.get_power(b)
                latencies.append(loop.time() - t)
            except DriverError:
                errors += 1

    start = loop.time()
    await asyncio.gather(*(worker(b) for b in bmcs))
    took = loop.time() - start
    latencies.sort()
    return {
        "polls_per_s": round(len(latencies) / took, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else 0.0,
        "p95_ms": round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 2) if latencies else 0.0,
        "errors": errors,
        "polls": len(latencies),
    }


async def bench_redfish(tmp: Path, n: int, seconds: float) -> dict[str, float]:
    systems = redfish_emulator.make_systems(n, seed=n)
    emu = redfish_emulator.start_redfish(tmp / f"rf-{n}", procs.free_tcp_port(), systems, power_delay=POWER_DELAY)
    driver = RedfishDriver()
    try:
        bmcs = [Bmc(f"rf{i}", emu.address(s), "admin", Secret("password"), timeout=10) for i, s in enumerate(systems)]
        return await _poll(driver, bmcs, seconds)
    finally:
        await driver.close()
        redfish_emulator.stop(emu)


async def bench_ipmi(tmp: Path, n: int, seconds: float) -> dict[str, float]:
    ports = [procs.free_udp_port() for _ in range(n)]
    emu = ipmi_emulator.start_ipmi(tmp / f"ipmi-{n}", ports, power_delay=POWER_DELAY)
    driver = IpmiDriver()
    try:
        bmcs = [Bmc(f"ipmi{p}", emu.address(p), "admin", Secret("password"), timeout=10) for p in ports]
        return await _poll(driver, bmcs, seconds)
    finally:
        await driver.close()
        ipmi_emulator.stop(emu)


async def main_async(sizes: list[int], seconds: float, protocols: list[str]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="anvil-bench-") as d:
        tmp = Path(d)
        for proto in protocols:
            for n in sizes:
                fn = bench_redfish if proto == "redfish" else bench_ipmi
                result = await fn(tmp, n, seconds)
                rows.append({"protocol": proto, "blades": n, **result})
                print(f"{proto:8} {n:6d} {result['polls_per_s']:10.1f} {result['p50_ms']:9.2f} "
                      f"{result['p95_ms']:9.2f} {int(result['errors']):7d}", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="short CI run: 1 and 10 blades, 1 s each")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--sizes", default="1,10,100")
    ap.add_argument("--protocols", default="redfish,ipmi")
    args = ap.parse_args()
    sizes = [1, 10] if args.smoke else [int(s) for s in args.sizes.split(",")]
    seconds = 1.0 if args.smoke else args.seconds
    protocols = args.protocols.split(",")
    print(f"# power-status polls, emulator power delay {POWER_DELAY[0]}-{POWER_DELAY[1]} s (turned down), "
          f"{seconds:g} s per row")
    print(f"{'protocol':8} {'blades':>6} {'polls/s':>10} {'p50 ms':>9} {'p95 ms':>9} {'errors':>7}")
    started = time.monotonic()
    rows = asyncio.run(main_async(sizes, seconds, protocols))
    print(json.dumps({"bench": "bmc_poll", "smoke": args.smoke, "power_delay_s": list(POWER_DELAY),
                      "seconds_per_row": seconds, "wall_s": round(time.monotonic() - started, 1), "rows": rows}))
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
