"""What tests/support/world.py checks, read from a store and from the emulators' own records."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from sqlalchemy import select

from appliance.lab import redfish_emulator
from appliance.lab.inproc import SWITCH, InprocRig
from appliance.lab.redfish_emulator import PowerChange
from appliance.lab.snmp_switch import PortChange
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeNicRow, BladeRow, ProfileRow, SwitchRow
from tests.support import world
from tests.support.world import INF, Span, Stamp


def _epoch(t: datetime) -> float:
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()   # the store keeps UTC


def stamps(store: Store) -> list[Stamp]:
    """Every binding ever made (live, ended, released), with its times."""
    with store.read() as s:
        rows = s.execute(select(BladeRow.name, ProfileRow.tenant, ProfileRow.name, BindingRow.created_at,
                                BindingRow.ended_at, BindingRow.state)
                         .join(BladeRow, BladeRow.id == BindingRow.blade_id)
                         .join(ProfileRow, ProfileRow.id == BindingRow.profile_id)).all()
    out = []
    for blade, tenant, profile, created, ended, state in rows:
        assert ended is not None or state == "live", f"binding {tenant}/{profile} on {blade} is {state} with no end"
        out.append(Stamp(blade, f"{tenant}/{profile}", Span(_epoch(created), _epoch(ended) if ended else INF)))
    return out


def power(changes: Iterable[PowerChange], blade_of: Mapping[str, str]) -> dict[str, list[tuple[float, bool]]]:
    """Per blade, its power changes (time, on) from the emulators' histories; ``blade_of``: system uuid → blade."""
    out: dict[str, list[tuple[float, bool]]] = {}
    for c in changes:
        # Every system of the rack is a blade: one not found means the join is wrong, and a
        # check over an empty history would pass whatever happened.
        assert c.system in blade_of, f"power change of system {c.system}, which is no blade of {sorted(blade_of)}"
        out.setdefault(blade_of[c.system], []).append((c.at, c.now == "On"))
    return out


def cut_off(history: Mapping[int, list[PortChange]], ports_of: Mapping[str, Iterable[int]]) -> dict[
        str, list[tuple[float, bool]]]:
    """Per blade, changes of "every port of it is admin down", from the switch's own port history."""
    out: dict[str, list[tuple[float, bool]]] = {}
    for blade, ports in ports_of.items():
        ports = list(ports)
        up = dict.fromkeys(ports, True)
        events = sorted((c.at, p, c.up) for p in ports for c in history.get(p, []) if c.up is not None)
        for at, port, state in events:
            up[port] = state
            out.setdefault(blade, []).append((at, not any(up.values())))
    return out


def switch_ports(store: Store, switch: str) -> dict[str, list[str]]:
    """Per blade, the ports of ``switch`` its NICs are cabled to."""
    with store.read() as s:
        rows = s.execute(select(BladeRow.name, BladeNicRow.port).join(BladeNicRow, BladeNicRow.blade_id == BladeRow.id)
                         .join(SwitchRow, SwitchRow.id == BladeNicRow.switch_id).where(SwitchRow.name == switch)).all()
    out: dict[str, list[str]] = {}
    for blade, port in rows:
        out.setdefault(blade, []).append(str(port))
    return out


def inproc_violations(rig: InprocRig, *, cut: Mapping[str, list[tuple[float, bool]]] | None = None) -> list[str]:
    """:func:`world.violations` of an InprocRig: its emulators' power histories, its bindings and,
    unless ``cut`` is given (another switch's), when the snmpsim switch had all of a blade's ports down."""
    for b in rig.blades:
        if b.emulator.proc.alive():
            rig.raw_power(b.name)   # reading a system applies its pending power change (and records it)
    blade_of = {b.system["uuid"]: b.name for b in rig.blades}
    changes = [c for emu in rig.emulators for c in redfish_emulator.power_history(emu)]
    assert changes, "the emulators recorded no power change at all"
    if cut is None and rig.switch is not None:
        ports = {blade: [int(p) for p in ps] for blade, ps in switch_ports(rig.store, SWITCH).items()}
        cut = cut_off(rig.switch.port_history(), ports)
    return world.violations(power(changes, blade_of), stamps(rig.store), cut)
