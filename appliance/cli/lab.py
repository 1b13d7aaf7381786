"""anvil lab up|down|status: an emulated rack of real BMC and switch emulators (and, with
``--vms``, QEMU blades booting through Anvil's boot role in a namespace), enrolled."""

from __future__ import annotations

import contextlib
from typing import Any

import click
from sqlalchemy import select

from appliance.cli.context import CliContext, pass_ctx
from appliance.cli.output import emit, output_option
from appliance.config import Settings
from appliance.drivers.protocols import Secret
from appliance.engine.leader import leader_alive
from appliance.errors import Conflict, NotFound
from appliance.lab import bootnet, rack, vmlab
from appliance.progress import NoProgress, Progress, for_terminal
from appliance.services.bindings import Forgotten, forget_blades
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.switches import SwitchService
from appliance.store.tables import BladeRow


def lab_up(ctx: CliContext, opts: rack.LabOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Bring the lab up and enrol it; returns the recorded state. A failure leaves nothing behind."""
    blades_svc = BladeService(ctx.store(), ctx.box())
    switches = SwitchService(ctx.store(), ctx.box())
    say = progress or NoProgress()

    def enroll(state: dict[str, Any], switch_list: list[dict[str, Any]], blades: list[rack.LabBlade]) -> None:
        password = rack.lab_secret(state)
        try:
            for sw in switch_list:
                switches.enroll(sw["name"], sw["address"],
                                password=Secret(sw["password"]) if sw["password"] else None)
            for i, b in enumerate(blades, 1):
                say.count(i - 1, len(blades), "blades enrolled")
                blades_svc.enroll(Enrollment(
                    name=b.name, bmc=b.bmc, username=rack.USERNAME, password=password,
                    cpus=b.cpus, memory_gib=b.memory_gib, chassis=rack.CHASSIS, slot=b.slot,
                    nics=tuple(NicSpec(n, mac, b.switch, port) for n, mac, port in b.nics),
                    facts=dict(b.facts)))
                say.count(i, len(blades), "blades enrolled")
            host = state.get("vmHost")
            if host:
                from appliance.services.vm_hosts import VmHostService, VmHostSpec

                VmHostService(ctx.store(), ctx.box()).enroll(VmHostSpec(
                    name=host["name"], uri=host["uri"], bridge=host["bridge"], slots=int(host["slots"]),
                    memory_mib=int(host["memoryMiB"])))
        except BaseException:
            _remove(ctx, state, check=False, only_lab=True)
            raise

    return rack.up(ctx.settings.lab_dir, opts, enroll, say)


FORCE_REASON = "the lab was taken down with `anvil lab down --force`"


def _remove(ctx: CliContext, state: dict[str, Any], *, check: bool = True, only_lab: bool = False,
            force: bool = False) -> list[Forgotten]:
    """Drop the lab's blades and switch from the inventory; refuse if a lab blade is not spare,
    unless ``force``: then the store forgets the bindings of the lab's own blades first.

    ``only_lab``: after a failed enrolment, remove only blades on the lab's switch (never a
    same-named blade that was there before the lab). ``force`` likewise touches only blades
    cabled to a switch the lab enrolled, and refuses while an appliance is running (its
    engine would be acting on those bindings: release the profiles through it instead).
    """
    names = list(state.get("blades") or [])
    store = ctx.store()
    blades = BladeService(store, ctx.box())
    forgotten: list[Forgotten] = _remove_vm_host(ctx, state, check=check, force=force)
    lab_switches = rack.lab_switches(state)
    if only_lab or force:
        ours = {sw for sw, address in lab_switches if not _switch_preexisting(ctx, sw, address)}
        names = [n for n in names if _on_lab_switch(blades, n, ours)]
    if check and names:
        with store.read() as s:
            busy = s.execute(select(BladeRow.name, BladeRow.state)
                             .where(BladeRow.name.in_(names), BladeRow.state != "spare")).all()
        which = ", ".join(f"{n} ({st})" for n, st in busy)
        if busy and not force:
            raise Conflict(f"lab blades are in use: {which}; release their profiles first (only spare blades can "
                           "be taken down), or `anvil lab down --force` to forget their bindings (the lab's blades "
                           "only) and take the lab down anyway")
        if busy and leader_alive(store):
            raise Conflict(f"lab blades are in use: {which}, and an appliance is running (`anvil serve`): release "
                           "their profiles through it (`anvil profile release NAME`), or stop it before "
                           "`anvil lab down --force`")
        if force:
            forgotten += forget_blades(store, names, reason=FORCE_REASON)
    for name in names:
        with contextlib.suppress(NotFound):
            blades.delete(name)
    for switch, address in lab_switches:
        if not ((only_lab or force) and _switch_preexisting(ctx, switch, address)):
            with contextlib.suppress(NotFound):
                SwitchService(store, ctx.box()).delete(switch)
    return forgotten


def _remove_vm_host(ctx: CliContext, state: dict[str, Any], *, check: bool, force: bool) -> list[Forgotten]:
    """The lab's VM host and its slots out of the inventory (its domains undefined) — only the
    one enrolled with the lab's own libvirtd URI. Refused (Conflict) while a slot is bound,
    unless ``force``: then the bindings are forgotten first, as for the lab's blades."""
    host = state.get("vmHost")
    if not host:
        return []
    from appliance.services.vm_hosts import VmHostService

    svc = VmHostService(ctx.store(), ctx.box())
    try:
        info = svc.get(host["name"])
    except NotFound:
        return []
    if info.spec.uri != host["uri"]:
        return []     # a VM host of that name that is not the lab's
    forgotten: list[Forgotten] = []
    bound = [b for b, _, p in info.blades if p is not None]
    if bound and force:
        if leader_alive(ctx.store()):
            raise Conflict(f"VM host slots are in use: {', '.join(bound)}, and an appliance is running: release "
                           "their profiles through it first")
        forgotten = forget_blades(ctx.store(), bound, reason=FORCE_REASON)
    try:
        svc.delete(host["name"], detach=True)
    except Conflict:
        if check:
            raise
    return forgotten


def _on_lab_switch(blades: BladeService, name: str, switches: set[str]) -> bool:
    try:
        return any(n.switch in switches for n in blades.get(name).nics)
    except NotFound:
        return False


def _switch_preexisting(ctx: CliContext, switch: str, address: str | None) -> bool:
    """True when the switch named like the lab's is not the lab's (a different address)."""
    try:
        info = SwitchService(ctx.store(), ctx.box()).get(switch)
    except NotFound:
        return False
    return info.address != address


def lab_down(ctx: CliContext, *, force: bool = False) -> tuple[list[str], list[Forgotten]] | None:
    """Take the lab down: the processes stopped and the bindings forgotten (``force``), or
    None when no lab is up."""
    forgotten: list[Forgotten] = []

    def remove(state: dict[str, Any]) -> None:
        forgotten.extend(_remove(ctx, state, force=force))

    stopped = rack.down(ctx.settings.lab_dir, remove)
    return None if stopped is None else (stopped, forgotten)


def say_down(ctx: CliContext, done: tuple[list[str], list[Forgotten]] | None) -> None:
    if done is None:
        click.echo(f"lab down: no lab is up (nothing in {rack.lab_file(ctx.settings.lab_dir)})")
        return
    stopped, forgotten = done
    for f in forgotten:
        ended = [f"job {j}" for j in f.jobs] + [f"failover #{i}" for i in f.failovers]
        click.echo(f"lab down: forgot {f.blade}" + (f"'s binding to {f.profile}" if f.profile else "")
                   + (f" (ended {', '.join(ended)})" if ended else ""))
    click.echo(f"lab down: stopped {', '.join(stopped) or 'nothing'}")


@click.group("lab")
def lab() -> None:
    """An emulated rack on this machine: BMC and switch emulators, enrolled in the inventory."""


def lab_options(fn: Any) -> Any:
    for deco in reversed([
        click.option("--redfish", type=click.IntRange(0, 200), default=4, show_default=True,
                     help="Redfish blades (one sushy-tools process serves them all)."),
        click.option("--ipmi", type=click.IntRange(0, 200), default=0, show_default=True,
                     help="IPMI blades (one process serves all their BMCs)."),
        click.option("--switch", "switch_kind", type=click.Choice(["snmp", "ovs"]), default="snmp",
                     show_default=True, help="snmpsim (802.1Q MIBs), or Open vSwitch in a namespace (root)."),
        click.option("--realistic-power", is_flag=True,
                     help="Keep the emulators' 1-11 s power-change delay (default: at most 0.2 s)."),
        click.option("--vms", type=click.IntRange(0, vmlab.MAX_VMS), default=0, show_default=True,
                     help="QEMU blades (root): they PXE-boot through the boot role, started in the lab's "
                          "namespace with a tgtd for their iSCSI LUNs."),
        click.option("--uefi-vms", type=click.IntRange(0, vmlab.MAX_VMS), default=0, show_default=True,
                     help="How many of the --vms run UEFI firmware (OVMF) with a plain PXE NIC: they fetch "
                          "iPXE over TFTP first, as blades with a vendor PXE ROM do (the others are BIOS "
                          "VMs whose NIC ROM is iPXE already)."),
        click.option("--vm-host-slots", type=click.IntRange(0, vmlab.MAX_VM_HOST_SLOTS), default=0,
                     show_default=True,
                     help="With --vms: a libvirtd in the lab's namespace too, enrolled as VM host "
                          f"{vmlab.VM_HOST_NAME} with this many slots (libvirt domains on the lab's bridge)."),
        click.option("--netns", default=bootnet.DEFAULT_NETNS, show_default=True, envvar="ANVIL_LAB_NETNS",
                     help="Namespace of the VM lab's boot network (env ANVIL_LAB_NETNS)."),
        click.option("--subnet", default=vmlab.DEFAULT_SUBNET, show_default=True,
                     help="The VM lab's provisioning network, a private /24: the boot role and tgtd on its .1, "
                          "DHCP .100-.199 (a second appliance's lab on this machine: 10.78.0.0/24)."),
    ]):
        fn = deco(fn)
    return fn


def boot_url_for_lab(settings: Settings) -> str:
    """Where the emulated blades reach the boot service: the configured boot address (loopback
    when it listens on every address)."""
    advertised = getattr(settings.boot, "advertise_url", None)
    if advertised:
        return str(advertised).rstrip("/")
    host, _, port = settings.boot.listen.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def _opts(settings: Settings, redfish: int, ipmi: int, switch_kind: str, realistic_power: bool,
          vms: int = 0, netns: str = bootnet.DEFAULT_NETNS, uefi_vms: int = 0,
          vm_host_slots: int = 0, subnet: str = vmlab.DEFAULT_SUBNET) -> rack.LabOptions:
    vm_lab = None
    if vm_host_slots and not vms:
        raise click.UsageError("--vm-host-slots needs --vms (the VM host's domains join the VM lab's network)")
    try:
        vmlab.check_uefi_vms(vms, uefi_vms)   # with --vms 0 there is no VM lab to refuse it later
        vmlab.lab_net(subnet)
    except vmlab.VmLabSetupError as exc:
        raise click.UsageError(str(exc)) from None
    if vms:
        vm_lab = vmlab.VmLabOptions(vms=vms, netns=vmlab.check_netns_name(netns), state_dir=settings.state_dir,
                                    store_url=settings.store_url, log_level=settings.log_level,
                                    agent_mode=settings.boot.image_agent_mode, uefi_vms=uefi_vms,
                                    vm_host_slots=vm_host_slots, subnet=subnet)
    return rack.LabOptions(redfish=redfish, ipmi=ipmi, switch=switch_kind, realistic_power=realistic_power,
                           boot_url=boot_url_for_lab(settings), vm_lab=vm_lab)


def describe(state: dict[str, Any], redfish: int, ipmi: int, vms: int, switch_kind: str) -> str:
    """One line on what ``lab up`` brought up."""
    parts = []
    if redfish or ipmi:
        parts.append(f"{redfish} Redfish and {ipmi} IPMI cabled to switch {state['switch']} ({switch_kind})")
    if vms:
        vm = state["vmlab"]
        uefi = sum(1 for v in vm["vms"] if v.get("uefi"))
        firmware = f" ({uefi} UEFI)" if uefi else ""
        parts.append(f"{vms} VM{'' if vms == 1 else 's'}{firmware} cabled to switch {state['vmSwitch']} (linux-bridge) "
                     f"in namespace {vm['netns']}, booting from {vm['bootUrl']}, iSCSI on {state['storage']['portal']}")
    host = state.get("vmHost")
    if host:
        parts.append(f"VM host {host['name']} ({host['slots']} slot{'' if host['slots'] == 1 else 's'}, "
                     f"{host['uri']})")
    count = len(state["blades"])
    return f"{count} blade{'' if count == 1 else 's'}: " + "; ".join(parts)


@lab.command("up")
@lab_options
@pass_ctx
def up(ctx: CliContext, redfish: int, ipmi: int, switch_kind: str, realistic_power: bool, vms: int,
       uefi_vms: int, vm_host_slots: int, netns: str, subnet: str) -> None:
    """Start the emulators (they keep running after this command) and enrol their blades and switch.

    \b
    --vms N (root) adds N QEMU blades (vm-01 …) on a bridge in namespace --netns, with
    the boot role (DHCP, TFTP, HTTP on 10.77.0.1) and a tgtd (10.77.0.1:3260) there
    (--subnet 10.78.0.0/24: on 10.78.0.1, for a second appliance's lab on one machine);
    an `anvil serve` started afterwards uses that tgtd for iSCSI boot LUNs unless
    [storage] names a driver. --uefi-vms K makes the last K of them UEFI VMs that take
    the plain PXE → TFTP → iPXE chain. --vm-host-slots S adds a libvirtd there, enrolled as
    a VM host with S slots (blades lab-vmhost-01 …, driver libvirt)."""
    progress = for_terminal("lab up")
    try:
        state = lab_up(ctx, _opts(ctx.settings, redfish, ipmi, switch_kind, realistic_power, vms, netns, uefi_vms,
                                  vm_host_slots, subnet), progress)
    finally:
        progress.close()
    click.echo(f"lab up: {describe(state, redfish, ipmi, vms, switch_kind)}; "
               f"state in {rack.lab_file(ctx.settings.lab_dir)}")


@lab.command("down")
@click.option("--force", is_flag=True,
              help="Take the lab down even while its blades are bound: the store forgets the bindings of the "
                   "lab's own blades (their profiles become unassigned, keeping their identities; their "
                   "unfinished jobs and failovers end). Never touches other blades.")
@pass_ctx
def down(ctx: CliContext, force: bool) -> None:
    """Stop every lab process by PID, delete its namespaces, and remove its blades and switch.

    Refused while a lab blade is in use, unless --force (for the emulators a crashed session
    left running). With no lab up it says so and succeeds, so scripts may always call it."""
    say_down(ctx, lab_down(ctx, force=force))


@lab.command("status")
@output_option()
@pass_ctx
def status(ctx: CliContext, fmt: str) -> None:
    """What the lab runs, where, and whether it is alive."""
    rows = rack.status(ctx.settings.lab_dir)
    if not rows and fmt == "table":
        click.echo("no lab is up (anvil lab up)")
        return
    emit(rows, fmt, columns=["process", "pid", "alive", "address"])


COMMANDS = [lab]
