"""Redfish EventService subscriptions (work done in the driver's threads).

The subscription's ``HttpHeaders`` carry the token the BMC sends back with every event:
they are a secret, so no error raised here quotes the request body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from appliance.drivers.errors import BadSettings, Unsupported
from appliance.drivers.redfish.session import Connection, Target, link, raise_for_status


def _path(location: str) -> str:
    """A Location or @odata.id as a path on the BMC (some BMCs answer absolute URLs)."""
    parts = urlsplit(location)
    return parts.path.rstrip("/") if parts.scheme else location.rstrip("/")


def subscribe(conn: Connection, target: Target, blade: str, op: str, destination: str, context: str,
              headers: Mapping[str, str]) -> str | None:
    root = conn.get("/redfish/v1/", blade, op)
    service_path = link(root, "EventService")
    if service_path is None:
        return None
    try:
        service = conn.get(service_path, blade, op)
    except Unsupported:
        return None
    subs = link(service, "Subscriptions")
    if service.get("ServiceEnabled") is False or subs is None:
        return None
    body: dict[str, Any] = {"Destination": destination, "Context": context, "Protocol": "Redfish",
                            "HttpHeaders": [dict(headers)], "EventTypes": ["Alert"]}
    reply = conn.request("POST", subs, blade, op, body)
    if reply.status == 400:
        # EventTypes is deprecated since Redfish 2021.2; newer services may refuse it.
        del body["EventTypes"]
        reply = conn.request("POST", subs, blade, op, body)
    raise_for_status(reply, blade, op, f"POST {subs} (Destination {destination})")
    uri = reply.headers.get("location") or reply.body.get("@odata.id")
    if not uri:
        raise BadSettings(blade, "redfish", op, f"POST {subs}: the BMC named no subscription (no Location)")
    return _path(str(uri))


def unsubscribe(conn: Connection, target: Target, blade: str, op: str, uri: str) -> None:
    reply = conn.request("DELETE", _path(uri), blade, op)
    if reply.status == 404:
        return
    raise_for_status(reply, blade, op, f"DELETE {uri}")
