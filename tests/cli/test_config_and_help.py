"""Configuration, help and exit statuses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import yaml

from tests.cli.conftest import Anvil

COMMANDS = [
    ["profile", "import"], ["profile", "export"], ["profile", "list"], ["profile", "show"],
    ["profile", "validate"], ["profile", "delete"], ["template", "instantiate"], ["pool", "create"],
    ["pool", "list"], ["pool", "show"], ["blade", "enroll"], ["blade", "list"], ["blade", "show"],
    ["blade", "delete"], ["config", "show"], ["serve"],
]


def test_every_command_has_help(anvil: Anvil) -> None:
    """Every command and subcommand answers --help (in-process: it is click's own path;
    the top level goes through the real command once)."""
    from click.testing import CliRunner

    from appliance.cli.main import cli

    assert "Usage:" in anvil("--help").out
    runner = CliRunner()
    seen = []

    def walk(group: object, path: list[str]) -> None:
        if not isinstance(group, click.Group):
            return
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            res = runner.invoke(cli, [*path, name, "--help"])
            assert res.exit_code == 0 and "Usage:" in res.output, (path, name, res.output)
            seen.append(" ".join([*path, name]))
            walk(cmd, [*path, name])

    walk(cli, [])
    for cmd in COMMANDS:
        assert " ".join(cmd) in seen, cmd


def test_the_command_list_is_shown_without_importing_any_command() -> None:
    """`anvil --help` lists the commands from a table (CLI start-up: no command module, no store,
    no services); the table's lines are the commands' own."""
    import subprocess
    import sys

    code = ("import sys\nfrom appliance.cli.main import cli\n"
            "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('appliance.cli.', 'appliance.services', "
            "'appliance.store', 'sqlalchemy', 'pydantic')) and m not in ('appliance.cli.main', "
            "'appliance.cli.errors')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]", out
    from appliance.cli.main import COMMANDS as TABLE
    from appliance.cli.main import cli

    ctx = click.Context(cli)
    for name, (_module, _attr, line) in TABLE.items():
        command = cli.get_command(ctx, name)
        assert command is not None and (command.help or "").splitlines()[0] == line, name


def test_config_show_masks_the_store_password(anvil: Anvil, tmp_path: Path, anvil_env: dict[str, str]) -> None:
    Path(anvil_env["ANVIL_CONFIG"]).write_text(
        '[store]\nurl = "postgresql+psycopg://anvil:hunter2@db.example:5432/anvil"\n[api]\nlisten = "0.0.0.0:9443"\n'
    )
    res = anvil("config", "show")
    assert "hunter2" not in res.out
    data = yaml.safe_load(res.out)
    assert data["store"]["url"] == "postgresql+psycopg://anvil:***@db.example:5432/anvil"
    assert data["api"]["listen"] == "0.0.0.0:9443"


def test_environment_overrides_the_file(anvil: Anvil, anvil_env: dict[str, str]) -> None:
    Path(anvil_env["ANVIL_CONFIG"]).write_text('[api]\nlisten = "0.0.0.0:9443"\n')
    data = yaml.safe_load(anvil("config", "show", env={"ANVIL_API_LISTEN": "127.0.0.1:7443"}).out)
    assert data["api"]["listen"] == "127.0.0.1:7443"
    assert data["state_dir"] == anvil_env["ANVIL_STATE_DIR"]


def test_bad_config_value_names_file_and_key(anvil: Anvil, anvil_env: dict[str, str]) -> None:
    Path(anvil_env["ANVIL_CONFIG"]).write_text('[network]\nparking_vlan = 5000\n')
    res = anvil("config", "show", check=False)
    assert res.code == 1
    assert f"{anvil_env['ANVIL_CONFIG']}:network.parking_vlan:" in res.err
    Path(anvil_env["ANVIL_CONFIG"]).write_text('[api]\nbogus = 1\n')
    res = anvil("config", "show", check=False)
    assert "api.bogus" in res.err


def test_explicit_config_flag(anvil: Anvil, tmp_path: Path) -> None:
    cfg = tmp_path / "other.toml"
    cfg.write_text('log_level = "DEBUG"\n')
    assert yaml.safe_load(anvil("--config", str(cfg), "config", "show").out)["log_level"] == "DEBUG"
    res = anvil("--config", str(tmp_path / "missing.toml"), "config", "show", check=False)
    assert res.code == 1 and "no such configuration file" in res.err


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "anvil"
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "anvil" in res.stdout
