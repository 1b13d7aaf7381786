"""The VM BMC's boot-flag rules and QEMU command, without starting anything (no root needed)."""

from __future__ import annotations

from pathlib import Path

from appliance.lab.vm_bmc import Vm, VmSpec, default_uuid, qemu_argv

NETWORK_ONCE = (0x80, 0x04)          # valid; device selector 1 = PXE (bits 5:2)
NETWORK_ALWAYS = (0x80 | 0x40, 0x04)  # + persistent
DISK_ONCE = (0x80, 0x08)


def _spec(tmp_path: Path, *, uefi: bool = False, plain_pxe: bool = False) -> VmSpec:
    return VmSpec(name="vm01", netns="ns", tap="tap01", mac="52:54:00:77:00:01", run_dir=tmp_path,
                  uefi=uefi, plain_pxe=plain_pxe)


def _device(argv: list[str]) -> str:
    return argv[argv.index("-device") + 1]


def test_network_boot_puts_the_nic_rom_first_and_disk_boot_removes_it(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    net = qemu_argv(spec, network=True)
    assert net[:4] == ["ip", "netns", "exec", "ns"] and net[4] == "qemu-system-x86_64"
    assert _device(net).endswith(",bootindex=1")
    assert _device(qemu_argv(spec, network=False)).endswith(",romfile=")
    assert "-no-reboot" not in net   # with it, a QMP system_reset would end QEMU
    assert net[net.index("-uuid") + 1] == default_uuid("52:54:00:77:00:01")
    assert _device(qemu_argv(_spec(tmp_path, plain_pxe=True), network=True)).endswith(",bootindex=1,romfile=")
    uefi = qemu_argv(_spec(tmp_path, uefi=True), network=True)
    assert any("OVMF_CODE_4M.fd" in a for a in uefi) and any(a.endswith("vm01.vars.fd") for a in uefi)


def test_one_time_boot_device_is_used_up_and_persistent_one_stays(tmp_path: Path) -> None:
    vm = Vm(spec=_spec(tmp_path), port=1)
    assert vm.bootdev() == "default" and not vm.wants_network()
    vm.set_boot_flags(*NETWORK_ONCE)
    assert vm.bootdev() == "network"
    assert vm._consume_boot_flags() is True
    assert vm.bootdev() == "default" and vm._consume_boot_flags() is False
    vm.set_boot_flags(*NETWORK_ALWAYS)
    assert vm._consume_boot_flags() and vm._consume_boot_flags()
    assert vm.boot_flags() == NETWORK_ALWAYS
    vm.set_boot_flags(*DISK_ONCE)
    assert vm.bootdev() == "disk" and vm._consume_boot_flags() is False


def test_power_off_vm_reports_off_and_refuses_reset(tmp_path: Path) -> None:
    vm = Vm(spec=_spec(tmp_path), port=1)
    assert vm.power_state() == "off"
    assert vm.power_off() == 0          # already off: nothing to do, not an error
    assert vm.power_reset() == 0xD5     # "not supported in present state"
    assert vm.power_cycle() == 0xD5
    assert (tmp_path / "vm01.state.json").exists() is False   # nothing changed, nothing written
