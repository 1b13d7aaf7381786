"""The CI skip gate (tests/support/skip_gate.py), run as pytest itself: a tiny test file in a
temporary directory, in a pytest subprocess with the gate as its only plugin of ours."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.skip_gate import ALLOW_LIST, parse_allow_list

REPO = Path(__file__).resolve().parents[2]

TESTS = """
import pytest

def test_runs():
    pass

def test_needs_a_tool():
    pytest.skip("frobnicator is not installed")

@pytest.mark.skipif(True, reason="needs hardware KVM")
def test_needs_kvm():
    pass

@pytest.mark.xfail(reason="known bug", strict=True)
def test_known_bug():
    assert False
"""


def run(tmp_path: Path, *args: str, ci: bool = True, allowed: str = "") -> subprocess.CompletedProcess[str]:
    (tmp_path / "allowed.txt").write_text(allowed)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANVIL_", "PYTEST_"))}
    # Only xdist and the gate: the other installed plugins' imports cost seconds per run.
    env.update(PYTHONPATH=str(REPO), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    if ci:
        env["ANVIL_CI"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "xdist", "-p", "tests.support.skip_gate",
                           "-p", "no:cacheprovider",
                           "-q", "-rs", f"--skips-allowed={tmp_path / 'allowed.txt'}", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    (tmp_path / "test_suite.py").write_text(TESTS)
    return tmp_path


def test_an_unlisted_skip_fails_the_run_and_is_named(suite: Path) -> None:
    res = run(suite, allowed="test_suite.py::test_needs_kvm   # CI has no hardware KVM\n")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 skipped test(s) not allowed to skip in CI" in res.stdout
    assert "SKIP NOT ALLOWED test_suite.py::test_needs_a_tool: frobnicator is not installed" in res.stdout
    assert "test_needs_kvm" not in res.stdout.split("not allowed to skip")[1]
    assert "1 skipped, not allowed in CI" in res.stdout.splitlines()[-1]
    assert "SKIPPED [1]" in res.stdout   # -rs still prints every skip with its reason


def test_listed_skips_and_xfails_pass(suite: Path) -> None:
    res = run(suite, allowed="# both may skip\ntest_suite.py::test_needs_*   # for the test of the gate\n")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "not allowed" not in res.stdout and "1 passed, 2 skipped, 1 xfailed" in res.stdout


def test_without_ci_a_skip_is_only_a_skip(suite: Path) -> None:
    res = run(suite, ci=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "not allowed" not in res.stdout


def test_a_skip_while_collecting_a_module_counts(tmp_path: Path) -> None:
    (tmp_path / "test_browserless.py").write_text(
        'import pytest\npytest.importorskip("no_such_module_anywhere")\n\ndef test_x():\n    pass\n')
    (tmp_path / "test_other.py").write_text("def test_y():\n    pass\n")
    res = run(tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "SKIP NOT ALLOWED test_browserless.py: could not import 'no_such_module_anywhere'" in res.stdout


def test_under_xdist_the_controller_fails_the_run(suite: Path) -> None:
    """As ./dev.sh test runs it: the skips happen on the workers."""
    res = run(suite, "-n", "2", allowed="test_suite.py::test_needs_kvm   # CI has no hardware KVM\n")
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stdout.count("SKIP NOT ALLOWED") == 1 and "test_needs_a_tool" in res.stdout


def test_an_entry_without_its_reason_stops_the_run(suite: Path) -> None:
    res = run(suite, allowed="\n\ntest_suite.py::test_needs_kvm\n")
    assert res.returncode == pytest.ExitCode.USAGE_ERROR, res.stdout + res.stderr
    assert "allowed.txt:3: 'test_suite.py::test_needs_kvm' needs a comment saying why" in res.stderr


def test_the_projects_allow_list_parses() -> None:
    for entry in parse_allow_list(ALLOW_LIST.read_text(), str(ALLOW_LIST)):
        assert entry.why


def test_dev_sh_test_runs_in_ci_mode_and_prints_the_skips() -> None:
    script = (REPO / "dev.sh").read_text()
    body = script[script.index("cmd_test() {"):]
    body = body[:body.index("\n}\n")]
    assert "export ANVIL_CI=" in body
    pytest_line = next(line for line in body.splitlines() if "-m pytest" in line)
    assert " -rs " in pytest_line
