"""Redfish event subscriptions through the driver, against the lab's sushy-tools emulator
with its EventService: the BMC posts to our receiver with our token, after the change."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from appliance.drivers.errors import BadSettings
from appliance.drivers.protocols import EventDriver, PowerAction, PowerState
from appliance.drivers.redfish import RedfishDriver
from appliance.lab import redfish_emulator
from tests.integration.bmc.conftest import Rack, _redfish_rack, _stop

TOKEN = "Bearer event-token-0123456789-never-shown"


class Receiver:
    """An HTTP receiver on loopback keeping each POST's headers, body and arrival time."""

    def __init__(self) -> None:
        got: list[tuple[float, dict[str, str], dict[str, Any]]] = []
        self.got = got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                got.append((time.monotonic(), dict(self.headers), json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events/redfish/1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    async def wait(self, count: int, timeout: float = 10.0) -> None:
        for _ in range(int(timeout / 0.05)):
            if len(self.got) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{len(self.got)} events, not {count}, within {timeout} s")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def slow_rack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rack]:
    """Power changes show 0.5 s after they are asked for."""
    r = _redfish_rack(tmp_path_factory.mktemp("redfish-events"), 3, (0.5, 0.5), seed=11)
    try:
        yield r
    finally:
        _stop(r)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


async def test_the_bmc_posts_an_event_after_the_power_change_with_our_token(
        slow_rack: Rack, receiver: Receiver) -> None:
    bmc, _ = slow_rack.take()
    driver = RedfishDriver()
    try:
        assert isinstance(driver, EventDriver)
        source = driver.event_source(bmc)
        uri = await driver.subscribe_events(bmc, receiver.url, "anvil test", {"Authorization": TOKEN})
        assert uri is not None and uri.startswith("/redfish/v1/EventService/Subscriptions/")
        shown = json.dumps(redfish_emulator.get_json(slow_rack.emulator, uri))
        assert receiver.url in shown and "anvil test" in shown and "event-token" not in shown

        await driver.set_power(bmc, PowerAction.ON)
        await receiver.wait(1)
        await driver.set_power(bmc, PowerAction.OFF)
        asked = time.monotonic()
        await receiver.wait(2)
        arrived, headers, doc = receiver.got[1]
        assert arrived - asked >= 0.4, "the event came before the change did"
        assert await driver.get_power(bmc) is PowerState.OFF     # a client re-reading sees the change
        assert headers["Authorization"] == TOKEN
        assert doc["Context"] == "anvil test"
        [event] = doc["Events"]
        assert event["OriginOfCondition"]["@odata.id"] == source.resource
        assert "Off" in event["Message"]

        await driver.unsubscribe_events(bmc, uri)
        await driver.unsubscribe_events(bmc, uri)   # already gone: fine
        await driver.set_power(bmc, PowerAction.ON)
        await asyncio.sleep(1.5)
        assert len(receiver.got) == 2
    finally:
        await driver.close()


async def test_a_bad_destination_is_refused_without_quoting_the_token(slow_rack: Rack) -> None:
    bmc, _ = slow_rack.take()
    driver = RedfishDriver()
    try:
        for dest in ("ftp://10.0.0.1/x", "not a url"):
            with pytest.raises(BadSettings) as err:
                await driver.subscribe_events(bmc, dest, "ctx", {"Authorization": TOKEN})
            assert "Destination" in str(err.value) and "event-token" not in str(err.value)
    finally:
        await driver.close()


def test_blades_of_one_bmc_share_the_event_endpoint(slow_rack: Rack) -> None:
    driver = RedfishDriver()
    a, b = (driver.event_source(bmc) for bmc in slow_rack.bmcs[:2])
    assert a.endpoint == b.endpoint and a.endpoint.startswith("redfish+http://127.0.0.1:")
    assert a.resource != b.resource and a.resource.startswith("/redfish/v1/Systems/")
