"""Run the longest test modules first, so the suite's two xdist workers finish together.

``./dev.sh test`` runs ``pytest -n 2 --dist worksteal``. Worksteal hands each worker one half of
the collection, in collection order, and when a worker runs dry it takes the later half of what
the other has not started yet. A long test near the end of a queue is therefore never shared out:
in collection order the VM-lab and e2e modules (70-190 s each) sit late in the first half, and
plain ``--dist load`` (which pre-assigns chunks of a quarter of what is left and never takes them
back) left one worker idle for ~190 s at the end of a 30-minute run. This plugin puts the modules
listed in ``tests/durations.txt`` first, longest first, and the rest after them in collection
order: whatever is left to steal at the end is then short.

Only whole modules move (a module's tests keep their order and stay together), so a module-scoped
fixture (a VM lab, a built ISO, a served rack) is still set up once per worker that runs the
module, as before; a steal can split at most the module at its boundary. Tests with equal node ids
(schemathesis's generated cases) keep their order, which every worker must see identically.

The order applies only under ``--dist worksteal``: with ``--dist load`` it would put all the long
modules in the first worker's first chunk (simulated on the a0d4e55 run: 550 s of tail instead of
190 s). Outside xdist it changes nothing either, so ``pytest tests/unit`` runs as written.

``python -m tests.support.order JUNIT.xml`` prints a new ``tests/durations.txt`` from a run's
``test-artifacts/junit.xml``; an outdated list only makes the order less good, never wrong.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    from xdist.workermanage import WorkerController

DURATIONS = Path(__file__).resolve().parent.parent / "durations.txt"
REPO = DURATIONS.parent.parent
LISTED_FROM_S = 10.0   # modules shorter than this stay in collection order, after the listed ones

T = TypeVar("T")


def parse_durations(text: str, source: str) -> dict[str, float]:
    """``seconds module-path`` per line (``#`` comments); ValueError naming ``source`` and the line."""
    out: dict[str, float] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.partition("#")[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{source}:{n}: {raw.strip()!r}: expected 'SECONDS tests/path/test_x.py'")
        seconds, module = fields
        try:
            value = float(seconds)
        except ValueError:
            raise ValueError(f"{source}:{n}: {seconds!r} is not a number of seconds") from None
        if not module.endswith(".py"):
            raise ValueError(f"{source}:{n}: {module!r} is not a test module path (…/test_x.py)")
        if module in out:
            raise ValueError(f"{source}:{n}: {module} is listed twice")
        out[module] = value
    return out


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def longest_modules_first(items: Sequence[T], nodeid: Callable[[T], str], seconds: Mapping[str, float]) -> list[T]:
    """``items`` grouped by module: listed modules by descending seconds, then the others in first-seen
    order; within a module the original order. Stable, so equal inputs give equal outputs."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(module_of(nodeid(item)), []).append(item)
    order = sorted(groups, key=lambda m: -seconds.get(m, 0.0))   # sorted() is stable: ties keep first-seen
    return [item for m in order for item in groups[m]]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--test-durations", metavar="FILE", default=str(DURATIONS),
                     help="seconds per test module; under --dist worksteal the longest modules run first "
                          "(default: %(default)s)")


# xdist resets a worker's --dist to "no"; the controller tells its workers the mode instead.
_WORKSTEAL = "anvil_worksteal"


def _durations(config: pytest.Config) -> dict[str, float]:
    path = Path(config.getoption("--test-durations"))
    try:
        return parse_durations(path.read_text(), str(path))
    except (OSError, ValueError) as exc:
        raise pytest.UsageError(f"test order: {exc}") from None


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and config.getoption("dist", "no") == "worksteal":
        _durations(config)   # a bad list stops the run here, before any worker starts


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: WorkerController) -> None:
    node.workerinput[_WORKSTEAL] = node.config.getoption("dist") == "worksteal"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    workerinput: dict[str, object] = getattr(config, "workerinput", {})
    if workerinput.get(_WORKSTEAL):
        items[:] = longest_modules_first(items, lambda item: item.nodeid, _durations(config))


# -- regenerating tests/durations.txt from a run's JUnit XML ------------------------------------------

def module_seconds(junit_xml: str, is_file: Callable[[str], bool] | None = None) -> dict[str, float]:
    """Seconds per test module in a pytest JUnit XML report (setup + call + teardown of each test);
    ``is_file(path)`` tells a module from a class (default: the path exists in this checkout)."""
    from defusedxml import ElementTree

    if is_file is None:
        is_file = lambda rel: (REPO / rel).is_file()   # noqa: E731
    root = ElementTree.fromstring(junit_xml)
    totals: dict[str, float] = defaultdict(float)
    for case in root.iter("testcase"):
        parts = (case.get("classname") or "").split(".")
        # classname is the module's dotted path, plus a class name for a test in a class.
        for cut in range(len(parts), 0, -1):
            rel = "/".join(parts[:cut]) + ".py"
            if is_file(rel):
                totals[rel] += float(case.get("time") or 0)
                break
    return dict(totals)


def render_durations(totals: Mapping[str, float], source: str) -> str:
    lines = [
        "# Seconds each test module took in a full `./dev.sh test` run (its test-artifacts/junit.xml):",
        "# tests/support/order.py runs these modules first, longest first, so the two xdist workers",
        f"# finish together. Modules under {LISTED_FROM_S:g} s are not listed (they run after these, in collection"
        " order).",
        f"# From {source}.",
        "# Regenerate: .venv/bin/python -m tests.support.order JUNIT.xml > tests/durations.txt",
    ]
    listed = sorted(((s, m) for m, s in totals.items() if s >= LISTED_FROM_S), key=lambda sm: (-sm[0], sm[1]))
    lines += [f"{s:6.1f}  {m}" for s, m in listed]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.support.order JUNIT.xml > tests/durations.txt", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        text = path.read_text()
    except OSError as exc:
        print(f"order: {path}: {exc.strerror}", file=sys.stderr)
        return 1
    sys.stdout.write(render_durations(module_seconds(text), str(path)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
