"""Cut a recorded Redfish tree down to what inspection reads, for tests/fixtures/redfish.

    .venv/bin/python -m tests.support.redfish_cut SOURCE_DIR DEST_DIR /redfish/v1/Systems/ID [...]

SOURCE_DIR is a whole recorded tree in DMTF's mockup layout (a DSP2043 bundle, or a BMC
recording laid out the same way). The real driver inspects each named system from it over
HTTP (tests.support.recorded_redfish); every document it read is copied, byte for byte, to
DEST_DIR. So a fixture holds exactly what ``RedfishDriver.facts`` reads today; rerun this
when the driver reads more.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from appliance.drivers.protocols import Bmc, Secret
from appliance.drivers.redfish import RedfishDriver
from tests.support.recorded_redfish import PREFIX, RecordedBmc, _norm


async def _inspect(bmc: RecordedBmc, systems: list[str]) -> None:
    driver = RedfishDriver()
    try:
        for system in systems:
            facts = await driver.facts(Bmc(system, bmc.address(system), bmc.username, Secret(bmc.password)))
            print(f"{system}: {facts}")
    finally:
        await driver.close()


def cut(source: Path, dest: Path, systems: list[str]) -> list[str]:
    """Copy what inspecting ``systems`` reads from ``source`` to ``dest``; the paths copied."""
    bmc = RecordedBmc(source).start()
    try:
        asyncio.run(_inspect(bmc, systems))
    finally:
        bmc.stop()
    copied = []
    for path in dict.fromkeys(bmc.gets):
        if bmc.document(path) is None:
            continue
        parts = [p for p in _norm(path)[len(PREFIX):].split("/") if p]
        target = dest.joinpath(*parts, "index.json")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.joinpath(*parts, "index.json"), target)
        copied.append(path)
    return copied


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    for path in cut(Path(argv[0]), Path(argv[1]), argv[2:]):
        print("copied", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
