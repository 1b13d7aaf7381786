"""The suite's order under ``--dist worksteal`` (tests/support/order.py): the longest modules first,
each module's tests together and in their order; any other run keeps the collection order."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.order import (
    DURATIONS,
    REPO,
    longest_modules_first,
    module_seconds,
    parse_durations,
    render_durations,
)


def test_listed_modules_run_first_longest_first_and_a_module_stays_together_in_its_order() -> None:
    items = ["a.py::t1", "b.py::t1", "a.py::t2", "c.py::t[x]", "c.py::t[x]", "d.py::t1", "b.py::t2"]
    seconds = {"c.py": 50.0, "b.py": 90.0}
    assert longest_modules_first(items, str, seconds) == [
        "b.py::t1", "b.py::t2", "c.py::t[x]", "c.py::t[x]", "a.py::t1", "a.py::t2", "d.py::t1"]


def test_the_order_is_the_same_for_equal_node_ids() -> None:
    # schemathesis's generated cases share one node id; both workers must see them in one order.
    items = [("m.py::case", n) for n in range(5)] + [("z.py::t", 9)]
    assert longest_modules_first(items, lambda it: it[0], {"z.py": 1.0}) == [items[-1], *items[:5]]


@pytest.mark.parametrize(("text", "message"), [
    ("12 tests/a.py extra\n", "durations.txt:1: '12 tests/a.py extra': expected 'SECONDS tests/path/test_x.py'"),
    ("# c\nabc tests/a.py\n", "durations.txt:2: 'abc' is not a number of seconds"),
    ("12 tests/a\n", "durations.txt:1: 'tests/a' is not a test module path"),
    ("1 tests/a.py\n2 tests/a.py\n", "durations.txt:2: tests/a.py is listed twice"),
])
def test_a_bad_durations_line_is_named_with_its_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_durations(text, "durations.txt")
    assert message in str(exc.value)


def test_the_checked_in_list_parses_and_names_only_modules_that_exist() -> None:
    seconds = parse_durations(DURATIONS.read_text(), str(DURATIONS))
    assert seconds, "tests/durations.txt lists no module"
    missing = [m for m in seconds if not (REPO / m).is_file()]
    assert not missing, (f"{DURATIONS} lists modules that are gone: {missing}; regenerate it from a run's "
                         "junit.xml (python -m tests.support.order test-artifacts/junit.xml)")


def test_the_list_is_made_from_a_junit_report_summing_each_modules_tests_and_classes() -> None:
    junit = """<testsuites><testsuite name="pytest">
      <testcase classname="tests.cli.test_readme" name="test_a" time="177.1"/>
      <testcase classname="tests.unit.test_x.TestThing" name="test_b" time="12.5"/>
      <testcase classname="tests.unit.test_x" name="test_c" time="0.5"/>
      <testcase classname="tests.unit.test_small" name="test_d" time="3"/>
    </testsuite></testsuites>"""
    files = {"tests/cli/test_readme.py", "tests/unit/test_x.py", "tests/unit/test_small.py"}
    totals = module_seconds(junit, files.__contains__)
    assert totals == {"tests/cli/test_readme.py": 177.1, "tests/unit/test_x.py": 13.0, "tests/unit/test_small.py": 3.0}
    text = render_durations(totals, "run.xml")
    assert parse_durations(text, "rendered") == {"tests/cli/test_readme.py": 177.1, "tests/unit/test_x.py": 13.0}


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in ``cwd`` with only xdist and the order plugin (other plugins' imports cost seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANVIL_", "PYTEST_"))}
    env.update(PYTHONPATH=str(REPO), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "xdist", "-p", "tests.support.order",
                           "-p", "no:cacheprovider", "-q", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


SUITE = {
    "test_a.py": "def test_a1(): pass\ndef test_a2(): pass\n",
    "test_b.py": "def test_b1(): pass\n",
    "test_c.py": "def test_c1(): pass\ndef test_c2(): pass\n",
}


def _run_order(tmp_path: Path, *args: str) -> list[str]:
    """The node ids a worker (or the single process) collected, in its order."""
    for name, text in SUITE.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "durations.txt").write_text("5 test_c.py\n9 test_b.py\n")
    # Each process writes what it collected, in its order, next to the tests.
    (tmp_path / "conftest.py").write_text(
        "import os\n"
        "def pytest_collection_finish(session):\n"
        "    who = os.environ.get('PYTEST_XDIST_WORKER', 'main')\n"
        "    with open(f'order-{who}.txt', 'w') as fh:\n"
        "        fh.write('\\n'.join(i.nodeid for i in session.items))\n")
    res = _pytest(tmp_path, f"--test-durations={tmp_path / 'durations.txt'}", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    orders = {p.name: p.read_text().split("\n") for p in tmp_path.glob("order-*.txt")}
    assert orders, res.stdout
    first, *others = orders.values()
    assert all(o == first for o in others), f"workers collected different orders: {orders}"
    return first


def test_xdist_workers_under_worksteal_collect_the_longest_modules_first(tmp_path: Path) -> None:
    order = _run_order(tmp_path, "-n", "2", "--dist", "worksteal")
    assert order == ["test_b.py::test_b1", "test_c.py::test_c1", "test_c.py::test_c2",
                     "test_a.py::test_a1", "test_a.py::test_a2"]


@pytest.mark.parametrize("args", [(), ("-n", "2")], ids=["no-xdist", "dist-load"])
def test_other_runs_keep_the_collection_order(tmp_path: Path, args: tuple[str, ...]) -> None:
    assert _run_order(tmp_path, *args) == [f"test_{m}.py::test_{m}{n}" for m, n in
                                           [("a", 1), ("a", 2), ("b", 1), ("c", 1), ("c", 2)]]


def test_a_bad_list_stops_a_worksteal_run_before_any_test(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text("def test_a(): pass\n")
    (tmp_path / "bad.txt").write_text("ten tests/test_a.py\n")
    res = _pytest(tmp_path, "-n", "2", "--dist", "worksteal", f"--test-durations={tmp_path / 'bad.txt'}")
    assert res.returncode == pytest.ExitCode.USAGE_ERROR, res.stdout + res.stderr
    assert re.search(r"test order: .*bad\.txt:1: 'ten' is not a number of seconds", res.stderr), res.stderr
