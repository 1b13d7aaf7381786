"""How every ``anvil`` command reports a failure: one format on stderr, one exit status.

Every line of an error starts with the same prefix::

    anvil: error: <one-line reason>

A validation error prints one such line per problem, each naming the document, the line
when known, and the path (``anvil: error: web.yaml: line 9: spec.identity.nics[0].mac: …``).
Exit status: 1 when the operation was refused or failed, 2 for a usage or validation
error, 70 for a bug (the reason then says ``internal error``; ``-v`` shows the traceback).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import click

from appliance.errors import AnvilError, ValidationError
from appliance.extras import from_import_error

PREFIX = "anvil: error: "
EXIT_FAILED, EXIT_USAGE, EXIT_BUG = 1, 2, 70


@dataclass(frozen=True, slots=True)
class Report:
    lines: tuple[str, ...]
    status: int

    def print(self) -> None:
        for line in self.lines:
            click.echo(PREFIX + line, err=True)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _store_error(exc: Exception) -> bool:
    """A database driver error (the store is unreachable, locked, full…); only checked when
    SQLAlchemy is loaded, which it is whenever it raised."""
    sa_exc = sys.modules.get("sqlalchemy.exc")
    return sa_exc is not None and isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)


def report(exc: Exception) -> Report | None:
    """The report for an error that says what went wrong; None for a bug."""
    if isinstance(exc, click.exceptions.Abort):
        return Report(("aborted",), EXIT_FAILED)
    if isinstance(exc, click.UsageError):
        where = exc.ctx.command_path if exc.ctx is not None else "anvil"
        return Report((f"{_one_line(exc.format_message()).rstrip('.')} (see '{where} --help')",), exc.exit_code)
    if isinstance(exc, click.ClickException):
        return Report((_one_line(exc.format_message()),), exc.exit_code)
    if isinstance(exc, ValidationError):
        prefix = f"{exc.source}: " if exc.source else ""
        return Report(tuple(_one_line(f"{prefix}{issue}") for issue in exc.issues) or (str(exc),), EXIT_USAGE)
    if isinstance(exc, AnvilError):
        return Report((_one_line(str(exc)),), EXIT_FAILED)
    if isinstance(exc, ModuleNotFoundError):
        missing = from_import_error(exc)
        return Report((str(missing),), EXIT_FAILED) if missing is not None else None
    if _store_error(exc):
        cause = getattr(exc, "orig", None) or exc
        return Report((f"the store cannot be used: {_one_line(str(cause))} (store.url in the configuration, or "
                       "ANVIL_STORE_URL)",), EXIT_FAILED)
    if isinstance(exc, OSError) and exc.strerror:
        # The machine said no (a file missing or unreadable, a port taken, a disk full): not a bug.
        where = f"{exc.filename}: " if exc.filename else ""
        return Report((f"{where}{exc.strerror}",), EXIT_FAILED)
    return None


def bug(exc: BaseException) -> Report:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return Report((f"internal error (a bug; run with -v for the traceback): {exc.__class__.__name__}: {text}",),
                  EXIT_BUG)
