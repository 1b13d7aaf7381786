"""SitePeer against a real HTTPS server on loopback: the pin, the bearer, and its typed errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from appliance.api.tls import ensure_self_signed, server_context
from appliance.drivers.protocols import Secret
from appliance.sites.peer import (
    PeerAddress,
    PeerRefused,
    PeerUnreachable,
    SitePeer,
    fingerprint_of_pem,
    normalise_fingerprint,
)


async def _echo(request: web.Request) -> web.Response:
    if request.headers.get("Authorization") != "Bearer s3cret":
        return web.json_response({"title": "Unauthorized", "detail": "no token"}, status=401)
    body = await request.json() if request.can_read_body else None
    return web.json_response({"method": request.method, "body": body})


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    cert, key = ensure_self_signed(tmp_path / "tls")
    app = web.Application()
    app.router.add_route("*", "/echo", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(cert, key))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}", fingerprint_of_pem(cert.read_text())
    finally:
        await runner.cleanup()


async def test_calls_with_the_pinned_certificate_and_the_token(server: tuple[str, str]) -> None:
    url, fp = server
    async with SitePeer(PeerAddress("b", url, fp, Secret("s3cret"))) as peer:
        assert await peer.get("/echo") == {"method": "GET", "body": None}
        assert await peer.post("/echo", {"x": 1}) == {"method": "POST", "body": {"x": 1}}


async def test_another_certificate_than_the_pinned_one_is_unreachable(server: tuple[str, str]) -> None:
    url, _ = server
    async with SitePeer(PeerAddress("b", url, "00" * 32, Secret("s3cret"))) as peer:
        with pytest.raises(PeerUnreachable, match="other than the one pinned"):
            await peer.get("/echo")


async def test_an_error_status_is_refused_with_the_detail(server: tuple[str, str]) -> None:
    url, fp = server
    async with SitePeer(PeerAddress("b", url, fp, Secret("wrong"))) as peer:
        with pytest.raises(PeerRefused, match=r"HTTP 401.*no token") as got:
            await peer.get("/echo")
    assert got.value.status == 401


async def test_nobody_listening_is_unreachable(server: tuple[str, str]) -> None:
    _, fp = server
    async with SitePeer(PeerAddress("b", "https://127.0.0.1:9", fp, None), timeout=3) as peer:
        with pytest.raises(PeerUnreachable, match="site b is unreachable"):
            await peer.get("/echo")


def test_fingerprints_are_normalised() -> None:
    hexes = "AB:" * 31 + "AB"
    assert normalise_fingerprint("sha256:" + hexes) == "ab" * 32
    with pytest.raises(ValueError, match="not a SHA-256"):
        normalise_fingerprint("abc")
