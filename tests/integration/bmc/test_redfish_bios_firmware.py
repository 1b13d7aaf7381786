"""BIOS settings and firmware over Redfish, against the lab's emulator (our extension of sushy-tools).

The emulator keeps BIOS attributes pending in ``Bios/Settings`` until the system powers on, as
a BIOS takes them while booting; firmware updates fetch their image over HTTP from a server
this test runs on loopback.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from appliance.domain import bios as dbios
from appliance.drivers.errors import BadSettings
from appliance.drivers.protocols import (
    BiosDriver,
    Bmc,
    FirmwareDriver,
    PowerAction,
    PowerState,
    UpdateProgress,
    UpdateState,
)
from appliance.drivers.redfish import RedfishDriver
from appliance.lab import redfish_emulator

from .conftest import Rack, wait_power

pytestmark = pytest.mark.timeout(60)


async def _settle(rf: RedfishDriver, bmc: Bmc, want: PowerState) -> None:
    await rf.set_power(bmc, PowerAction.ON if want is PowerState.ON else PowerAction.OFF)
    await wait_power(rf, bmc, want, time.monotonic() + 15)


async def test_the_driver_has_the_optional_capabilities(rf: RedfishDriver) -> None:
    assert isinstance(rf, BiosDriver) and isinstance(rf, FirmwareDriver)


async def test_bios_settings_are_pending_until_the_next_power_on(redfish_rack: Rack, rf: RedfishDriver) -> None:
    bmc, expected = redfish_rack.take()
    registry = await rf.bios_registry(bmc)
    assert registry.source == "AnvilLabBiosRegistry.v1_0_0"
    assert registry.attributes["ProcVirtualization"].values == ("Enabled", "Disabled")
    typed, problems = dbios.plan({"ProcVirtualization": "Disabled", "NumaNodesPerSocket": "2"}, registry)
    assert problems == [] and typed == {"ProcVirtualization": "Disabled", "NumaNodesPerSocket": 2}

    await rf.set_bios(bmc, typed)
    got = await rf.bios(bmc)
    assert got.current["ProcVirtualization"] == "Enabled"          # not before the boot
    assert got.pending == typed
    await _settle(rf, bmc, PowerState.ON)
    got = await rf.bios(bmc)
    assert got.current["ProcVirtualization"] == "Disabled" and got.current["NumaNodesPerSocket"] == 2
    assert got.pending == {}
    # Read around the driver, as DMTF shapes it.
    raw = redfish_emulator.get_json(redfish_rack.emulator, f"/redfish/v1/Systems/{expected['uuid']}/BIOS")
    assert raw["@Redfish.Settings"]["SettingsObject"]["@odata.id"].endswith("/BIOS/Settings")
    assert raw["Attributes"]["ProcVirtualization"] == "Disabled"
    await _settle(rf, bmc, PowerState.OFF)


async def test_the_bmc_refuses_an_unknown_attribute_and_keeps_nothing(redfish_rack: Rack, rf: RedfishDriver) -> None:
    bmc, _ = redfish_rack.take()
    with pytest.raises(BadSettings, match="NoSuchKnob"):
        await rf.set_bios(bmc, {"ProcTurboMode": "Disabled", "NoSuchKnob": "On"})
    assert (await rf.bios(bmc)).pending == {}
    # The planner names it before anything is sent.
    _, problems = dbios.plan({"NoSuchKnob": "On"}, await rf.bios_registry(bmc))
    assert problems == ["BIOS attribute 'NoSuchKnob' is unknown to this blade (per AnvilLabBiosRegistry.v1_0_0)"]


async def test_a_change_behind_the_appliance_is_read_at_once(redfish_rack: Rack, rf: RedfishDriver) -> None:
    bmc, expected = redfish_rack.take()
    redfish_emulator.change_bios(redfish_rack.emulator, expected["uuid"], {"SriovGlobalEnable": True})
    assert (await rf.bios(bmc)).current["SriovGlobalEnable"] is True


@pytest.fixture
def image_server() -> Iterator[str]:
    images = {"/bios-2.19.1.fw": {"AnvilLabFirmware": {"Component": "BIOS", "Version": "2.19.1"}}}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            doc = images.get(self.path)
            body = json.dumps(doc).encode() if doc else b"{}"
            self.send_response(200 if doc else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def _until_final(rf: RedfishDriver, bmc: Bmc, handle: str) -> UpdateProgress:
    for _ in range(100):
        progress = await rf.update_progress(bmc, handle)
        if progress.state is not UpdateState.RUNNING:
            return progress
        await asyncio.sleep(0.1)
    raise AssertionError("update task did not finish in 10 s")


async def test_firmware_inventory_and_a_simple_update(redfish_rack: Rack, rf: RedfishDriver, image_server: str) -> None:
    bmc, expected = redfish_rack.take()
    items = {i.component: i for i in await rf.firmware(bmc)}
    assert {c: i.version for c, i in items.items()} == {"BIOS": "1.0.0", "BMC": "1.0.0", "NIC": "1.0.0"}
    assert items["BIOS"].uri.endswith(f"/FirmwareInventory/{expected['uuid']}-BIOS")

    handle = await rf.start_update(bmc, items["BIOS"], f"{image_server}/bios-2.19.1.fw")
    assert handle.startswith("/redfish/v1/TaskService/Tasks/")
    assert (await _until_final(rf, bmc, handle)).state is UpdateState.DONE
    assert {i.component: i.version for i in await rf.firmware(bmc)}["BIOS"] == "2.19.1"
    assert (await rf.facts(bmc)).firmware["bios"] == "2.19.1"

    # An image for another component, and a lab fault, both fail the task and change nothing.
    handle = await rf.start_update(bmc, items["NIC"], f"{image_server}/bios-2.19.1.fw")
    failed = await _until_final(rf, bmc, handle)
    assert failed.state is UpdateState.FAILED and "not a NIC image" in failed.message
    redfish_emulator.fail_next_update(redfish_rack.emulator, expected["uuid"])
    failed = await _until_final(rf, bmc, await rf.start_update(bmc, items["BMC"], f"{image_server}/bios-2.19.1.fw"))
    assert failed.state is UpdateState.FAILED and "lab fault" in failed.message
    assert {i.component: i.version for i in await rf.firmware(bmc)} == {"BIOS": "2.19.1", "BMC": "1.0.0",
                                                                         "NIC": "1.0.0"}
