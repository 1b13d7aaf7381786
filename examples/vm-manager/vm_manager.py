#!/usr/bin/env python3
"""A reference VM manager client of Anvil's host pools: what an OpenNebula, oVirt or Proxmox
host hook does, in one file of standard-library Python. It uses only Anvil's REST API and
a webhook receiver, so it can be copied into any VM manager.

What it does:

- keeps a host pool at the size the VM manager needs (``PUT /api/v1/host-pools/NAME/size``);
- receives the pool's webhooks (``host.requested|ready|failed|replaced|released``), checks
  each one's HMAC-SHA256 signature and timestamp, drops duplicate deliveries, and answers
  at once (2xx) so Anvil never waits on the VM manager;
- keeps its own inventory of hosts by their stable host id: a host is *added* when it is
  ready, *disabled* while it fails (a failover brings the same host back: same id, UUID and
  MACs, perhaps on another blade), and *removed* when it is released;
- never misses a host: it remembers the cursor of the last event it applied and applies
  events only in the feed's order. Each event names the pool's event before it
  (``previous``); a webhook whose ``previous`` is not the last one applied (the VM manager
  was down, or a delivery was given up) makes it read
  ``GET /api/v1/host-pools/NAME/events?after=CURSOR`` first. At start it catches up the same way;
- drains a host before releasing it: disables it (the VM manager migrates its VMs away),
  then ``DELETE /api/v1/host-pools/NAME/hosts/ID``.

Run it (the token needs the operator role of the pool's tenant)::

    python3 vm_manager.py --url https://anvil.example:8443 --token-file token --ca-cert cert.pem \\
        --pool kvm --template kvm-host --size 3 --listen 0.0.0.0:9000 \\
        --public-url http://vm-manager.example:9000/anvil --secret-file hook.secret

The webhook's body is ``{"id": DELIVERY, "event": NAME, "data": EVENT, "createdAt": ...}``,
EVENT being what the feed carries (``cursor``, ``event``, ``at``, ``pool``, ``host``: id,
name, state, uuid, macs, iqn, managementAddress, blade...). Headers: ``X-Anvil-Event``,
``X-Anvil-Delivery`` (the same on every retry), ``X-Anvil-Timestamp`` and
``X-Anvil-Signature: sha256=HEX(HMAC-SHA256(secret, timestamp + "." + body))``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import http.server
import json
import logging
import queue
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("vm-manager")

TOLERANCE = 300.0        # seconds between a webhook's timestamp and this machine's clock
SEEN_DELIVERIES = 10_000  # delivery ids remembered, to drop retries already handled


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class Anvil:
    """The few REST calls a VM manager needs."""

    def __init__(self, url: str, token: str, *, ca_cert: str | None = None, timeout: float = 30.0) -> None:
        self.base = url.rstrip("/") + "/api/v1"
        self.token = token
        self.timeout = timeout
        self.ssl = ssl.create_default_context(cafile=ca_cert) if url.startswith("https://") else None

    def call(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        q = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (query or {}).items() if v is not None}
        url = self.base + path + (f"?{urllib.parse.urlencode(q)}" if q else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout, context=self.ssl) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("detail", "")
            except ValueError:
                detail = exc.reason
            raise ApiError(exc.code, str(detail)) from None
        return json.loads(raw) if raw else None

    @staticmethod
    def _p(*parts: str) -> str:
        return "/host-pools/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)

    def pool(self, name: str) -> dict[str, Any]:
        return dict(self.call("GET", self._p(name)))

    def create_pool(self, name: str, template: str, **fields: Any) -> dict[str, Any]:
        return dict(self.call("POST", "/host-pools", {"name": name, "template": template, **fields}))

    def set_size(self, name: str, size: int) -> dict[str, Any]:
        return dict(self.call("PUT", self._p(name, "size"), {"size": size}))

    def hosts(self, name: str) -> list[dict[str, Any]]:
        return list(self.call("GET", self._p(name, "hosts"))["items"])

    def release(self, name: str, host: str, *, keep_profile: bool = False, replace: bool = False) -> dict[str, Any]:
        return dict(self.call("DELETE", self._p(name, "hosts", host),
                              query={"keepProfile": keep_profile or None, "replace": replace or None}))

    def report(self, name: str, host: str, *, cpu: float | None = None, memory: float | None = None,
               vms: int | None = None) -> None:
        body = {k: v for k, v in (("cpu", cpu), ("memory", memory), ("vms", vms)) if v is not None}
        self.call("POST", self._p(name, "hosts", host, "metrics"), body)

    def add_webhook(self, name: str, url: str, secret: str, *, after: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"url": url, "secret": secret}
        if after is not None:
            body["after"] = after
        return dict(self.call("POST", self._p(name, "webhooks"), body))

    def events(self, name: str, after: int, *, wait: int = 0) -> dict[str, Any]:
        return dict(self.call("GET", self._p(name, "events"), query={"after": after, "wait": wait or None},
                              timeout=self.timeout + wait))


def verify(secret: bytes, body: bytes, headers: Any, *, now: float | None = None) -> bool:
    """Whether ``body`` was signed with ``secret`` within :data:`TOLERANCE` seconds of ``now``."""
    signature, stamp = headers.get("X-Anvil-Signature", ""), headers.get("X-Anvil-Timestamp", "")
    if not signature.startswith("sha256=") or not stamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > TOLERANCE:
        return False
    want = hmac.new(secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature[len("sha256="):], want)


@dataclass
class Receiver:
    """The webhook endpoint: checks signatures, drops duplicates, queues the events, answers at once."""

    secret: bytes
    host: str = "127.0.0.1"
    port: int = 0
    path: str = "/anvil"
    events: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    cursors: list[int] = field(default_factory=list)     # of every event accepted, in arrival order
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    _seen: dict[str, None] = field(default_factory=dict)
    _server: http.server.ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> str:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("webhook: %s", fmt % args)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(min(length, 1 << 20))
                code = receiver.take(raw, self.headers) if self.path == receiver.path else 404
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = http.server.ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="webhooks", daemon=True).start()
        return self.url

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def take(self, raw: bytes, headers: Any) -> int:
        if not verify(self.secret, raw, headers):
            with self._lock:
                self.rejected += 1
            log.warning("webhook with a bad signature or timestamp refused")
            return 401
        delivery = headers.get("X-Anvil-Delivery", "")
        with self._lock:
            if delivery in self._seen:
                self.duplicates += 1
                return 200      # handled already: a retry whose answer was lost
            self._seen[delivery] = None
            if len(self._seen) > SEEN_DELIVERIES:
                self._seen.pop(next(iter(self._seen)))
            self.accepted += 1
            event = json.loads(raw)["data"]
            self.cursors.append(event["cursor"])
        self.events.put(event)
        return 200

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass
class Inventory:
    """The VM manager's view of its hosts, by stable host id, built from the pool's events in order."""

    cursor: int = 0
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)   # id → host, with "enabled"
    history: list[tuple[int, str, str]] = field(default_factory=list)   # (cursor, event, host id) applied
    on_change: Callable[[str, dict[str, Any]], None] | None = None

    def apply(self, event: dict[str, Any]) -> bool:
        """Apply one event (in feed order); False for one already applied."""
        if event["cursor"] <= self.cursor:
            return False
        self.cursor = event["cursor"]
        host, kind = event["host"], event["event"]
        self.history.append((event["cursor"], kind, host["id"]))
        if kind == "host.ready":
            self.hosts[host["id"]] = {**host, "enabled": True}      # add it (again, after a failover)
        elif kind == "host.failed" and host["id"] in self.hosts:
            self.hosts[host["id"]]["enabled"] = False               # no new VMs; its VMs restart elsewhere
        elif kind in ("host.released", "host.replaced"):
            self.hosts.pop(host["id"], None)
        if self.on_change is not None:
            self.on_change(kind, host)
        return True

    @property
    def ready(self) -> list[dict[str, Any]]:
        return [h for h in self.hosts.values() if h["enabled"]]


class Manager:
    """Keeps a pool at the size wanted and the inventory in step with it."""

    def __init__(self, api: Anvil, pool: str, receiver: Receiver, inventory: Inventory | None = None) -> None:
        self.api, self.pool, self.receiver = api, pool, receiver
        self.inventory = inventory or Inventory()
        self.fed = 0          # events applied from the feed (catching up) rather than a webhook

    def catch_up(self) -> int:
        """Apply every event after the inventory's cursor, from the feed; returns how many."""
        n = 0
        for _ in range(10_000):     # pages of up to 500
            page = self.api.events(self.pool, self.inventory.cursor)
            for event in page["items"]:
                n += self.inventory.apply(event)
            if not page["more"]:
                break
        self.fed += n
        return n

    def handle(self, event: dict[str, Any]) -> None:
        """One webhook's event, applied in the feed's order: at once when it follows the last one
        applied (``previous``), else after reading what is missing from the feed."""
        if event["cursor"] <= self.inventory.cursor:
            return                  # applied already (from the feed)
        if event.get("previous") != self.inventory.cursor:
            self.catch_up()         # we missed some: the feed brings them, this one included, in order
        self.inventory.apply(event)

    def pump(self, seconds: float) -> None:
        """Handle webhooks for ``seconds`` (a VM manager runs this for ever)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            with contextlib.suppress(queue.Empty):
                self.handle(self.receiver.events.get(timeout=min(left, 0.5)))

    def ensure_size(self, size: int) -> dict[str, Any]:
        return self.api.set_size(self.pool, size)

    def drain(self, host_id: str) -> dict[str, Any]:
        """Take a host out: no new VMs on it (its VMs migrate away: the VM manager's job), then release it."""
        if host_id in self.inventory.hosts:
            self.inventory.hosts[host_id]["enabled"] = False
        return self.api.release(self.pool, host_id)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="the appliance, https://HOST:8443")
    p.add_argument("--token-file", required=True)
    p.add_argument("--ca-cert", default=None, help="the appliance's certificate (self-signed) or its CA")
    p.add_argument("--pool", required=True)
    p.add_argument("--template", help="create the pool from this template when it does not exist")
    p.add_argument("--size", type=int, required=True, help="hosts the VM manager needs")
    p.add_argument("--listen", default="127.0.0.1:9000", help="HOST:PORT of the webhook receiver")
    p.add_argument("--public-url", default=None, help="the receiver's URL as Anvil reaches it")
    p.add_argument("--secret-file", required=True, help="the webhooks' HMAC secret (16 characters or more)")
    p.add_argument("--seconds", type=float, default=3600.0, help="run this long")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with open(args.token_file) as fh:
        api = Anvil(args.url, fh.read().strip(), ca_cert=args.ca_cert)
    with open(args.secret_file) as fh:
        secret = fh.read().strip()
    host, _, port = args.listen.rpartition(":")
    receiver = Receiver(secret.encode(), host=host, port=int(port))
    receiver.start()
    try:
        api.pool(args.pool)
    except ApiError as exc:
        if exc.status != 404 or not args.template:
            raise
        api.create_pool(args.pool, args.template)
    inventory = Inventory(on_change=lambda kind, h: log.info("%s %s (%s) on %s", kind, h["name"], h["id"],
                                                               h["blade"]))
    manager = Manager(api, args.pool, receiver, inventory)
    manager.catch_up()
    api.add_webhook(args.pool, args.public_url or receiver.url, secret, after=inventory.cursor)
    manager.ensure_size(args.size)
    manager.pump(args.seconds)
    receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
