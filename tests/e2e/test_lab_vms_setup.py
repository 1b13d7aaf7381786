"""``anvil lab up --vms``'s wiring without booting anything: what it refuses before starting
a process, the boot role's generated configuration, and how ``anvil serve`` finds the lab's
tgtd. Fast, no root needed (root-only paths are reached with ``geteuid`` patched)."""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path

import pytest

from appliance.config import Settings, load_settings
from appliance.drivers.tgt.driver import TgtDriver
from appliance.lab import rack, vmlab
from appliance.services.hardware import storage_driver
from tests.integration.engine.rig import Anvil


def _opts(tmp_path: Path, **over: object) -> vmlab.VmLabOptions:
    base: dict[str, object] = {"vms": 2, "netns": "e2e-test-ns", "state_dir": tmp_path / "state",
                               "store_url": f"sqlite:///{tmp_path / 'state' / 'anvil.db'}"}
    base.update(over)
    return vmlab.VmLabOptions(**base)  # type: ignore[arg-type]


def test_boot_role_config_is_complete_and_valid_for_the_real_loader(tmp_path: Path) -> None:
    opts = _opts(tmp_path, log_level="DEBUG", agent_mode="oneshot")
    path = tmp_path / "boot.toml"
    path.write_text(vmlab.boot_config(opts, template_dir=tmp_path / "ipxe"))
    # The environment the boot role gets has no ANVIL_* (they would override the file).
    settings = load_settings(path, env={})
    assert settings.state_dir == opts.state_dir and settings.store_url == opts.store_url
    boot = settings.boot
    assert (boot.listen, boot.advertise_url, boot.tftp_listen) == (
        "10.77.0.1:8080", "http://10.77.0.1:8080", "10.77.0.1:69")
    assert (boot.dhcp, boot.interface, boot.dhcp_range) == ("reservations", "br0", "10.77.0.100,10.77.0.199")
    assert boot.image_agent_mode == "oneshot" and settings.log_level == "DEBUG"
    assert boot.template_dirs == [tmp_path / "ipxe"]
    assert settings.metrics.boot_listen == "10.77.0.1:9465"   # its own /metrics, beside boot HTTP
    assert "secrets" not in path.read_text()
    assert tomllib.loads(path.read_text())["store"]["url"] == opts.store_url


def test_a_second_lab_on_another_subnet_serves_from_its_own_addresses(tmp_path: Path) -> None:
    """``--subnet 10.78.0.0/24`` (a second appliance's lab on this machine, DESIGN §8): the boot
    role, DHCP pool and metrics move to 10.78.0.x; the bridge gets 10.78.0.1 and fd78::1."""
    opts = _opts(tmp_path, subnet="10.78.0.0/24")
    settings = load_settings(_written(tmp_path, vmlab.boot_config(opts)), env={})
    boot = settings.boot
    assert (boot.listen, boot.advertise_url, boot.tftp_listen) == (
        "10.78.0.1:8080", "http://10.78.0.1:8080", "10.78.0.1:69")
    assert boot.dhcp_range == "10.78.0.100,10.78.0.199" and settings.metrics.boot_listen == "10.78.0.1:9465"
    assert vmlab.lab_net("10.78.0.0/24") == vmlab.LabNet("10.78.0.1", "fd78::1", ("10.78.0.100", "10.78.0.199"))
    assert vmlab.lab_net(vmlab.DEFAULT_SUBNET).server_ipv6 == "fd77::1"
    assert vmlab.lab_net("192.168.200.0/24").server_ipv6 == "fda8:c8::1"


def _written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "boot.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("over", "words"), [
    ({"vms": 0}, "1..4 VMs"),
    ({"vms": 5}, "1..4 VMs"),
    ({"vms": 1, "uefi_vms": 2}, "--uefi-vms 2: at most --vms"),
    ({"netns": "bad/name"}, "--netns 'bad/name'"),
    ({"netns": "much-too-long-name"}, "1-15 characters"),
    ({"store_url": "postgresql+psycopg://anvil:pw@127.0.0.1:5432/anvil"}, "unix socket"),
    ({"subnet": "10.78.0.0/16"}, "--subnet 10.78.0.0/16: the VM lab needs a private /24"),
    ({"subnet": "8.8.8.0/24"}, "private /24"),
    ({"subnet": "10.78.0.5/24"}, "--subnet '10.78.0.5/24': not an IPv4 network"),
])
def test_preflight_refuses_bad_input_naming_it(tmp_path: Path, over: dict[str, object], words: str) -> None:
    with pytest.raises(vmlab.VmLabSetupError, match=words.replace(".", r"\.")):
        vmlab.preflight(_opts(tmp_path, **over))


def test_uefi_vms_need_ovmf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("appliance.lab.vmlab.os.geteuid", lambda: 0)
    monkeypatch.setattr("appliance.lab.vmlab.shutil.which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr("appliance.lab.vm_bmc.OVMF_CODE", tmp_path / "missing" / "OVMF_CODE_4M.fd")
    with pytest.raises(vmlab.VmLabSetupError, match=r"--uefi-vms needs .*OVMF_CODE_4M\.fd \(apt-get install ovmf\)"):
        vmlab.preflight(_opts(tmp_path, uefi_vms=1))


def test_preflight_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("appliance.lab.vmlab.os.geteuid", lambda: 1000)
    with pytest.raises(vmlab.VmLabSetupError, match="needs root"):
        vmlab.preflight(_opts(tmp_path))


def test_unix_socket_postgres_is_reachable_from_the_namespace() -> None:
    assert vmlab.store_unreachable_from_netns("postgresql+psycopg://anvil@/anvil?host=/run/postgresql") is None
    assert vmlab.store_unreachable_from_netns("sqlite:////var/lib/anvil/anvil.db") is None


def _settings(tmp_path: Path, toml: str = "") -> Settings:
    config = tmp_path / "anvil.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n{toml}')
    return load_settings(config, env={})


def _write_lab(tmp_path: Path, data: object) -> Path:
    lab = tmp_path / "state" / "lab"
    lab.mkdir(parents=True, exist_ok=True)
    path = rack.lab_file(lab)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_serve_uses_the_lab_tgtd_only_when_storage_is_not_configured(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert storage_driver(settings) is None                        # no lab, no [storage]: none
    _write_lab(tmp_path, {"state": "up", "storage": {"driver": "tgt", "controlPort": 4242, "netns": "anvil-lab",
                                                      "portal": "10.77.0.1:3260"}})
    driver = storage_driver(settings)
    assert isinstance(driver, TgtDriver)
    # The control socket is a host-wide file: no need to enter the lab's namespace.
    assert driver.settings.control_port == 4242 and driver.settings.netns is None
    assert set(driver.settings.roots) == {settings.luns_dir, settings.images_dir}

    configured = storage_driver(_settings(tmp_path, "[storage]\ndriver = \"tgt\"\ntgt_control_port = 7\n"))
    assert isinstance(configured, TgtDriver) and configured.settings.control_port == 7   # the config wins


@pytest.mark.parametrize("content", [
    "{not json", {"state": "up"}, {"storage": {"driver": "tgt", "controlPort": "12"}}, {"storage": {"driver": "x"}},
])
def test_serve_ignores_a_lab_file_without_usable_storage(tmp_path: Path, content: object,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    _write_lab(tmp_path, content)
    with caplog.at_level(logging.WARNING, logger="appliance.services.hardware"):
        assert storage_driver(_settings(tmp_path)) is None
    said = content == "{not json" or (isinstance(content, dict) and content.get("storage", {}).get("controlPort"))
    if said:
        assert "no storage driver from the lab" in caplog.text


def test_lab_up_refuses_bad_vm_options_before_starting_anything(tmp_path: Path) -> None:
    anvil = Anvil(tmp_path)
    anvil.env.pop("ANVIL_LAB_NETNS", None)
    res = anvil("lab", "up", "--redfish", "0", "--vms", "5", check=False)
    assert res.code != 0 and "--vms" in res.err and "0<=x<=4" in res.err
    res = anvil("lab", "up", "--redfish", "0", "--vms", "1", "--netns", "bad/name", check=False)
    assert res.code != 0 and "--netns 'bad/name'" in res.err
    res = anvil("lab", "up", "--redfish", "0", "--vms", "1", "--uefi-vms", "2", check=False)
    assert res.code != 0 and "--uefi-vms 2: at most --vms (1) of the VMs can be UEFI" in res.err
    res = anvil("lab", "up", "--redfish", "0", "--vms", "1", "--subnet", "10.78.0.0/16", check=False)
    assert res.code != 0 and "--subnet 10.78.0.0/16: the VM lab needs a private /24" in res.err
    res = anvil("lab", "up", "--redfish", "0", check=False)
    assert res.code != 0 and "at least one blade" in res.err
    assert rack.read_state(anvil.state_dir / "lab") is None      # nothing claimed, nothing to take down
