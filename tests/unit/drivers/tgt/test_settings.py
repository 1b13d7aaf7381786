"""tgt driver settings, iSCSI name checks and command lines: pure, nothing runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from appliance.drivers.errors import BadSettings
from appliance.drivers.protocols import LunRef, StorageDriver
from appliance.drivers.tgt import TgtDriver, TgtSettings, check_name, create, serial_for


def test_create_reads_mapping_keys_and_is_a_storage_driver() -> None:
    drv = create({"control_port": 77, "netns": "anvil-lab", "timeout": 3,
                  "roots": ["/var/lib/anvil/luns", "/var/lib/anvil/images"]})
    assert isinstance(drv, StorageDriver)
    assert drv.settings == TgtSettings(control_port=77, netns="anvil-lab", timeout=3,
                                       roots=(Path("/var/lib/anvil/luns"), Path("/var/lib/anvil/images")))
    assert drv._argv(("--op", "show")) == ["ip", "netns", "exec", "anvil-lab", "tgtadm", "-C", "77",
                                           "--lld", "iscsi", "--op", "show"]


def test_create_reads_the_config_storage_section_and_defaults_to_the_system_tgtd() -> None:
    section = SimpleNamespace(driver="tgt", tgt_control_port=5, tgt_netns="", default_size_mib=64)
    assert create(section).settings == TgtSettings(control_port=5, netns=None)
    assert create({"tgt_control_port": 6, "roots": "/srv/luns"}).settings == TgtSettings(
        control_port=6, roots=(Path("/srv/luns"),))
    drv = create()
    assert drv._argv(("--op", "show")) == ["tgtadm", "--lld", "iscsi", "--op", "show"]


@pytest.mark.parametrize(("values", "reason"), [
    ({"control_port": 32768}, "control_port"),
    ({"control_port": True}, "control_port"),
    ({"netns": "a b"}, "netns"),
    ({"netns": "-x"}, "netns"),
    ({"timeout": 0}, "timeout"),
    ({"copy_timeout": "5"}, "copy_timeout"),
    ({"roots": ["/abs", "relative"]}, "roots"),
    ({"tgtadm": "-rf"}, "tgtadm"),
    ({"controlport": 1}, "unknown setting"),
])
def test_bad_settings_fail_at_create(values: dict[str, object], reason: str) -> None:
    with pytest.raises(BadSettings, match=reason):
        create(values)


@pytest.mark.parametrize("name", [
    "iqn.2026-11.io.anvil:web-01", "iqn.1994-05.com.redhat:abc123", "eui.02004567a425678d",
    "naa.52004567ba64678d", "iqn.2026-11.io.anvil",
])
def test_canonical_iscsi_names_pass(name: str) -> None:
    assert check_name(name, target="t", op="bind", what="initiator name") == name


@pytest.mark.parametrize(("name", "reason"), [
    ("iqn.2026-11.io.anvil:Web-01", "canonical form; use 'iqn.2026-11.io.anvil:web-01'"),
    ("eui.02004567A425678D", "canonical form"),
    ("iqn.2026-13.io.anvil:x", "not an iSCSI name"),
    ("iqn.2026-11.io.anvil:web 01", "not an iSCSI name"),
    ("--initiator-address", "not an iSCSI name"),
    ("web-01", "not an iSCSI name"),
    ("iqn.2026-11.io.anvil:" + "x" * 220, "longer than 223 bytes"),
    ("", "not an iSCSI name"),
])
def test_bad_iscsi_names_say_why(name: str, reason: str) -> None:
    with pytest.raises(BadSettings, match=reason) as info:
        check_name(name, target="t", op="bind", what="initiator name")
    assert not info.value.retryable


def test_scsi_serial_is_stable_and_differs_per_lun() -> None:
    a, b = LunRef("iqn.2026-11.io.anvil.san:web-01", 1), LunRef("iqn.2026-11.io.anvil.san:web-01", 2)
    assert serial_for(a) == serial_for(LunRef("iqn.2026-11.io.anvil.san:web-01", 1))
    assert serial_for(a) != serial_for(b)
    scsi_id, scsi_sn = serial_for(a)
    assert len(scsi_id) <= 24 and len(scsi_sn) == 16


def test_driver_satisfies_the_protocol_statically() -> None:
    drv: StorageDriver = TgtDriver()
    assert drv.name == "tgt"
