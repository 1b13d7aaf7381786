"""anvil blade discovered: list, enroll and dismiss machines that booted unknown."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.services.discovered import record
from appliance.store import open_store
from tests.cli.conftest import Anvil


def test_list_enroll_and_dismiss(anvil: Anvil, state_dir: Path) -> None:
    anvil("blade", "list")      # creates the store
    store = open_store(f"sqlite:///{state_dir / 'anvil.db'}")
    try:
        with store.write() as s:
            record(s, "52:54:04:00:00:01", None, "10.77.0.150", {"serial": "SN1", "vendor": "QEMU"})
            record(s, "52:54:04:00:00:02", "11111111-2222-3333-4444-555555555555", "10.77.0.151", {})
    finally:
        store.close()
    table = anvil("blade", "discovered").out
    assert "52:54:04:00:00:01" in table and "10.77.0.150" in table
    rows = json.loads(anvil("blade", "discovered", "-o", "json").out)
    assert {r["mac"] for r in rows} == {"52:54:04:00:00:01", "52:54:04:00:00:02"}
    done = anvil("blade", "discovered", "enroll", "52:54:04:00:00:01", "found-1", "--bmc", "fake://found-1",
                 "--username", "u", "--password-stdin", input="pw\n")
    assert "enrolled blade found-1" in done.out
    shown = json.loads(anvil("blade", "show", "found-1", "-o", "json").out)
    assert shown["nics"][0]["mac"] == "52:54:04:00:00:01" and shown["facts"]["discovered.vendor"] == "QEMU"
    anvil("blade", "discovered", "dismiss", "52-54-04-00-00-02")
    assert json.loads(anvil("blade", "discovered", "-o", "json").out) == []
    missing = anvil("blade", "discovered", "dismiss", "52:54:04:00:00:02", check=False)
    assert missing.code != 0 and missing.err.startswith("anvil: error:") and "not found" in missing.err
