"""The boot HTTP service against a real aiohttp server: scripts, images (Range, confinement),
callback → boot-signal + heartbeat secret, heartbeats, discovery, and no secret leaks."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from appliance.boot.http import BOOT_SERVICE, resolve_image, setup
from appliance.drivers.protocols import Secret
from appliance.secrets import SecretBox
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.switches import SwitchService
from appliance.store import Store
from appliance.store.tables import BootDiscoveryRow, BootTokenRow, JobEventRow
from tests.unit.boot.conftest import IMAGE, ISCSI, Inventory, loopback_peers, profile_doc

MIB = 1024 * 1024


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "state" / "images"
    (d / "lab").mkdir(parents=True)
    (d / "lab" / "vmlinuz").write_bytes(bytes(range(256)) * (MIB // 256))
    (d / "lab" / "initrd.img").write_bytes(b"initrd")
    (tmp_path / "state" / "secret.txt").write_text("outside the images")
    os.symlink(tmp_path / "state" / "secret.txt", d / "lab" / "escape")
    os.symlink(tmp_path / "state", d / "up")
    return d


@pytest.fixture
async def client(inventory: Inventory, images: Path) -> AsyncIterator[TestClient]:
    app = web.Application()
    setup(app, store=inventory.store, images_dir=images, base_url="http://10.77.0.1:8080", key=inventory.key,
          peers=loopback_peers())
    async with TestClient(TestServer(app)) as c:
        yield c


async def script(client: TestClient, mac: str) -> str:
    resp = await client.get("/boot/ipxe", params={"mac": mac})
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    return await resp.text()


def token_of(text: str) -> str:
    m = re.search(r"anvil\.token=(\S+)", text)
    assert m, text
    return m.group(1)


async def test_unknown_mac_gets_the_discover_script(client: TestClient) -> None:
    text = await script(client, "52:54:00:99:99:99")
    assert "chain http://10.77.0.1:8080/boot/discover##params" in text
    assert (await script(client, "not-a-mac")).startswith("#!ipxe\necho Anvil: this machine is not known")


async def test_known_mac_gets_its_profile_script(client: TestClient) -> None:
    text = await script(client, "52:54:00:00:01:01")
    assert "kernel http://10.77.0.1:8080/boot/images/lab/vmlinuz " in text
    assert "anvil.profile=acme/web-01" in text and "anvil.mode=agent" in text


async def test_callback_signals_the_job_and_heartbeats_need_its_secret(
        client: TestClient, inventory: Inventory) -> None:
    token = token_of(await script(client, "52:54:00:00:01:01"))
    resp = await client.post("/boot/callback", params={"token": token},
                              data={"mac": "52:54:00:00:01:01", "ip": "10.77.0.101",
                                    "cmdline": f"anvil.token={token}"})
    assert resp.status == 200
    body = dict(line.split("=", 1) for line in (await resp.text()).splitlines())
    secret = body["heartbeat_secret"]
    assert body["heartbeat_url"] == "http://10.77.0.1:8080/boot/heartbeat"
    with inventory.store.read() as s:
        events = s.scalars(select(JobEventRow)).all()
    assert [(e.job_id, e.kind) for e in events] == [("00000000-0000-4000-8000-000000000001", "boot-signal")]
    assert events[0].data is not None and events[0].data["generation"] == 1
    assert events[0].data["facts"] == {"mac": "52:54:00:00:01:01", "ip": "10.77.0.101"}
    assert token not in str(events[0].data)

    # one-time: the same token again is refused, and so is a made-up one
    assert (await client.post("/boot/callback", data={"token": token})).status == 403
    assert (await client.post("/boot/callback", data={"token": "x" * 43})).status == 403
    assert (await client.post("/boot/callback")).status == 403

    assert (await client.post("/boot/heartbeat", headers={"Authorization": f"Bearer {secret}"})).status == 204
    assert (await client.post("/boot/heartbeat", data={"secret": secret})).status == 204
    assert (await client.post("/boot/heartbeat", data={"secret": token})).status == 403
    assert (await client.post("/boot/heartbeat")).status == 403
    await client.server.app[BOOT_SERVICE].beats.flush()      # beats are written in batches
    with inventory.store.read() as s:
        hb = s.scalars(select(BootTokenRow).where(BootTokenRow.kind == "heartbeat")).one()
    assert hb.last_seen_at is not None and hb.token_hash != secret


async def test_refetching_the_script_changes_no_token(client: TestClient, inventory: Inventory) -> None:
    """8f9e50f issued a token per fetch: one extra GET voided the real blade's token (403 on its callback)."""
    first = token_of(await script(client, "52:54:00:00:01:01"))
    for _ in range(5):            # anyone on the provisioning network may fetch it again
        assert token_of(await script(client, "02:a0:00:00:00:01")) == first
    assert (await client.post("/boot/callback", data={"token": first})).status == 200


async def test_token_of_a_released_binding_is_refused(client: TestClient, inventory: Inventory) -> None:
    from appliance.store.tables import BindingRow

    token = token_of(await script(client, "52:54:00:00:01:01"))
    with inventory.store.write() as s:
        s.get(BindingRow, inventory.bindings["web-01"]).state = "released"  # type: ignore[union-attr]
    assert (await client.post("/boot/callback", data={"token": token})).status == 403


async def test_a_binding_without_an_open_boot_attempt_boots_without_a_token(client: TestClient,
                                                                            inventory: Inventory) -> None:
    inventory.add_blade("blade-9", ("52:54:00:00:09:01",))
    inventory.add_profile(profile_doc("img-02", IMAGE))
    inventory.bind("img-02", "blade-9", job=False)
    text = await script(client, "52:54:00:00:09:01")
    assert "anvil.profile=acme/img-02" in text and "anvil.token" not in text
    with inventory.store.read() as s:
        assert s.scalars(select(JobEventRow)).first() is None


async def test_discover_stores_facts_for_an_unknown_mac_only(client: TestClient, inventory: Inventory) -> None:
    resp = await client.post("/boot/discover", data={"mac": "52:54:00:99:99:99", "serial": "SN1",
                                                      "uuid": "AAAAAAAA-0000-0000-0000-000000000001"})
    assert resp.status == 200 and (await resp.text()).startswith("#!ipxe\n")
    await client.post("/boot/discover", data={"mac": "52-54-00-99-99-99", "serial": "SN2"})
    await client.post("/boot/discover", data={"mac": "52:54:00:00:01:01", "serial": "SN3"})
    assert (await client.post("/boot/discover", data={"mac": "nope"})).status == 400
    with inventory.store.read() as s:
        rows = s.scalars(select(BootDiscoveryRow)).all()
    assert [(r.mac, r.facts) for r in rows] == [("52:54:00:99:99:99", {"serial": "SN2"})]


async def test_image_range_requests(client: TestClient, images: Path) -> None:
    data = (images / "lab" / "vmlinuz").read_bytes()
    full = await client.get("/boot/images/lab/vmlinuz")
    assert full.status == 200 and await full.read() == data
    assert full.headers.get("Accept-Ranges") == "bytes"
    part = await client.get("/boot/images/lab/vmlinuz", headers={"Range": "bytes=1000-1999"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{MIB}"
    assert await part.read() == data[1000:2000]
    tail = await client.get("/boot/images/lab/vmlinuz", headers={"Range": "bytes=-100"})
    assert tail.status == 206 and await tail.read() == data[-100:]
    assert tail.headers["Content-Range"] == f"bytes {MIB - 100}-{MIB - 1}/{MIB}"
    bad = await client.get("/boot/images/lab/vmlinuz", headers={"Range": f"bytes={MIB + 10}-"})
    assert bad.status == 416


@pytest.mark.parametrize("path", [
    "../secret.txt", "lab/../../secret.txt", "%2e%2e/secret.txt", "lab/%2e%2e/%2e%2e/secret.txt",
    "%2fetc%2fpasswd", "/etc/passwd", "lab/escape", "up/secret.txt", "lab", "missing", "lab%5c..%5cx",
    "lab%2fvmlinuz%00", "lab/vmlinuz%00"])
async def test_image_traversal_is_404(client: TestClient, path: str) -> None:
    resp = await client.get(f"/boot/images/{path}")
    assert resp.status == 404
    assert "outside the images" not in await resp.text()


@pytest.mark.parametrize("raw", ["/boot/images/../secret.txt", "/boot/images/lab/../../secret.txt",
                                 "/boot/images/%2e%2e/secret.txt", "/boot/images/..%2fsecret.txt",
                                 "/boot/images//etc/passwd", "/boot/images/lab/escape", "/boot/images/up/secret.txt"])
async def test_raw_traversal_requests_are_404(client: TestClient, raw: str) -> None:
    """Sent byte for byte (no client-side normalisation of the path)."""
    import asyncio

    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(f"GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = (await reader.read()).decode(errors="replace")
    writer.close()
    assert answer.startswith("HTTP/1.1 404"), answer[:80]
    assert "outside the images" not in answer


def test_resolve_image_confinement(images: Path) -> None:
    assert resolve_image(images, "lab/vmlinuz") == (images / "lab" / "vmlinuz").resolve()
    for bad in ("", "/etc/passwd", "../secret.txt", "lab/escape", "up/secret.txt", "lab\\vmlinuz", "a\x00b",
                "lab/./vmlinuz", "lab//vmlinuz"):
        assert resolve_image(images, bad) is None


async def test_no_secret_appears_in_any_boot_response(tmp_path: Path, sqlite_store: Store, images: Path) -> None:
    store = sqlite_store
    key = tmp_path / "secrets.key"
    box = SecretBox(key)
    bmc_passwords = ["Bmc-Pa55word-One!", "Bmc-Pa55word-Two!"]
    community = "Sw1tch-C0mmunity-XYZ"
    privacy = "Sw1tch-Pr1vacy-QRS"
    chap = "Chap-S3cret-Do-Not-Leak"
    SwitchService(store, box).enroll("tor-1", "snmp://10.0.0.2:161", username="anvil", password=Secret(community),
                                     privacy=Secret(privacy))
    blades = BladeService(store, box)
    for i, pw in enumerate(bmc_passwords, start=1):
        blades.enroll(Enrollment(name=f"secret-{i}", bmc=f"fake://secret-{i}", username="admin", password=Secret(pw),
                                 nics=(NicSpec("nic0", f"52:54:00:00:a{i}:01", "tor-1", f"ge-{i}"),)))
    inv = Inventory(store, {}, {}, {})
    with store.read() as s:
        from appliance.store.tables import BladeRow

        inv.blades = {b.name: b.id for b in s.scalars(select(BladeRow))}
        fernet_tokens = [b.password_enc for b in s.scalars(select(BladeRow))]
    mine = profile_doc("mine-01", IMAGE, macs=("02:a0:00:00:a1:01",), uuid="4c4c4544-0000-0000-0000-0000000000a1")
    other = profile_doc("other-01", {**ISCSI, "chap": {"username": "u", "secret": chap}}, tenant="beta",
                        macs=("02:a0:00:00:b2:01",), uuid="4c4c4544-0000-0000-0000-0000000000b2",
                        iqn="iqn.2026-11.io.other:b2")
    other["spec"]["bios"] = {"AdminPassword": "Bios-Adm1n-Secret"}
    inv.add_profile(mine)
    inv.add_profile(other)
    inv.bind("mine-01", "secret-1")
    inv.bind("other-01", "secret-2")

    app = web.Application()
    setup(app, store=store, images_dir=images, base_url="http://10.77.0.1:8080", key=inv.key, peers=loopback_peers())
    mine_bodies: list[str] = []   # what blade secret-1 (profile mine-01) and unknown machines get
    other_bodies: list[str] = []  # what blade secret-2 (profile other-01) gets

    async def grab(into: list[str], req: object) -> str:
        r = await req  # type: ignore[misc]
        text: str = await r.text()
        into.append(text + str(dict(r.headers)))
        return text

    async with TestClient(TestServer(app)) as c:
        for mac in ("52:54:00:00:a1:01", "02:a0:00:00:a1:01", "52:54:00:99:99:99", ""):
            await grab(mine_bodies, c.get("/boot/ipxe", params={"mac": mac}))
        await grab(mine_bodies, c.get("/boot/ipxe", params={"uuid": "4c4c4544-0000-0000-0000-0000000000a1"}))
        for mac in ("52:54:00:00:a2:01", "02:a0:00:00:b2:01"):
            await grab(other_bodies, c.get("/boot/ipxe", params={"mac": mac}))
        text = await grab(mine_bodies, c.get("/boot/ipxe", params={"mac": "52:54:00:00:a1:01"}))
        cb = await grab(mine_bodies, c.post("/boot/callback", data={"token": token_of(text)}))
        secret = cb.split("heartbeat_secret=", 1)[1].split()[0]
        for req in (c.post("/boot/heartbeat", data={"secret": secret}), c.post("/boot/discover", data={"mac": "x"}),
                    c.post("/boot/discover", data={"mac": "52:54:00:99:99:98"}), c.get("/boot/images/lab/initrd.img"),
                    c.get("/boot/images/../secrets.key"), c.post("/boot/callback", data={"token": "nope"}),
                    c.post("/boot/heartbeat", data={"secret": "nope"})):
            await grab(mine_bodies, req)
    everything = "\n".join(mine_bodies + other_bodies)
    secrets = [*bmc_passwords, community, privacy, chap, "Bios-Adm1n-Secret", *fernet_tokens,
               key.read_text().strip(), "AdminPassword", "chap"]
    for secret_value in secrets:
        assert secret_value not in everything, f"{secret_value!r} leaked in a /boot response"
    other_data = ["other-01", "beta/", "02:a0:00:00:b2:01", "0000000000b2", "iqn.2026-11.io.other:b2"]
    mine_data = ["mine-01", "acme/", "02:a0:00:00:a1:01", "0000000000a1"]
    for mine_text in mine_bodies:
        assert not [d for d in other_data if d in mine_text], mine_text
    for other_text in other_bodies:
        assert not [d for d in mine_data if d in other_text], other_text
    assert "mine-01" in "".join(mine_bodies) and "other-01" in "".join(other_bodies)  # each gets its own
