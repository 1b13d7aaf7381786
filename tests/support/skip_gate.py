"""In CI a skipped test is a failed run, unless the skip is on the allow-list.

A test that skips because it is not root or a peer binary is missing proves nothing, and
a run that only counts "passed" stays green while the end-to-end, VM, DHCP, tgt, OVS,
browser and benchmark tests silently do not run. So when ``ANVIL_CI=1`` (``./dev.sh test``,
and so CI, sets it) every skip whose test id is not on the allow-list
(``tests/skips_allowed.txt``, or ``--skips-allowed FILE``) makes the run fail at its end,
with the list of them. Skips during collection (a module's ``importorskip``) count too.
An xfail is not a skip.

The allow-list: one entry a line, an ``fnmatch`` pattern of pytest node ids followed by
``# why this test may skip in CI``; the comment is required. Blank and ``#`` lines are
comments. A bad file stops the run before any test.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

ALLOW_LIST = Path(__file__).resolve().parent.parent / "skips_allowed.txt"
CI_VARIABLE = "ANVIL_CI"


@dataclass(frozen=True, slots=True)
class Allowed:
    pattern: str
    why: str


def parse_allow_list(text: str, source: str) -> list[Allowed]:
    """The entries of an allow-list; ValueError naming ``source`` and the line when one is bad."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, sep, why = line.partition("#")
        pattern, why = pattern.strip(), why.strip()
        if not sep or not why:
            raise ValueError(f"{source}:{n}: {pattern!r} needs a comment saying why it may skip in CI (# ...)")
        if " " in pattern:
            raise ValueError(f"{source}:{n}: {pattern!r}: one test id pattern per line")
        out.append(Allowed(pattern, why))
    return out


def skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


class SkipGate:
    """The plugin registered in CI mode: notes every unlisted skip, fails the run at its end."""

    def __init__(self, allowed: list[Allowed], source: str) -> None:
        self.allowed = allowed
        self.source = source
        self.unlisted: list[tuple[str, str]] = []   # (node id, reason)
        self.reports: list[pytest.CollectReport | pytest.TestReport] = []

    def note(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        nodeid = report.nodeid or str(report.fspath)
        if any(fnmatch.fnmatchcase(nodeid, a.pattern) for a in self.allowed):
            return
        entry = (nodeid, skip_reason(report))
        if entry not in self.unlisted:   # xdist forwards a collection skip once per worker
            self.unlisted.append(entry)
            self.reports.append(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self.note(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.note(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.unlisted and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.unlisted:
            return
        tr = terminalreporter
        tr.section(f"{len(self.unlisted)} skipped test(s) not allowed to skip in CI ({CI_VARIABLE}=1)", red=True)
        for nodeid, reason in self.unlisted:
            tr.line(f"SKIP NOT ALLOWED {nodeid}: {reason}", red=True)
        tr.line(f"Give the test what it needs, or list it in {self.source} with a comment saying why "
                "it may skip in CI.", red=True)
        # Counted on the final line too, so the run does not read "N passed, M skipped" in green.
        tr.stats.setdefault("skipped, not allowed in CI", []).extend(self.reports)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--skips-allowed", metavar="FILE", default=str(ALLOW_LIST),
                     help=f"the allow-list of tests that may skip when {CI_VARIABLE}=1 (default: %(default)s)")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(CI_VARIABLE) != "1" or hasattr(config, "workerinput"):
        return   # xdist workers send their reports to the controller, which decides
    path = Path(config.getoption("--skips-allowed"))
    try:
        allowed = parse_allow_list(path.read_text(), str(path))
    except (OSError, ValueError) as exc:
        raise pytest.UsageError(f"skip allow-list: {exc}") from None
    config.pluginmanager.register(SkipGate(allowed, str(path)), "anvil-skip-gate")
