"""One reused Redfish connection per BMC, on DMTF's ``redfish`` library (blocking).

Everything here runs in a worker thread (see ``_blocking.py``). A :class:`Connection`
logs in once and is reused for every blade behind that BMC:

- the service root has a SessionService (``Links.Sessions``) → session login
  (X-Auth-Token); otherwise → HTTP basic auth on the same reused HTTP connection
  (sushy-tools 2.2 has no SessionService: its ``/SessionService`` answers 404);
- a 401 on any request drops the login and logs in again once (sessions expire);
- HTTP and library errors become DriverErrors here, in one place:
  refused / timed out → BmcUnreachable, 401/403 → BmcAuthFailed, 503 → BmcBusy,
  501 → Unsupported, 400 → BadSettings, other 5xx → BmcFailure.

Quirk: DMTF ``redfish`` 3.4.2 sends ``verify=False`` unless ``cafile`` is given, so
``verify_tls`` is honoured by passing the CA bundle of ``requests`` as ``cafile``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import certifi
import redfish
import requests
from redfish.rest.v1 import (
    InvalidCredentialsError,
    JsonDecodingError,
    RetriesExhaustedError,
    ServerDownOrUnreachableError,
    SessionCreationError,
)

from appliance.drivers.errors import (
    BadSettings,
    BmcAuthFailed,
    BmcBusy,
    BmcFailure,
    BmcUnreachable,
    DriverError,
    Unsupported,
)

DRIVER = "redfish"

# The DMTF library logs whole requests, headers and bodies, at DEBUG: BMC credentials and
# event-subscription tokens would reach the appliance's log at log_level = DEBUG.
logging.getLogger("redfish").setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed ``redfish+http(s)://host:port/redfish/v1/Systems/ID`` address."""

    base_url: str      # http(s)://host:port
    system_path: str   # /redfish/v1/Systems/ID

    @property
    def endpoint(self) -> str:
        return self.base_url.split("://", 1)[1]

    @classmethod
    def parse(cls, address: str, blade: str) -> Target:
        parts = urlsplit(address)
        if parts.scheme not in ("redfish+http", "redfish+https") or not parts.hostname:
            raise BadSettings(blade, DRIVER, "address", f"not a redfish+http(s) URL: {address!r}")
        path = parts.path.rstrip("/")
        if not path.startswith("/redfish/v1/Systems/"):
            raise BadSettings(blade, DRIVER, "address", f"path must be /redfish/v1/Systems/<id>: {address!r}")
        scheme = parts.scheme.removeprefix("redfish+")
        return cls(base_url=f"{scheme}://{parts.netloc}", system_path=path)


@dataclass(slots=True)
class Reply:
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def _reason_of(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__ or exc
    if isinstance(cause, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    if isinstance(cause, requests.exceptions.Timeout):
        return "read timed out"
    if isinstance(cause, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(cause, requests.exceptions.ConnectionError):
        text = str(cause)
        if "refused" in text.lower():
            return "connection refused"
        return "connection failed"
    return type(cause).__name__


def _message(body: dict[str, Any]) -> str:
    err = body.get("error")
    if isinstance(err, dict):
        for info in err.get("@Message.ExtendedInfo") or []:
            if isinstance(info, dict) and info.get("Message"):
                return str(info["Message"])
        if err.get("message"):
            return str(err["message"])
    return ""


def raise_for_status(reply: Reply, blade: str, op: str, what: str) -> None:
    """Turn an HTTP error status into the matching DriverError (no-op for 2xx/3xx)."""
    status = reply.status
    if status < 400:
        return
    detail = _message(reply.body)
    reason = f"HTTP {status} on {what}" + (f": {detail}" if detail else "")
    if status in (401, 403):
        raise BmcAuthFailed(blade, DRIVER, op, reason)
    if status == 404:
        raise Unsupported(blade, DRIVER, op, reason)
    if status == 501:
        raise Unsupported(blade, DRIVER, op, reason)
    if status in (400, 405, 409, 412):
        raise BadSettings(blade, DRIVER, op, reason)
    if status == 503:
        raise BmcBusy(blade, DRIVER, op, reason)
    raise BmcFailure(blade, DRIVER, op, reason, retryable=status in (500, 502, 504))


class Connection:
    """A logged-in client for one BMC endpoint and credential; thread-safe enough for a few threads.

    ``requests.Session`` is shared by the (at most ``per_bmc``) threads that use one BMC.
    """

    def __init__(self, base_url: str, username: str, password: str, *, verify_tls: bool, timeout: float) -> None:
        self.base_url = base_url
        self._username = username
        self._password = password
        self._verify = verify_tls
        self.timeout = timeout
        self._lock = threading.Lock()
        self._client: Any = None
        self.uses_session = False

    def _login(self, blade: str, op: str) -> Any:
        cafile = certifi.where() if self._verify and self.base_url.startswith("https") else None
        try:
            client = redfish.redfish_client(
                base_url=self.base_url,
                username=self._username,
                password=self._password,
                default_prefix="/redfish/v1/",
                timeout=self.timeout,
                max_retry=0,
                cafile=cafile,
            )
            # Without this, requests looks for ~/.netrc and proxy variables on every call: BMC
            # traffic never goes through them, and the lookups were a tenth of the driver's CPU.
            client._session.trust_env = False
            root = client.root if isinstance(client.root, dict) else {}
            links = root.get("Links") or {}
            self.uses_session = "Sessions" in links
            client.login(auth="session" if self.uses_session else "basic")
        except InvalidCredentialsError as exc:
            raise BmcAuthFailed(blade, DRIVER, op, "credentials refused (HTTP 401)") from exc
        except SessionCreationError as exc:
            raise BmcAuthFailed(blade, DRIVER, op, f"session login failed: {exc}") from exc
        except ServerDownOrUnreachableError as exc:
            resp = getattr(exc, "response", None)
            status = getattr(resp, "status", None) or 0
            if status == 503:
                raise BmcBusy(blade, DRIVER, op, "service root: HTTP 503") from exc
            if status in (401, 403):
                raise BmcAuthFailed(blade, DRIVER, op, f"service root: HTTP {status}") from exc
            raise BmcFailure(blade, DRIVER, op, f"service root: HTTP {status}", retryable=True) from exc
        except RetriesExhaustedError as exc:
            raise BmcUnreachable(blade, DRIVER, op, _reason_of(exc)) from exc
        except JsonDecodingError as exc:
            raise BmcFailure(blade, DRIVER, op, "service root is not JSON") from exc
        except requests.exceptions.RequestException as exc:
            raise BmcUnreachable(blade, DRIVER, op, _reason_of(exc)) from exc
        return client

    def _client_for(self, blade: str, op: str, stale: Any = None) -> Any:
        with self._lock:
            if self._client is None or self._client is stale:
                if stale is not None:
                    self._drop(stale)
                self._client = self._login(blade, op)
            return self._client

    @staticmethod
    def _drop(client: Any) -> None:
        with contextlib.suppress(Exception):  # a broken client has nothing left to close
            client._session.close()

    def request(self, method: str, path: str, blade: str, op: str, body: dict[str, Any] | None = None) -> Reply:
        """One HTTP request; logs in first if needed and once more after a 401."""
        client = self._client_for(blade, op)
        reply = self._send(client, method, path, body, blade, op)
        if reply.status == 401:
            client = self._client_for(blade, op, stale=client)
            reply = self._send(client, method, path, body, blade, op)
        return reply

    def _send(self, client: Any, method: str, path: str, body: dict[str, Any] | None, blade: str, op: str) -> Reply:
        try:
            if method == "GET":
                resp = client.get(path)
            elif method == "POST":
                resp = client.post(path, body=body or {})
            elif method == "PATCH":
                resp = client.patch(path, body=body or {})
            elif method == "DELETE":
                resp = client.delete(path)
            else:  # pragma: no cover - programming error
                raise ValueError(method)
        except RetriesExhaustedError as exc:
            raise BmcUnreachable(blade, DRIVER, op, _reason_of(exc)) from exc
        except requests.exceptions.RequestException as exc:
            raise BmcUnreachable(blade, DRIVER, op, _reason_of(exc)) from exc
        try:
            data = resp.dict if resp.read else {}
        except Exception:  # JsonDecodingError, or a non-JSON error page
            data = {}
            if resp.status < 400 and method == "GET":
                raise BmcFailure(blade, DRIVER, op, f"{path}: reply is not JSON") from None
        headers = {str(k).lower(): str(v) for k, v in resp.getheaders() or ()}
        return Reply(status=int(resp.status), body=data if isinstance(data, dict) else {}, headers=headers)

    def get(self, path: str, blade: str, op: str) -> dict[str, Any]:
        """GET a resource; any error status becomes a DriverError (404 → Unsupported)."""
        reply = self.request("GET", path, blade, op)
        raise_for_status(reply, blade, op, f"GET {path}")
        return reply.body

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is None:
            return
        try:
            if self.uses_session:
                client.logout()
            else:
                client._session.close()
        except Exception:  # logout is best effort; the session expires on the BMC anyway
            self._drop(client)


class Connections:
    """The connection cache of one driver: one Connection per (endpoint, user, password, TLS check)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: dict[tuple[str, str, str, bool], Connection] = {}

    def get(self, base_url: str, username: str, password: str, *, verify_tls: bool, timeout: float) -> Connection:
        key = (base_url, username, password, verify_tls)
        with self._lock:
            conn = self._conns.get(key)
            if conn is None:
                conn = self._conns[key] = Connection(
                    base_url, username, password, verify_tls=verify_tls, timeout=timeout
                )
            conn.timeout = timeout
            return conn

    def close_all(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()


def link(resource: dict[str, Any], *keys: str) -> str | None:
    """The ``@odata.id`` at ``resource[k1][k2]…``, or None when absent."""
    node: Any = resource
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    if isinstance(node, dict) and isinstance(node.get("@odata.id"), str):
        return str(node["@odata.id"])
    return None


def members(collection: dict[str, Any]) -> list[str]:
    """The member links of a Redfish collection, in the service's order."""
    out = []
    for m in collection.get("Members") or []:
        if isinstance(m, dict) and isinstance(m.get("@odata.id"), str):
            out.append(str(m["@odata.id"]))
    return out


__all__ = ["DRIVER", "Connection", "Connections", "DriverError", "Reply", "Target", "link", "members"]
