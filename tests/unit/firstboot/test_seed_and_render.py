"""First boot's pure logic: the seed file's answers and errors, the files they make, and which
disk may hold the state."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from appliance.config import load_settings
from appliance.firstboot import disk, render
from appliance.firstboot.answers import AnswerError
from appliance.firstboot.seed import parse, seed_path_from_cmdline

FULL = """
admin_password: correct-horse-9
hostname: anvil-lab
data_disk: {format: true}
management: {interface: ens3, address: 192.0.2.10/24, gateway: 192.0.2.1, dns: [192.0.2.53]}
provisioning: {interface: ens4, address: 10.77.0.1/24, dhcp_range: "10.77.0.100,10.77.0.200"}
ntp: [ntp.example.org, 192.0.2.123]
"""


def test_a_full_seed_gives_every_answer(tmp_path: Path) -> None:
    seed = parse(FULL, tmp_path)
    a = seed.answers
    assert seed.format_data_disk is True
    assert (a.admin_password, a.hostname, a.ntp) == ("correct-horse-9", "anvil-lab", ("ntp.example.org", "192.0.2.123"))
    assert not a.management.dhcp and a.management.address == "192.0.2.10/24" and a.management.dns == ("192.0.2.53",)
    assert a.provisioning.dhcp_range == "10.77.0.100,10.77.0.200"
    assert a.tls.generate


def test_a_minimal_seed_means_dhcp_and_a_generated_certificate(tmp_path: Path) -> None:
    a = parse("admin_password: s3cret-pass\n", tmp_path).answers
    assert a.management.dhcp and a.management.interface == "auto" and not a.provisioning.interface
    assert a.tls.generate and a.ntp == ()
    assert parse("admin_password: s3cret-pass\n", tmp_path).format_data_disk is False


@pytest.mark.parametrize(("text", "where"), [
    ("hostname: x\n", "admin_password"),
    ("admin_password: short\n", "admin_password"),
    ("admin_password: long-enough\nmanagment: {dhcp: true}\n", "managment"),
    ("admin_password: long-enough\nmanagement: {adress: 192.0.2.1/24}\n", "management.adress"),
    ("admin_password: long-enough\nmanagement: {address: 192.0.2.300/24}\n", "management.address"),
    ("admin_password: long-enough\nmanagement: {address: 192.0.2.10}\n", "management.address"),
    ("admin_password: long-enough\nmanagement: {address: 192.0.2.10/24, gateway: 198.51.100.1}\n",
     "management.gateway"),
    ("admin_password: long-enough\nprovisioning: {interface: ens4}\n", "provisioning.address"),
    ("admin_password: long-enough\nprovisioning: {interface: ens4, address: 10.77.0.1/24, "
     "dhcp_range: '10.78.0.1,10.78.0.9'}\n", "provisioning.dhcp_range"),
    ("admin_password: long-enough\nprovisioning: {interface: ens4, address: 10.77.0.1/24, "
     "dhcp_range: '10.77.0.1,10.77.0.9'}\n", "provisioning.dhcp_range"),
    ("admin_password: long-enough\nmanagement: {interface: ens4}\nprovisioning: {interface: ens4, "
     "address: 10.77.0.1/24}\n", "provisioning.interface"),
    ("admin_password: long-enough\ntls: {cert: c.pem}\n", "tls"),
    ("admin_password: long-enough\nntp: ['bad host!']\n", "ntp[0]"),
    ("admin_password: long-enough\ndata_disk: {format: yes please}\n", "data_disk.format"),
    ("admin_password: [1, 2]\n", "admin_password"),
    ("admin_password: 'x\n", "line 2"),
    ("- a list\n", "seed"),
])
def test_a_bad_seed_names_the_key(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(AnswerError) as err:
        parse(text, tmp_path)
    assert err.value.where == where, str(err.value)


def test_the_seed_file_comes_from_the_kernel_command_line() -> None:
    assert seed_path_from_cmdline("boot=live quiet") == "anvil-seed.yaml"
    assert seed_path_from_cmdline("boot=live anvil.seed=/lab/one.yaml") == "lab/one.yaml"
    assert seed_path_from_cmdline("anvil.seed=none") is None
    with pytest.raises(AnswerError, match="leaves the seed volume"):
        seed_path_from_cmdline("anvil.seed=../../etc/shadow")


def test_imported_certificate_paths_are_relative_to_the_seed(tmp_path: Path) -> None:
    a = parse("admin_password: long-enough\ntls: {cert: tls/c.pem, key: tls/k.pem}\n", tmp_path).answers
    assert not a.tls.generate and a.tls.cert == tmp_path / "tls/c.pem" and a.tls.key == tmp_path / "tls/k.pem"
    assert f'tls_cert = "{render.IMPORTED_CERT}"' in render.anvil_toml(a)


def test_the_rendered_configuration_is_one_anvil_reads(tmp_path: Path) -> None:
    a = parse(FULL, tmp_path).answers
    text = render.anvil_toml(a)
    conf = tmp_path / "anvil.toml"
    conf.write_text(text)
    settings = load_settings(conf, env={})
    assert settings.api.listen == "0.0.0.0:443" and settings.api.tls
    assert settings.boot.listen == "10.77.0.1:8080" and settings.boot.tftp_listen == "10.77.0.1:69"
    assert settings.boot.dhcp == "reservations" and settings.boot.interface == "ens4"
    assert tomllib.loads(text)["state_dir"] == "/var/lib/anvil"


def test_network_units_put_provisioning_first_and_static_management() -> None:
    a = parse(FULL, Path("/")).answers
    units = render.network_units(a)
    assert list(units) == ["10-anvil-provisioning.network", "20-anvil-management.network"]
    assert "Name=ens4\n" in units["10-anvil-provisioning.network"]
    assert "Address=10.77.0.1/24\n" in units["10-anvil-provisioning.network"]
    mgmt = units["20-anvil-management.network"]
    assert "Address=192.0.2.10/24\nGateway=192.0.2.1\nDNS=192.0.2.53\n" in mgmt and "DHCP" not in mgmt
    assert render.timesyncd_conf(a) == "[Time]\nNTP=ntp.example.org 192.0.2.123\n"
    dhcp = render.network_units(parse("admin_password: long-enough\n", Path("/")).answers)
    assert dhcp == {"20-anvil-management.network": "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n"}


LSBLK = {"blockdevices": [
    {"name": "sr0", "path": "/dev/sr0", "size": 300 << 20, "type": "rom", "fstype": "iso9660", "label": "ANVIL",
     "ro": False, "mountpoint": "/run/live/medium", "pttype": "dos"},
    {"name": "vda", "path": "/dev/vda", "size": 8 << 30, "type": "disk", "fstype": None, "label": None, "ro": False,
     "mountpoint": None, "pttype": None},
    {"name": "vdb", "path": "/dev/vdb", "size": 16 << 20, "type": "disk", "fstype": "vfat", "label": "ANVIL-SEED",
     "ro": False, "mountpoint": None, "pttype": None},
    {"name": "vdc", "path": "/dev/vdc", "size": 8 << 30, "type": "disk", "fstype": None, "label": None, "ro": False,
     "mountpoint": None, "pttype": "gpt", "children": [
         {"name": "vdc1", "path": "/dev/vdc1", "size": 8 << 30, "type": "part", "fstype": None, "label": None,
          "ro": False, "mountpoint": None, "pttype": "gpt"}]},
]}


def test_only_a_blank_whole_disk_may_be_formatted() -> None:
    devs = disk.parse_lsblk(json.dumps(LSBLK))
    assert [d.path for d in disk.blank(devs)] == ["/dev/vda"]       # not the ISO, the seed, nor a partitioned disk
    assert disk.labelled(devs) is None
    assert disk.choose_blank(devs, False) is None
    assert disk.choose_blank(devs, True).path == "/dev/vda"          # type: ignore[union-attr]
    assert disk.choose_blank(devs, "/dev/vda").path == "/dev/vda"    # type: ignore[union-attr]
    with pytest.raises(ValueError, match="/dev/vdc is not an empty disk"):
        disk.choose_blank(devs, "/dev/vdc")


def test_two_blank_disks_need_the_seed_to_name_one() -> None:
    doc = json.loads(json.dumps(LSBLK))
    doc["blockdevices"].append(dict(doc["blockdevices"][1], name="vdd", path="/dev/vdd"))
    devs = disk.parse_lsblk(json.dumps(doc))
    with pytest.raises(ValueError, match="exactly one empty disk, found /dev/vda, /dev/vdd"):
        disk.choose_blank(devs, True)
    assert disk.choose_blank(devs, "/dev/vdd").path == "/dev/vdd"    # type: ignore[union-attr]


def test_a_formatted_data_disk_is_found_by_its_label() -> None:
    doc = json.loads(json.dumps(LSBLK))
    doc["blockdevices"][1].update(fstype="ext4", label="ANVIL-DATA")
    devs = disk.parse_lsblk(json.dumps(doc))
    assert disk.labelled(devs).path == "/dev/vda"                     # type: ignore[union-attr]
    assert disk.blank(devs) == []


def test_password_bounds_are_the_user_services() -> None:
    from appliance.firstboot import answers, setup
    from appliance.services import users

    assert (answers.MIN_PASSWORD, answers.MAX_PASSWORD) == (users.MIN_PASSWORD, users.MAX_PASSWORD)
    assert setup.INITIAL_ADMIN_PASSWORD == users.INITIAL_ADMIN_PASSWORD
