"""The tgtadm ``show`` parser against outputs captured from tgt 1.0.85 (Debian 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.drivers.tgt._parse import Connection, Lun, Nexus, ShowParseError, parse_targets

FIXTURES = Path(__file__).parent / "fixtures"


def _fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_no_targets_is_empty_output() -> None:
    assert parse_targets(_fixture("empty.txt")) == ()


def test_idle_targets_give_luns_and_acls_without_sessions() -> None:
    web, empty = parse_targets(_fixture("idle.txt"))
    assert (web.tid, web.name, web.state) == (1, "iqn.2026-11.io.anvil.san:web-01", "ready")
    assert web.nexuses == () and web.logged_in == frozenset()
    assert web.lun(0) == Lun(0, "controller", None, "IET     00010000", "beaf10")
    assert web.lun(1) == Lun(1, "disk", "/tmp/cap/run/disk dir/web-01.img",
                             "anvil-f2cf6ed5221b1405", "f2cf6ed5221b1405")
    assert web.acl == ("ALL", "iqn.2026-11.io.anvil:web-01", "iqn.2026-11.io.anvil:spare")
    assert web.initiator_acl == {"iqn.2026-11.io.anvil:web-01", "iqn.2026-11.io.anvil:spare"}
    assert (empty.tid, empty.name, empty.acl) == (3, "iqn.2026-11.io.anvil.san:empty", ())
    assert [lu.number for lu in empty.luns] == [0]


def test_sessions_carry_initiator_alias_and_connection_address() -> None:
    web, _ = parse_targets(_fixture("two-sessions.txt"))
    assert web.nexuses == (
        Nexus(1, "iqn.2026-11.io.anvil:web-01", "web 01 host", (Connection(0, "127.0.0.1"),)),
        Nexus(2, "iqn.2026-11.io.anvil:spare", "none", (Connection(0, "127.0.0.1"),)),
    )
    assert web.logged_in == {"iqn.2026-11.io.anvil:web-01", "iqn.2026-11.io.anvil:spare"}


def test_chap_accounts_skipped_and_address_rules_kept_apart_from_names() -> None:
    (t,) = parse_targets(_fixture("account-address-acl.txt"))
    assert (t.tid, t.name) == (7, "eui.02004567a425678d")
    assert t.acl == ("10.77.0.0/24", "eui.0123456789abcdef")
    assert t.initiator_acl == {"eui.0123456789abcdef"}


def test_session_being_torn_down_without_connection_is_not_logged_in() -> None:
    text = ("Target 2: iqn.2026-11.io.anvil.san:x\n"
            "    I_T nexus information:\n"
            "        I_T nexus: 9\n"
            "            Initiator: iqn.2026-11.io.anvil:a alias: none\n")
    (t,) = parse_targets(text)
    assert t.nexuses == (Nexus(9, "iqn.2026-11.io.anvil:a", "none", ()),)
    assert t.logged_in == frozenset()


def test_unknown_lun_fields_from_newer_tgt_are_ignored() -> None:
    text = _fixture("idle.txt").replace("            Online: Yes\n", "            Online: Yes\n            Future: 1\n")
    assert parse_targets(text) == parse_targets(_fixture("idle.txt"))


@pytest.mark.parametrize("text", [
    "tgtadm: invalid request\n",
    "    LUN information:\n",
    "Target 1: iqn.2026-11.io.anvil.san:x\n   System information:\n",
    "Target 1: iqn.2026-11.io.anvil.san:x\n    Mystery line\n",
    "Target 1: iqn.2026-11.io.anvil.san:x\n    I_T nexus information:\n        I_T nexus: x\n",
    "Target 1: iqn.2026-11.io.anvil.san:x\n    I_T nexus information:\n        I_T nexus: 3\n",
    "Target 1: iqn.2026-11.io.anvil.san:x\n    LUN information:\n            Type: disk\n",
])
def test_text_that_is_not_show_output_is_refused(text: str) -> None:
    with pytest.raises(ShowParseError):
        parse_targets(text)
