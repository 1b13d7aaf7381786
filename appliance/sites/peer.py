"""HTTPS calls to a paired site: its certificate pinned (SHA-256 of the DER, checked on every
connection whatever CA signed it), the DR token it gave us as the bearer."""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

from appliance import safejson
from appliance.drivers.protocols import Secret
from appliance.errors import AnvilError, ValidationError
from appliance.secrets import SecretBox
from appliance.store.tables import SiteRow

TIMEOUT = 15.0


class PeerUnreachable(AnvilError):
    """The site could not be reached, or did not present its pinned certificate."""

    retryable = True

    def __init__(self, site: str, reason: str) -> None:
        self.site = site
        super().__init__(f"site {site} is unreachable: {reason}")


class PeerRefused(AnvilError):
    """The site answered with an error status."""

    def __init__(self, site: str, status: int, detail: str, body: dict[str, Any] | None = None) -> None:
        self.site, self.status, self.detail, self.body = site, status, detail, body or {}
        super().__init__(f"site {site} refused the call (HTTP {status}): {detail}")


def fingerprint_of_pem(pem: str) -> str:
    """SHA-256 hex of the certificate's DER: what pairing pins."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def normalise_fingerprint(text: str) -> str:
    """``sha256:AB:CD…``, ``abcd…``: the 64 lower-case hex digits, or ValueError."""
    raw = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(raw) != 64 or any(c not in "0123456789abcdef" for c in raw):
        raise ValueError(f"{text!r} is not a SHA-256 certificate fingerprint (64 hex digits)")
    return raw


@dataclass(frozen=True, slots=True)
class PeerAddress:
    name: str
    url: str              # https://host:port, no path
    fingerprint: str      # sha256 hex of the DER
    token: Secret | None  # None: an unauthenticated call (pairing)


class SitePeer:
    """A client of one paired site. Use as ``async with SitePeer(...) as peer``."""

    def __init__(self, address: PeerAddress, *, timeout: float = TIMEOUT) -> None:
        self.address = address
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(5.0, timeout))
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def of(cls, row: SiteRow, box: SecretBox, *, timeout: float = TIMEOUT) -> SitePeer:
        return cls(PeerAddress(row.name, row.url, row.cert_fingerprint, box.decrypt(row.token_enc)),
                   timeout=timeout)

    async def __aenter__(self) -> SitePeer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def get(self, path: str) -> Any:
        return await self._call("GET", path, None)

    async def post(self, path: str, json: Any) -> Any:
        return await self._call("POST", path, json)

    async def _call(self, method: str, path: str, json: Any) -> Any:
        a = self.address
        headers = {"Accept": "application/json"}
        if a.token is not None:
            headers["Authorization"] = f"Bearer {a.token.reveal()}"
        pin = aiohttp.Fingerprint(bytes.fromhex(a.fingerprint))
        try:
            async with self._http().request(method, a.url.rstrip("/") + path, json=json, headers=headers,
                                            ssl=pin) as resp:
                raw = await resp.read()
                status = resp.status
        except aiohttp.ServerFingerprintMismatch:
            raise PeerUnreachable(a.name, "it presented a certificate other than the one pinned at pairing") \
                from None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PeerUnreachable(a.name, f"{exc.__class__.__name__}: {exc}"[:300]) from None
        try:
            body = safejson.loads(raw) if raw else None
        except ValidationError:
            body = None
        if status >= 400:
            detail = body.get("detail") or body.get("title") if isinstance(body, dict) else None
            raise PeerRefused(a.name, status, str(detail or raw[:200].decode(errors="replace")),
                              body if isinstance(body, dict) else None)
        return body
