"""Optional Python packages: which extra brings each, and one error that says how to install it.

``anvil lab`` and ``anvil demo`` run third-party emulators that ship in the ``[lab]``
extra, not in the appliance's own dependencies. A command that needs them checks first
(:func:`require`), so a missing package is a one-line instruction, never a traceback.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from appliance.errors import AnvilError

INSTALL_HINT = ("uv pip install -e '.[{extra}]' in the source tree (or ./dev.sh install), "
                "or pip install 'anvil-appliance[{extra}]'")


@dataclass(frozen=True, slots=True)
class OptionalPackage:
    """An importable module, the distribution that provides it, and the extra that brings that."""

    module: str
    package: str
    extra: str


# What the lab's emulators import: sushy-tools (with flask and bcrypt) and waitress serve the
# Redfish BMCs; snmpsim (with pysmi) is the SNMP switch.
LAB_REDFISH = (
    OptionalPackage("sushy_tools", "sushy-tools", "lab"),
    OptionalPackage("flask", "flask (from sushy-tools)", "lab"),
    OptionalPackage("bcrypt", "bcrypt (from sushy-tools)", "lab"),
    OptionalPackage("waitress", "waitress", "lab"),
)
LAB_SNMP = (
    OptionalPackage("snmpsim", "snmpsim", "lab"),
    OptionalPackage("pysmi", "pysmi", "lab"),
)
KNOWN = {o.module: o for o in (*LAB_REDFISH, *LAB_SNMP)}


class MissingDependency(AnvilError):
    """An optional package is not installed; the message names it and how to install it."""

    def __init__(self, missing: Iterable[OptionalPackage], *, needed_for: str) -> None:
        self.missing = tuple(missing)
        extras = sorted({o.extra for o in self.missing})
        names = ", ".join(o.package for o in self.missing)
        how = " and ".join(f"the [{e}] extra: " + INSTALL_HINT.format(extra=e) for e in extras)
        super().__init__(f"{needed_for} needs {names}, which {'is' if len(self.missing) == 1 else 'are'} not "
                         f"installed; install {how}")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):   # a parent package missing, or a module left half-imported
        return False


def require(modules: Iterable[OptionalPackage], *, needed_for: str,
            installed: Callable[[str], bool] = _installed) -> None:
    """Raise MissingDependency naming every one of ``modules`` that cannot be imported."""
    missing = [o for o in modules if not installed(o.module)]
    if missing:
        raise MissingDependency(missing, needed_for=needed_for)


def from_import_error(exc: ModuleNotFoundError, *, needed_for: str = "this command") -> MissingDependency | None:
    """The MissingDependency for an import that failed on a known optional package, else None."""
    top = (exc.name or "").split(".", 1)[0]
    known = KNOWN.get(top)
    return MissingDependency([known], needed_for=needed_for) if known is not None else None
