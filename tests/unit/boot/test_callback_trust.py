"""Who may complete a stamp from the provisioning network (DESIGN §8, issue 14 §2).

8f9e50f: any host could GET /boot/ipxe?mac=…, read a fresh anvil.token and post it to
/boot/callback — the stamp ended `succeeded` though the blade never booted; one extra GET
voided the real blade's token; each GET added a boot_tokens row. Here the peer rules are
unit-tested directly, and the HTTP service is exercised with the non-loopback rules (the
test client is 127.0.0.1, which is then "another host").
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select, update

from appliance.boot.http import setup
from appliance.boot.peers import PeerCheck, is_loopback_listen, read_arp, read_leases
from appliance.store.tables import BootTokenRow, JobEventRow, utcnow
from tests.unit.boot.conftest import Inventory, loopback_peers

BASE = "http://10.77.0.1:8080"


# ---- the rules ------------------------------------------------------------------------------

def test_peer_rules(tmp_path: Path) -> None:
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text("1796600000 52:54:00:aa:00:01 10.77.0.150 vm-01 01:52:54:00:aa:00:01\n")
    check = PeerCheck(loopback_only=False, leases_path=leases,
                      arp=lambda: {"10.77.0.160": "02:a0:00:00:00:09", "10.77.0.170": "52:54:00:aa:00:01"},
                      ipv6=lambda: {"fd77::99": "52:54:00:aa:00:01"})
    macs, reserved = {"52:54:00:aa:00:01", "02:a0:00:00:00:09"}, {"10.77.0.20/24"}
    assert check.match("10.77.0.20", macs, reserved) == "reservation"
    assert check.match("10.77.0.150", macs, reserved) == "lease"
    assert check.match("::ffff:10.77.0.150", macs, reserved) == "lease"
    assert check.match("10.77.0.160", macs, reserved) == "neighbour"
    assert check.match("fd77::99", macs, reserved) == "neighbour"
    assert check.match("10.77.0.170", {"52:54:00:bb:00:01"}, set()) is None      # someone else's blade
    assert check.match("10.77.0.250", macs, reserved) is None                    # a stranger
    assert check.match("127.0.0.1", macs, reserved) is None                      # not a loopback lab
    assert PeerCheck(loopback_only=True).match("127.0.0.1", macs, reserved) == "loopback"
    assert check.match("not an address", macs, reserved) is None


def test_listen_addresses_and_tables(tmp_path: Path) -> None:
    assert is_loopback_listen("127.0.0.1:8080") and is_loopback_listen("[::1]:8080")
    assert not is_loopback_listen("0.0.0.0:8080") and not is_loopback_listen("10.77.0.1:8080")
    arp = tmp_path / "arp"
    arp.write_text("IP address       HW type     Flags       HW address            Mask     Device\n"
                   "10.77.0.5        0x1         0x2         52:54:00:aa:00:01     *        br0\n"
                   "10.77.0.6        0x1         0x0         00:00:00:00:00:00     *        br0\n")
    assert read_arp(arp) == {"10.77.0.5": "52:54:00:aa:00:01"}
    assert read_leases(tmp_path / "missing") == {}


# ---- the service, as a host on the network that is not the blade -------------------------------

@pytest.fixture
async def stranger(inventory: Inventory, tmp_path: Path) -> AsyncIterator[TestClient]:
    app = web.Application()
    setup(app, store=inventory.store, images_dir=tmp_path, base_url=BASE, key=inventory.key,
          peers=PeerCheck(loopback_only=False, arp=dict, ipv6=dict))
    async with TestClient(TestServer(app)) as c:
        yield c


def _counts(inventory: Inventory) -> tuple[int, int, int]:
    with inventory.store.read() as s:
        boot = s.scalar(select(func.count()).select_from(BootTokenRow).where(BootTokenRow.kind == "boot"))
        used = s.scalar(select(func.count()).select_from(BootTokenRow).where(BootTokenRow.used_at.is_not(None)))
        events = s.scalar(select(func.count()).select_from(JobEventRow))
    return int(boot or 0), int(used or 0), int(events or 0)


async def test_a_stranger_reads_the_script_but_can_neither_complete_nor_void_the_stamp(
        stranger: TestClient, inventory: Inventory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    before = _counts(inventory)
    for _ in range(200):              # 8f9e50f: 200 rows, and the real blade's token voided
        assert (await stranger.get("/boot/ipxe", params={"mac": "52:54:00:00:01:01"})).status == 200
    token = inventory.tokens["web-01"]
    forged = await stranger.post("/boot/callback", data={"token": token, "mac": "52:54:00:00:01:01"})
    assert forged.status == 403
    assert _counts(inventory) == before, "a stranger's fetches or callback changed the store"
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused and all(token not in m for m in caplog.messages), "refused, logged, never the token"


async def test_the_real_blade_completes_then_a_replay_while_it_beats_changes_nothing(
        client: TestClient, inventory: Inventory) -> None:
    token = inventory.tokens["web-01"]
    ok = await client.post("/boot/callback", data={"token": token})
    assert ok.status == 200
    secret = dict(line.split("=", 1) for line in (await ok.text()).splitlines())["heartbeat_secret"]
    assert (await client.post("/boot/heartbeat", data={"secret": secret})).status == 204
    after_first = _counts(inventory)
    replay = await client.post("/boot/callback", data={"token": token})
    assert replay.status == 403, "a replay while the agent beats is refused"
    assert _counts(inventory) == after_first
    assert (await client.post("/boot/heartbeat", data={"secret": secret})).status == 204, "the secret still works"
    # The blade's OS reboots: its agent goes quiet, then calls back with the same token.
    long_ago = utcnow() - timedelta(minutes=5)
    with inventory.store.write() as s:
        s.execute(update(BootTokenRow).where(BootTokenRow.kind == "heartbeat")
                  .values(last_seen_at=long_ago, created_at=long_ago))
    again = await client.post("/boot/callback", data={"token": token})
    assert again.status == 200
    assert _counts(inventory)[2] == after_first[2], "a re-registration completes nothing a second time"
    assert (await client.post("/boot/heartbeat", data={"secret": secret})).status == 403, "old secret voided"


@pytest.fixture
async def client(inventory: Inventory, tmp_path: Path) -> AsyncIterator[TestClient]:
    app = web.Application()
    setup(app, store=inventory.store, images_dir=tmp_path, base_url=BASE, key=inventory.key, peers=loopback_peers())
    async with TestClient(TestServer(app)) as c:
        yield c
