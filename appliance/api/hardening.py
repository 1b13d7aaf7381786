"""What every HTTP response and listener of the appliance gets, whichever handler made it.

- Headers on every response, error pages included (a signal, not a middleware, so an
  aiohttp 404/405 raised before any handler gets them too): ``nosniff``, ``DENY`` framing,
  ``same-origin`` referrers, HSTS over TLS, and no ``Server`` banner naming versions.
- A header-read deadline: a connection that has not sent a complete request within
  :data:`HEADER_TIMEOUT` seconds of connecting (or of its previous response) is closed,
  so half-sent requests cannot pile up (200 of them stayed open for 90 s and more).
- TLS 1.2 and 1.3 only, and on 1.2 only ECDHE with AEAD ciphers (no CBC, no static RSA).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from aiohttp import web

HEADER_TIMEOUT = 15.0
HSTS = "max-age=31536000"
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


async def _secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "same-origin")
    if request.secure:
        h.setdefault("Strict-Transport-Security", HSTS)
    h["Server"] = "anvil"


def setup_headers(app: web.Application) -> None:
    app.on_response_prepare.append(_secure_headers)


def app_runner(app: web.Application) -> web.AppRunner:
    """The runner every listener of the appliance uses (API and console, boot HTTP)."""
    return web.AppRunner(app, access_log=None, keepalive_timeout=HEADER_TIMEOUT)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)      # TLS 1.3's own suites are all AEAD and are not affected
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.load_cert_chain(cert, key)
    return ctx
