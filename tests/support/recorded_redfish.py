"""A recorded Redfish service: real BMC documents served over HTTP on 127.0.0.1.

The documents are files in DMTF's mockup layout (``<dir>/index.json`` is ``/redfish/v1``,
``<dir>/Systems/1/index.json`` is ``/redfish/v1/Systems/1``), recorded from real BMCs or
published by DMTF (see ``tests/fixtures/redfish/README.md``). Nothing is made up here: a
resource that was not recorded answers 404, as a resource the BMC lacks would.

What the server adds is what a recording cannot hold: logging in. The service root says
where sessions are made (``Links.Sessions``); a POST there with the right credentials
answers 201 with an ``X-Auth-Token`` and a ``Location``, as BMCs do, and every other
request needs that token or HTTP basic auth. Writes are refused (405) and remembered, so
a test can prove that reading facts writes nothing.

One ThreadingHTTPServer in a thread, stopped by :meth:`RecordedBmc.stop` (bounded).
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "redfish"
PREFIX = "/redfish/v1"


def _norm(path: str) -> str:
    """``/redfish/v1/Systems/1/`` and ``/redfish/v1/Systems/1`` are one resource (iLO links with the slash)."""
    return unquote(urlsplit(path).path).rstrip("/") or "/"


@dataclass
class RecordedBmc:
    """Serve the recorded tree under ``root``; ``gets`` lists every GET path in order."""

    root: Path
    username: str = "admin"
    password: str = "password"
    gets: list[str] = field(default_factory=list)
    writes: list[tuple[str, str]] = field(default_factory=list)
    sessions: dict[str, str] = field(default_factory=dict)       # token -> session path
    logins: int = 0
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- documents -----------------------------------------------------------------

    def document(self, path: str) -> dict[str, Any] | None:
        """The recorded document at ``path`` (an ``@odata.id``), or None."""
        rel = _norm(path)
        if rel != PREFIX and not rel.startswith(PREFIX + "/"):
            return None
        parts = [p for p in rel[len(PREFIX):].split("/") if p]
        if any(p in (".", "..") for p in parts):
            return None
        file = self.root.joinpath(*parts, "index.json")
        if not file.is_file():
            return None
        data = json.loads(file.read_text())
        return data if isinstance(data, dict) else None

    def sessions_path(self) -> str:
        root = self.document(PREFIX) or {}
        link = ((root.get("Links") or {}).get("Sessions") or {}).get("@odata.id")
        return _norm(str(link or f"{PREFIX}/SessionService/Sessions"))

    # ---- lifecycle -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def address(self, system: str) -> str:
        """The enrolment address of one recorded system (``system``: its ``@odata.id``)."""
        return f"redfish+{self.base_url}{_norm(system)}"

    def start(self) -> RecordedBmc:
        bmc = self

        class Handler(_Handler):
            owner = bmc

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="recorded-bmc", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    # ---- auth ----------------------------------------------------------------------

    def _authorized(self, headers: Any) -> bool:
        token = headers.get("X-Auth-Token")
        if token:
            with self._lock:
                return token in self.sessions
        auth = headers.get("Authorization") or ""
        if auth.startswith("Basic "):
            want = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return secrets.compare_digest(auth[6:], want)
        return False

    def _login(self, body: dict[str, Any]) -> tuple[str, str] | None:
        if body.get("UserName") != self.username or body.get("Password") != self.password:
            return None
        token = secrets.token_hex(16)
        path = f"{self.sessions_path()}/{next(self._ids)}"
        with self._lock:
            self.sessions[token] = path
            self.logins += 1
        return token, path

    def _logout(self, path: str) -> bool:
        with self._lock:
            for token, where in list(self.sessions.items()):
                if where == path:
                    del self.sessions[token]
                    return True
        return False


@contextmanager
def recorded_bmc(source: str) -> Iterator[RecordedBmc]:
    """Serve ``tests/fixtures/redfish/<source>`` for the duration of the block."""
    root = FIXTURES / source
    if not (root / "index.json").is_file():
        raise FileNotFoundError(f"no recorded service root at {root}")
    bmc = RecordedBmc(root).start()
    try:
        yield bmc
    finally:
        bmc.stop()


class _Handler(BaseHTTPRequestHandler):
    owner: RecordedBmc
    protocol_version = "HTTP/1.1"   # keep-alive, as the driver's reused connection expects

    def _send(self, status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("OData-Version", "4.0")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": {"code": "Base.1.0.GeneralError", "message": message}})

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def do_GET(self) -> None:
        bmc, path = self.owner, _norm(self.path)
        with bmc._lock:
            bmc.gets.append(path)
        # The service root is readable without credentials (DSP0266): clients read it to log in.
        if path != PREFIX and not bmc._authorized(self.headers):
            self._error(401, "no valid session or credentials")
            return
        doc = bmc.document(path)
        if doc is None:
            self._error(404, f"{path} was not recorded")
            return
        self._send(200, doc)

    def do_POST(self) -> None:
        bmc, path = self.owner, _norm(self.path)
        body = self._body()
        if path == bmc.sessions_path():
            made = bmc._login(body)
            if made is None:
                self._error(401, "invalid credentials")
                return
            token, where = made
            self._send(201, {"@odata.id": where, "Id": where.rsplit("/", 1)[-1], "UserName": bmc.username},
                       {"X-Auth-Token": token, "Location": where})
            return
        self._refuse("POST", path)

    def do_DELETE(self) -> None:
        bmc, path = self.owner, _norm(self.path)
        if path.startswith(bmc.sessions_path() + "/") and bmc._authorized(self.headers) and bmc._logout(path):
            self._send(204)
            return
        self._refuse("DELETE", path)

    def do_PATCH(self) -> None:
        self._body()
        self._refuse("PATCH", _norm(self.path))

    def _refuse(self, method: str, path: str) -> None:
        with self.owner._lock:
            self.owner.writes.append((method, path))
        self._error(405, f"{method} {path}: a recorded service is read-only")

    def log_message(self, format: str, *args: Any) -> None:
        pass
