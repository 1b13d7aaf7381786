"""Errors as Ironic's clients read them: ``{"error_message": "<JSON text>"}`` whose inner
document carries ``faultstring`` (the reason), ``faultcode`` (``Client`` for 4xx, ``Server``
for 5xx) and ``debuginfo``. Both python-ironicclient and openstacksdk unwrap it.

Anvil's errors map to Ironic's statuses: NotFound 404 ("Node X could not be found."),
ValidationError 400 (every problem, each with its field), Conflict 409 (clients retry it, as for
Ironic's locked node), role or tenant 403, an unsupported Ironic feature 501 (with the reason),
a BMC failure 503 when retrying may help, else 500.
"""

from __future__ import annotations

import json

from aiohttp import web

from appliance.drivers.errors import DriverError
from appliance.errors import AnvilError, Conflict, IdempotencyMismatch, NotFound, PoolExhausted, ValidationError

KINDS = {"blade": "Node", "port": "Port", "NIC": "Port", "driver": "Driver"}


class IronicError(AnvilError):
    """An answer this edge gives in Ironic's terms: ``status`` and Ironic's wording."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NotImplementedHere(IronicError):
    """An Ironic feature Anvil does not map (501), with the reason."""

    def __init__(self, message: str) -> None:
        super().__init__(501, message)


def response(status: int, message: str) -> web.Response:
    inner = {"faultstring": message, "faultcode": "Client" if status < 500 else "Server", "debuginfo": None}
    return web.json_response({"error_message": json.dumps(inner)}, status=status)


def from_anvil(exc: AnvilError) -> web.Response:
    from appliance.api.offload import Busy
    from appliance.api.spec import Forbidden

    if isinstance(exc, IronicError):
        return response(exc.status, exc.message)
    if isinstance(exc, NotFound):
        return response(404, f"{KINDS.get(exc.kind, exc.kind.capitalize())} {exc.name} could not be found.")
    if isinstance(exc, ValidationError):
        return response(400, "; ".join(str(i) for i in exc.issues) or exc.message)
    if isinstance(exc, Conflict | PoolExhausted | IdempotencyMismatch):
        return response(409, exc.message)
    if isinstance(exc, Forbidden):
        return response(403, exc.message)
    if isinstance(exc, Busy):
        return response(503, exc.message)
    if isinstance(exc, DriverError):
        return response(503 if exc.retryable else 500, f"the blade's BMC failed: {exc}")
    return response(500, exc.message)
