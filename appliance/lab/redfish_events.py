"""The lab Redfish BMC's EventService: subscriptions, and an event on every power change.

Installed into the sushy-tools emulator process by ``redfish_emulator._install`` (sushy-tools
has no EventService). Follows DMTF's EventService / EventDestination schemas as far as a
client of ours needs:

- ``GET /redfish/v1/EventService`` (``ServiceEnabled``), the service root links to it;
- ``POST …/Subscriptions`` with ``Destination`` (http or https), ``Context``, ``Protocol``
  ``Redfish``, optional ``HttpHeaders`` (a list of one-key objects, write-only: never shown
  again) and ``EventTypes``; 201 with ``Location``. ``GET`` and ``DELETE`` a member.
- An event goes to every subscription when a system's power state has really changed
  (with a power delay, at its apply time, so a client reading the system after the event
  sees the new state). Delivery is best effort, from one worker thread: 3 s timeout, two
  retries 1 s apart on a network error or a 5xx (as real BMCs retry), TLS not verified
  (the appliance's lab certificate is self-signed, and BMCs rarely check).

Subscriptions live in the emulator process's memory, as on a BMC that loses them when reset.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

ROOT = "/redfish/v1/EventService"
RETRY_ATTEMPTS = 2          # after the first try; a busy appliance or a lost connection is not the end
RETRY_INTERVAL = 1
SUBS = f"{ROOT}/Subscriptions"


class EventService:  # pragma: no cover - runs in the emulator process
    def __init__(self) -> None:
        self._subs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._events = itertools.count(1)
        self._queue: queue.Queue[tuple[str, dict[str, str], bytes]] = queue.Queue(maxsize=10000)
        self._worker: threading.Thread | None = None

    # ---- subscriptions ----------------------------------------------------------------

    def subscribe(self, body: Any) -> tuple[int, dict[str, Any]]:
        """(status, member or error message) for a POST to the collection."""
        if not isinstance(body, dict):
            return 400, {"message": "the body must be a JSON object"}
        dest = body.get("Destination")
        parts = urlsplit(dest) if isinstance(dest, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            return 400, {"message": f"Destination {dest!r} is not an http or https URL"}
        if body.get("Protocol", "Redfish") != "Redfish":
            return 400, {"message": f"Protocol {body.get('Protocol')!r} is not supported (only Redfish)"}
        headers: dict[str, str] = {}
        for item in body.get("HttpHeaders") or []:
            if not isinstance(item, dict):
                return 400, {"message": "HttpHeaders must be a list of objects"}
            headers.update({str(k): str(v) for k, v in item.items()})
        sid = str(next(self._ids))
        member = {
            "@odata.type": "#EventDestination.v1_10_0.EventDestination",
            "@odata.id": f"{SUBS}/{sid}", "Id": sid, "Name": f"Subscription {sid}",
            "Destination": dest, "Context": str(body.get("Context") or ""), "Protocol": "Redfish",
            "EventTypes": list(body.get("EventTypes") or []),
        }
        with self._lock:
            self._subs[sid] = {"member": member, "headers": headers}
        return 201, self.show(member)

    @staticmethod
    def show(member: dict[str, Any]) -> dict[str, Any]:
        return {**member, "HttpHeaders": []}   # write-only in Redfish

    def get(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            sub = self._subs.get(sid)
        return None if sub is None else self.show(sub["member"])

    def delete(self, sid: str) -> bool:
        with self._lock:
            return self._subs.pop(sid, None) is not None

    def members(self) -> list[str]:
        with self._lock:
            return [s["member"]["@odata.id"] for s in self._subs.values()]

    # ---- events -------------------------------------------------------------------------

    def power_changed(self, system_path: str, system_id: str, state: str) -> None:
        with self._lock:
            subs = list(self._subs.values())
        for sub in subs:
            n = next(self._events)
            severity = "OK" if state == "On" else "Warning"
            doc = {
                "@odata.type": "#Event.v1_7_0.Event", "Id": str(n), "Name": "Redfish event",
                "Context": sub["member"]["Context"],
                "Events": [{
                    "EventType": "Alert", "EventId": str(n),
                    "EventTimestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                    "Severity": severity, "MessageSeverity": severity,
                    "MessageId": f"ResourceEvent.1.0.ResourceStatusChanged{severity}",
                    "Message": f"System {system_id} is now {state}",
                    "OriginOfCondition": {"@odata.id": system_path},
                }],
            }
            headers = {**sub["headers"], "Content-Type": "application/json"}
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait((sub["member"]["Destination"], headers, json.dumps(doc).encode()))
        self._ensure_worker()

    def after(self, delay: float, fn: Callable[[], None]) -> None:
        timer = threading.Timer(max(0.0, delay) + 0.01, fn)
        timer.daemon = True
        timer.start()

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._deliver, name="redfish-events", daemon=True)
                self._worker.start()

    def _deliver(self) -> None:
        import requests
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        session = requests.Session()
        session.trust_env = False   # no proxies: destinations are on the lab's own network
        while True:
            dest, headers, body = self._queue.get()
            for attempt in range(1 + RETRY_ATTEMPTS):   # as a BMC's DeliveryRetryAttempts
                if attempt:
                    time.sleep(RETRY_INTERVAL)
                t0 = time.monotonic()
                try:
                    reply = session.post(dest, data=body, headers=headers, timeout=3, verify=False)
                    if reply.status_code < 500:
                        break
                    why = f"HTTP {reply.status_code}"
                except requests.RequestException as exc:
                    why = type(exc).__name__
                log.debug("event to %s not delivered (attempt %d) after %.1f s: %s", dest, attempt + 1,
                          time.monotonic() - t0, why)


def install(app: Any, events: EventService) -> None:  # pragma: no cover - runs in the emulator process
    """Add the EventService routes to the sushy-tools flask ``app``."""
    import flask

    def error(status: int, message: str) -> Any:
        body = {"error": {"code": "Base.1.0.GeneralError", "message": message,
                          "@Message.ExtendedInfo": [{"Message": message}]}}
        return flask.Response(json.dumps(body), status=status, mimetype="application/json")

    def service() -> Any:
        return flask.jsonify({
            "@odata.type": "#EventService.v1_7_0.EventService", "@odata.id": ROOT, "Id": "EventService",
            "Name": "Event Service", "ServiceEnabled": True, "DeliveryRetryAttempts": RETRY_ATTEMPTS,
            "DeliveryRetryIntervalSeconds": RETRY_INTERVAL,
            "EventTypesForSubscription": ["StatusChange", "Alert", "ResourceUpdated"],
            "Subscriptions": {"@odata.id": SUBS},
        })

    def collection() -> Any:
        if flask.request.method == "POST":
            status, body = events.subscribe(flask.request.get_json(silent=True))
            if status != 201:
                return error(status, body["message"])
            resp = flask.jsonify(body)
            resp.status_code = 201
            resp.headers["Location"] = body["@odata.id"]
            return resp
        links = events.members()
        return flask.jsonify({"@odata.id": SUBS, "Name": "Event Subscriptions",
                              "Members@odata.count": len(links), "Members": [{"@odata.id": p} for p in links]})

    def member(sid: str) -> Any:
        if flask.request.method == "DELETE":
            return flask.Response(status=204) if events.delete(sid) else error(404, f"no subscription {sid}")
        found = events.get(sid)
        return flask.jsonify(found) if found is not None else error(404, f"no subscription {sid}")

    app.add_url_rule(ROOT, "anvil_event_service", service, methods=["GET"])
    app.add_url_rule(SUBS, "anvil_event_subscriptions", collection, methods=["GET", "POST"])
    app.add_url_rule(f"{SUBS}/<sid>", "anvil_event_subscription", member, methods=["GET", "DELETE"])

    def link_from_root(response: Any) -> Any:
        if flask.request.path.rstrip("/") != "/redfish/v1" or flask.request.method != "GET" \
                or response.status_code != 200:
            return response
        try:
            body = json.loads(response.get_data())
        except ValueError:
            return response
        body["EventService"] = {"@odata.id": ROOT}
        response.set_data(json.dumps(body, indent=1))
        return response

    app.after_request(link_from_root)
