"""Driver errors: the only exceptions a driver raises.

::

    DriverError (appliance.errors.AnvilError)   blade/switch, driver, op, retryable
    ├── BmcUnreachable     no answer, refused, timed out             retryable
    ├── BmcBusy            BMC answered "busy / try later"           retryable
    ├── BmcAuthFailed      credentials refused                       fatal
    ├── Unsupported        the device cannot do this operation       fatal
    ├── BadSettings        the request is wrong for this device      fatal
    └── BmcFailure         the device reported a failure (HTTP 5xx, IPMI completion code)
                           retryable only when the device says so
"""

from __future__ import annotations

from appliance.errors import AnvilError


class DriverError(AnvilError):
    """A hardware operation failed. ``target`` is the blade or switch name."""

    retryable = False

    def __init__(self, target: str, driver: str, op: str, reason: str, *, retryable: bool | None = None) -> None:
        self.target, self.driver, self.op, self.reason = target, driver, op, reason
        if retryable is not None:
            self.retryable = retryable
        super().__init__(f"{driver} {op} on {target}: {reason}")

    @property
    def blade(self) -> str:
        return self.target


class BmcUnreachable(DriverError):
    retryable = True


class BmcBusy(DriverError):
    retryable = True


class BmcAuthFailed(DriverError):
    pass


class Unsupported(DriverError):
    pass


class BadSettings(DriverError):
    pass


class BmcFailure(DriverError):
    pass
