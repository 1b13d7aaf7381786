"""Typed errors of the appliance.

Every error raised on purpose derives from :class:`AnvilError`, carries the
context needed to act on it, and says whether retrying can help::

    AnvilError
    ├── ConfigError            a configuration value is wrong (file:key: reason)
    ├── ValidationError        a document or request is invalid; carries issues with paths
    ├── NotFound               a named object does not exist (kind, name, tenant)
    ├── Conflict               the change collides with existing state (duplicate name,
    │                          identity already held, live binding exists)
    ├── IdempotencyMismatch    an idempotency key was sent again with another request
    ├── PoolExhausted          an identity pool has no free identity left
    ├── SecretsError           the secrets key is missing, unreadable or wrong
    ├── ListenError            a service cannot listen on its address (taken, not allowed)
    ├── BackupError            a backup archive cannot be written or restored
    └── DriverError            hardware access failed (see appliance.drivers.errors)

HTTP status mapping lives only at the API edge (appliance/api/errors.py).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field


class AnvilError(Exception):
    """Root of all appliance errors; ``retryable`` says whether trying again may help."""

    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(AnvilError):
    """A configuration value is invalid; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Issue:
    """One validation problem: where (a dotted path), what is wrong, and the source line if known."""

    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.path}: {self.reason}" if self.path else f"{where}{self.reason}"


class ValidationError(AnvilError):
    """An input document is invalid. ``issues`` lists every problem with its path."""

    MAX_ISSUES = 100     # a hostile document can have 80,000 problems; nobody reads past the first hundred
    MAX_REASON = 300

    def __init__(self, issues: list[Issue], *, source: str | None = None) -> None:
        shown = [i if len(i.reason) <= self.MAX_REASON else Issue(i.path[:200], i.reason[:self.MAX_REASON] + "…",
                                                                  i.line)
                 for i in issues[:self.MAX_ISSUES]]
        if len(issues) > self.MAX_ISSUES:
            shown.append(Issue("", f"… and {len(issues) - self.MAX_ISSUES} more problems not shown"))
        self.issues = shown
        self.source = source
        prefix = f"{source}: " if source else ""
        first = str(self.issues[0]) if self.issues else "invalid input"
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(f"{prefix}{first}{more}")


class NotFound(AnvilError):
    """A named object does not exist. ``hint`` (a suggestion drawn only from what the caller
    may see, appliance.domain.suggest) follows the reason after a semicolon."""

    def __init__(self, kind: str, name: str, *, tenant: str | None = None, hint: str | None = None) -> None:
        self.kind, self.name, self.tenant, self.hint = kind, name, tenant, hint
        where = f" in tenant {tenant!r}" if tenant else ""
        super().__init__(f"{kind} {name!r} not found{where}" + (f"; {hint}" if hint else ""))


class Conflict(AnvilError):
    """The requested change collides with existing state."""


class IdempotencyMismatch(AnvilError):
    """An idempotency key was sent again with a different request (HTTP 422)."""


class PoolExhausted(AnvilError):
    """An identity pool has no free identity."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        super().__init__(f"identity pool {pool!r} is exhausted")


class SecretsError(AnvilError):
    """The secrets key cannot be used."""


class ListenError(AnvilError):
    """A service cannot listen on its configured address; says which setting and variable change it."""

    def __init__(self, service: str, address: str, key: str, env: str, exc: OSError) -> None:
        self.address, self.key, self.env = address, key, env
        # asyncio words it "error while attempting to bind on address (…): …": the errno says it plainly.
        why = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
        hint = " (is another `anvil serve` running?)" if exc.errno == errno.EADDRINUSE else ""
        super().__init__(f"cannot listen on {address} for {service}: {why.lower()}{hint}; choose another "
                         f"address with {key} in the configuration, or {env}=HOST:PORT")


@dataclass(frozen=True, slots=True)
class ErrorContext:
    """Context fields shared by errors raised inside jobs and drivers."""

    blade: str | None = None
    profile: str | None = None
    job: str | None = None
    step: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class BackupError(AnvilError):
    """A backup archive cannot be written or restored (wrong passphrase, damaged, not fresh)."""
