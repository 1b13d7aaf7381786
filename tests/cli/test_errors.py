"""Every failing command reports in one format, ``anvil: error: <reason>`` on stderr, and
``internal error`` is kept for bugs: a taken port or a missing optional package says what to do."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from appliance.cli.errors import PREFIX, report
from tests.cli.conftest import Anvil, Result

EXAMPLES = Path(__file__).resolve().parents[2] / "profiles" / "examples"


def _assert_one_format(args: tuple[str, ...], res: Result, *, logs: bool = False) -> list[str]:
    """The reasons given; ``logs``: the command logs to stderr too (serve), so only lines
    that start with ``anvil:`` are its report."""
    lines = [ln for ln in res.err.splitlines() if ln.strip() and (not logs or ln.startswith("anvil:"))]
    assert res.code != 0, (args, res)
    assert lines, (args, res)
    assert all(ln.startswith(PREFIX) for ln in lines), (args, res.err)
    for other in ("Error:", "anvil: invalid", "internal error", "Traceback", "Usage:"):
        assert other not in res.err, (args, res.err)
    return [ln.removeprefix(PREFIX) for ln in lines]


def test_failing_commands_all_report_anvil_error_on_stderr(anvil: Anvil, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((EXAMPLES / "web-01.yaml").read_text().replace("02:a0:00:00:00:01", "02:zz:00:00:00:01")
                   .replace("native: 100", "native: 4095"))
    cases: list[tuple[tuple[str, ...], int, list[str]]] = [
        (("nosuch",), 2, ["No such command 'nosuch' (see 'anvil --help')"]),
        (("blade", "enroll"), 2, ["Missing argument 'NAME' (see 'anvil blade enroll --help')"]),
        (("profile", "validate", "--bogus", "x"), 2,
         ["No such option '--bogus' (see 'anvil profile validate --help')"]),
        (("switch", "port-vlans", "sw", "1", "--tagged", "x"), 2,
         ["Invalid value for --tagged: 'x' is not a VLAN list like 10,20,30-32 "
          "(see 'anvil switch port-vlans --help')"]),
        (("profile", "import", str(tmp_path / "missing.yaml")), 1, [f"{tmp_path / 'missing.yaml'}: No such file or "
                                                                      "directory"]),
        (("blade", "show", "ghost"), 1, ["blade 'ghost' not found"]),
        (("job", "show", "nope"), 1, ["job 'nope' not found"]),
        (("lab", "up", "--redfish", "0"), 1, ["the lab needs at least one blade (--redfish, --ipmi or --vms)"]),
        (("--config", str(tmp_path / "none.toml"), "blade", "list"), 1,
         [f"{tmp_path / 'none.toml'}: no such configuration file"]),
        (("profile", "validate", "--document-only", str(bad)), 2, [
            f'{bad}: line 20: spec.identity.nics[0].mac: "02:zz:00:00:00:01" is not a MAC address',
            f"{bad}: line 22: spec.identity.nics[0].vlans.native: VLAN 4095 is outside 1-4094"]),
    ]
    for args, code, reasons in cases:
        res = anvil(*args, check=False)
        assert res.code == code, (args, res)
        assert _assert_one_format(args, res) == reasons


def test_a_taken_api_or_boot_port_names_the_address_and_what_changes_it(anvil: Anvil) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        for variable, service, key in (("ANVIL_API_LISTEN", "the API and console", "api.listen"),
                                       ("ANVIL_BOOT_LISTEN", "boot HTTP", "boot.listen")):
            args = ("serve", "--insecure-http")
            res = anvil(*args, env={variable: busy}, check=False)
            [reason] = _assert_one_format(args, res, logs=True)
            assert res.code == 1
            assert f"cannot listen on {busy} for {service}: address already in use (is another `anvil serve` " \
                   f"running?); choose another address with {key} in the configuration, or {variable}=HOST:PORT" \
                   in reason, reason


def test_lab_up_without_the_lab_extra_says_what_to_install(anvil: Anvil, tmp_path: Path, state_dir: Path) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    # As if sushy-tools' bcrypt were not installed: the import fails, find_spec finds nothing.
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['bcrypt'] = None\n")
    args = ("lab", "up", "--redfish", "1")
    res = anvil(*args, env={"PYTHONPATH": str(shim)}, check=False)
    [reason] = _assert_one_format(args, res)
    assert res.code == 1
    assert reason == ("the emulated rack (anvil lab up, anvil demo) needs bcrypt (from sushy-tools), which is not "
                      "installed; install the [lab] extra: uv pip install -e '.[lab]' in the source tree (or "
                      "./dev.sh install), or pip install 'anvil-appliance[lab]'")
    assert not (state_dir / "lab" / "lab.json").exists()   # refused before anything started


@pytest.mark.parametrize(("exc", "reason"), [
    (ModuleNotFoundError("No module named 'sushy_tools'", name="sushy_tools"),
     "this command needs sushy-tools, which is not installed; install the [lab] extra"),
    (PermissionError(13, "Permission denied", "/var/lib/anvil"), "/var/lib/anvil: Permission denied"),
])
def test_the_machine_saying_no_is_not_an_internal_error(exc: Exception, reason: str) -> None:
    found = report(exc)
    assert found is not None and found.status == 1 and found.lines[0].startswith(reason)


def test_a_bug_is_still_an_internal_error() -> None:
    assert report(ZeroDivisionError("division by zero")) is None
    assert report(ModuleNotFoundError("No module named 'nosuch'", name="nosuch")) is None
