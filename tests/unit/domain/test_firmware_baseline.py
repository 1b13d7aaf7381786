"""Firmware baselines: the shipped one parses, bad ones are refused naming the place, compliance per component."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.domain import firmware
from appliance.drivers.protocols import FirmwareItem
from appliance.errors import ValidationError

SHIPPED = Path(__file__).resolve().parents[3] / "firmware" / "baselines" / "rack-2026q4.yaml"


def test_the_shipped_baseline_parses() -> None:
    b = firmware.parse(SHIPPED.read_text(), str(SHIPPED.name))
    assert b.name == "rack-2026q4"
    assert {c.name: c.version for c in b.components} == {"BIOS": "2.19.1", "BMC": "7.10.30.00", "NIC": "22.31.6"}


def test_image_and_checksum_go_together_and_stay_under_images() -> None:
    text = "name: x\ncomponents:\n  BIOS: {version: '2', image: /etc/passwd}\n  NIC: {version: '1', sha256: zz}\n"
    with pytest.raises(ValidationError) as err:
        firmware.parse(text, "x.yaml")
    shown = [(i.path, i.reason) for i in err.value.issues]
    assert ("x.yaml: components.BIOS",
            "image and sha256 go together (the image is checked before it is served)") in shown
    assert {"x.yaml: components.BIOS.image", "x.yaml: components.NIC.sha256"} <= {p for p, _ in shown}


def test_compliance_names_each_component() -> None:
    b = firmware.parse("name: r\ncomponents: {BIOS: '2.19.1', BMC: '1.0.0', CPLD: '3'}\n", "r.yaml")
    items = (FirmwareItem("BIOS", "1.0.0"), FirmwareItem("BMC", "1.0.0"), FirmwareItem("NIC", "1.0.0"))
    found = firmware.compliance(b, items)
    assert [(f.component, f.found, f.ok) for f in found] == [("BIOS", "1.0.0", False), ("BMC", "1.0.0", True),
                                                             ("CPLD", None, False)]
    assert not firmware.compliant(found)
    assert firmware.summary(found) == "BIOS 1.0.0 (want 2.19.1); CPLD missing (want 3)"
