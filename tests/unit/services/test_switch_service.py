"""Switch inventory: enrolment, cabling and its conflicts, and secrets that never show."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.drivers.protocols import Secret
from appliance.errors import Conflict, NotFound, ValidationError
from appliance.secrets import SecretBox
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.switches import SwitchService
from appliance.store import Store


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return SecretBox(tmp_path / "secrets.key")


def _blade(store: Store, box: SecretBox, name: str, n: int) -> None:
    BladeService(store, box).enroll(Enrollment(
        name=name, bmc=f"ipmi://127.0.0.1:{6230 + n}", username="admin", password=Secret("pw"),
        nics=(NicSpec("eth0", f"52:54:00:00:{n:02x}:01"), NicSpec("eth1", f"52:54:00:00:{n:02x}:02"))))


def test_enrol_picks_the_driver_from_the_scheme_and_masks_secrets(store: Store, box: SecretBox) -> None:
    svc = SwitchService(store, box)
    snmp = svc.enroll("tor-1", "snmp://10.0.0.2:161", username="anvil", password=Secret("auth-key"),
                      privacy=Secret("priv-key"))
    ovs = svc.enroll("ovs-1", "ovs:unix:/run/db.sock?bridge=br0")
    assert (snmp.driver, ovs.driver) == ("snmp", "ovs")
    public = snmp.public()
    assert public["password"] == "***" and public["privacy"] == "***"
    assert "auth-key" not in repr(public) and "priv-key" not in repr(public) and "auth-key" not in repr(snmp)
    assert ovs.public()["password"] is None
    ref = svc.switch_ref("tor-1")
    assert (ref.username, ref.password.reveal(), ref.privacy.reveal()) == ("anvil", "auth-key", "priv-key")
    assert "auth-key" not in repr(ref)
    assert [s.name for s in svc.list()] == ["ovs-1", "tor-1"]


def test_enrol_refuses_bad_addresses_and_duplicate_names(store: Store, box: SecretBox) -> None:
    svc = SwitchService(store, box)
    with pytest.raises(ValidationError, match="unknown switch address scheme"):
        svc.enroll("x", "http://10.0.0.2")
    with pytest.raises(ValidationError, match="credentials do not belong"):
        svc.enroll("x", "snmp://public@10.0.0.2")
    with pytest.raises(ValidationError, match="lowercase"):
        svc.enroll("Bad_Name", "snmp://10.0.0.2")
    svc.enroll("tor-1", "snmp://10.0.0.2")
    with pytest.raises(Conflict, match="already enrolled"):
        svc.enroll("tor-1", "snmp://10.0.0.3")


def test_cable_moves_a_nic_and_refuses_a_port_already_taken(store: Store, box: SecretBox) -> None:
    svc = SwitchService(store, box)
    svc.enroll("tor-1", "snmp://10.0.0.2", password=Secret("public"))
    _blade(store, box, "b1", 1)
    _blade(store, box, "b2", 2)
    svc.cable("b1", "eth0", "tor-1", "1")
    svc.cable("b1", "52:54:00:00:01:02", "tor-1", "2")   # by MAC
    svc.cable("b1", "eth0", "tor-1", "3")                # re-cabling moves it
    svc.cable("b1", "eth0", "tor-1", "3")                # idempotent
    info = svc.get("tor-1")
    assert [(c.port, c.blade, c.nic) for c in info.cables] == [("2", "b1", "eth1"), ("3", "b1", "eth0")]
    with pytest.raises(Conflict, match="port 3 of switch 'tor-1' is already cabled to b1/eth0"):
        svc.cable("b2", "eth0", "tor-1", "3")
    with pytest.raises(NotFound):
        svc.cable("b2", "eth9", "tor-1", "4")
    with pytest.raises(NotFound):
        svc.cable("b2", "eth0", "nope", "4")
    assert BladeService(store, box).get("b1").nics[0].port == "3"


def test_delete_is_refused_while_cabled(store: Store, box: SecretBox) -> None:
    svc = SwitchService(store, box)
    svc.enroll("tor-1", "snmp://10.0.0.2", password=Secret("public"))
    _blade(store, box, "b1", 1)
    svc.cable("b1", "eth0", "tor-1", "7")
    with pytest.raises(Conflict, match="cabled to b1/eth0"):
        svc.delete("tor-1")
    BladeService(store, box).delete("b1")
    svc.delete("tor-1")
    with pytest.raises(NotFound):
        svc.get("tor-1")
