"""Microversions (``X-OpenStack-Ironic-API-Version``) and the version documents.

A request without the header is served as the minimum version, ``latest`` as the maximum;
one outside the range is refused with 406, as Ironic does, and every answer (errors too)
carries the range and the version it was served at, which is what clients negotiate from.
The maximum is 1.73, the version that named ``deploy`` and ``undeploy``: fields that later
versions added are not served, so a client never waits on one Anvil does not keep.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

MIN = (1, 1)
MAX = (1, 73)
HEADER = "X-OpenStack-Ironic-API-Version"
MIN_HEADER = "X-OpenStack-Ironic-API-Minimum-Version"
MAX_HEADER = "X-OpenStack-Ironic-API-Maximum-Version"
PREFIX = "/baremetal"
Version = tuple[int, int]


class VersionError(Exception):
    """A version header that is malformed (400) or outside the range (406)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def text(v: Version) -> str:
    return f"{v[0]}.{v[1]}"


def negotiate(request: web.Request) -> Version:
    raw = request.headers.get(HEADER, "").strip()
    if not raw:
        return MIN
    if raw.lower() == "latest":
        return MAX
    m = re.fullmatch(r"(\d{1,3})\.(\d{1,4})", raw)
    if m is None:
        raise VersionError(400, f"Invalid value for {HEADER} header: {raw[:40]!r} (MAJOR.MINOR or latest)")
    want = (int(m.group(1)), int(m.group(2)))
    if not MIN <= want <= MAX:
        raise VersionError(406, f"Version {text(want)} was requested but the minor version is not supported by "
                                f"this service. The supported version range is: [{text(MIN)}, {text(MAX)}].")
    return want


def stamp(resp: web.StreamResponse, version: Version) -> None:
    resp.headers[MIN_HEADER] = text(MIN)
    resp.headers[MAX_HEADER] = text(MAX)
    resp.headers[HEADER] = text(version)
    resp.headers["Vary"] = HEADER


def base_url(request: web.Request) -> str:
    """``scheme://host`` as the client reached us (for links and ``next``)."""
    return f"{request.scheme}://{request.host}"


def link(request: web.Request, path: str, rel: str = "self") -> dict[str, str]:
    return link_at(base_url(request), path, rel)


def link_at(base: str, path: str, rel: str = "self") -> dict[str, str]:
    """:func:`link` under ``base`` (:func:`base_url`, read beforehand): for renders off the event loop."""
    return {"href": f"{base}{PREFIX}/{path.lstrip('/')}", "rel": rel}


def links(request: web.Request, path: str) -> list[dict[str, str]]:
    """Ironic's pair: the versioned ``self`` and the unversioned ``bookmark``."""
    return links_at(base_url(request), path)


def links_at(base: str, path: str) -> list[dict[str, str]]:
    return [link_at(base, f"v1/{path}"), link_at(base, path, "bookmark")]


def _v1_summary(request: web.Request) -> dict[str, Any]:
    return {"id": "v1", "links": [link(request, "v1/")], "status": "CURRENT", "min_version": text(MIN),
            "version": text(MAX)}


def root_document(request: web.Request) -> dict[str, Any]:
    return {"name": "OpenStack Ironic API",
            "description": "Anvil's Bare Metal API: Ironic's clients drive Anvil's blades (nodes), their NICs "
                           "(ports) and profiles (deploy).",
            "default_version": _v1_summary(request), "versions": [_v1_summary(request)]}


def v1_document(request: web.Request) -> dict[str, Any]:
    return {"id": "v1",
            "links": [link(request, "v1/"),
                      {"href": "https://docs.openstack.org/ironic/latest/contributor/webapi.html",
                       "rel": "describedby", "type": "text/html"}],
            "media_types": [{"base": "application/json", "type": "application/vnd.openstack.ironic.v1+json"}],
            "nodes": links(request, "nodes"), "ports": links(request, "ports"),
            "drivers": links(request, "drivers"), "version": _v1_summary(request)}
