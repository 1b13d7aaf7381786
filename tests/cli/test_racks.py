"""``anvil rack`` and ``anvil blade set-rack`` / ``enroll --rack`` as an operator runs them: the token is
written once, 0600, and never shown by list; bad input names what is wrong and changes nothing."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.cli.conftest import Anvil
from tests.cli.test_blades import BMC, PASSWORD


def _racks(anvil: Anvil) -> dict[str, dict[str, object]]:
    return {r["name"]: r for r in json.loads(anvil("rack", "list", "-o", "json").out)}


def test_racks_are_added_listed_cabled_and_removed(anvil: Anvil, tmp_path: Path) -> None:
    token_file = tmp_path / "rack-a.token"
    out = anvil("rack", "add", "rack-a", "--network", "10.77.0.0/24", "--token-file", str(token_file)).out
    assert str(token_file) in out and "--rack-token" in out
    token = token_file.read_text().strip()
    assert token.startswith("anvil-rack-") and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    printed = anvil("rack", "add", "rack-b", "--network", "10.78.0.1/24").out
    assert "anvil-rack-" in printed
    anvil("blade", "enroll", "blade01", "--bmc", BMC, "--username", "admin", "--password-stdin",
          "--nic", "eth0=52:54:00:00:01:01", "--rack", "rack-a", input=PASSWORD + "\n")
    anvil("blade", "enroll", "blade02", "--bmc", BMC, "--username", "admin", "--password-stdin",
          "--nic", "eth0=52:54:00:00:02:01", input=PASSWORD + "\n")
    assert "served by rack rack-b" in anvil("blade", "set-rack", "blade02", "rack-b").out
    racks = _racks(anvil)
    assert racks["rack-a"]["blades"] == ["blade01"] and racks["rack-b"]["networks"] == ["10.78.0.0/24"]
    assert racks["rack-a"]["health"] == "never"
    table = anvil("rack", "list").out
    assert "rack-a" in table and "never" in table and token not in table
    assert token not in anvil("rack", "show", "rack-a", "-o", "json").out
    refused = anvil("rack", "remove", "rack-b", check=False)
    assert refused.code != 0 and "blade02" in refused.err
    anvil("blade", "set-rack", "blade02", "--none")
    anvil("rack", "remove", "rack-b")
    assert list(_racks(anvil)) == ["rack-a"]


def test_bad_rack_input_names_what_is_wrong_and_changes_nothing(anvil: Anvil, tmp_path: Path) -> None:
    bad = anvil("rack", "add", "Rack_A", check=False)
    assert bad.code != 0 and "Rack_A" in bad.err and "anvil: error:" in bad.err
    bad = anvil("rack", "add", "rack-a", "--network", "10.77.0", check=False)
    assert bad.code != 0 and "network[0]" in bad.err and "10.77.0" in bad.err
    exists = tmp_path / "taken.token"
    exists.write_text("someone else's")
    bad = anvil("rack", "add", "rack-a", "--token-file", str(exists), check=False)
    assert bad.code != 0 and "exists" in bad.err and exists.read_text() == "someone else's"
    assert _racks(anvil) == {}
    bad = anvil("blade", "enroll", "blade01", "--bmc", BMC, "--username", "admin", "--password-stdin",
                "--rack", "rack-zz", input=PASSWORD + "\n", check=False)
    assert bad.code != 0 and "rack-zz" in bad.err
    assert json.loads(anvil("blade", "list", "-o", "json").out) == []
    bad = anvil("blade", "set-rack", "blade01", check=False)
    assert bad.code != 0 and "--none" in bad.err
