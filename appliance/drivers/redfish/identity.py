"""Virtual identities on DMTF NetworkDeviceFunction resources — pure mapping, no I/O.

A NetworkDeviceFunction (NDF) of type Ethernet holds ``Ethernet.MACAddress`` (the
one in use) beside ``Ethernet.PermanentMACAddress`` (burned in), and optionally
``iSCSIBoot``; one of type FibreChannel holds ``FibreChannel.WWPN/WWNN`` beside
``PermanentWWPN/PermanentWWNN``. "Virtual" means "differs from the permanent value".

``apply`` converges to exactly the identities given: NICs and HBAs beyond the given
ones go back to their permanent values, so ``clear`` is ``apply`` of nothing.
Functions are matched in the service's member order, Ethernet and FC separately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from appliance.drivers.protocols import FcBoot, HbaFact, IdentityCaps, IscsiBoot, VirtualIdentities

_HEX = re.compile(r"[^0-9a-f]")


def norm_mac(value: str) -> str:
    """``52-54-00-AA-BB-CC`` / ``525400aabbcc`` → ``52:54:00:aa:bb:cc``; other input returned lowercased."""
    digits = _HEX.sub("", value.lower())
    if len(digits) != 12:
        return value.lower()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def norm_wwn(value: str) -> str:
    digits = _HEX.sub("", value.lower())
    if len(digits) != 16:
        return value.lower()
    return ":".join(digits[i : i + 2] for i in range(0, 16, 2))


@dataclass(frozen=True, slots=True)
class Ndf:
    """One NetworkDeviceFunction as read: its link and its JSON body."""

    path: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        t = str(self.body.get("NetDevFuncType") or "")
        if t == "Ethernet" or (not t and isinstance(self.body.get("Ethernet"), dict)):
            return "eth"
        if t == "FibreChannel" or (not t and isinstance(self.body.get("FibreChannel"), dict)):
            return "fc"
        if t == "iSCSI":
            return "eth"
        return "other"

    def _sub(self, key: str) -> dict[str, Any]:
        sub = self.body.get(key)
        return sub if isinstance(sub, dict) else {}

    @property
    def mac(self) -> str:
        return norm_mac(str(self._sub("Ethernet").get("MACAddress") or ""))

    @property
    def permanent_mac(self) -> str:
        eth = self._sub("Ethernet")
        return norm_mac(str(eth.get("PermanentMACAddress") or eth.get("MACAddress") or ""))

    @property
    def wwpn(self) -> str:
        return norm_wwn(str(self._sub("FibreChannel").get("WWPN") or ""))

    @property
    def wwnn(self) -> str:
        return norm_wwn(str(self._sub("FibreChannel").get("WWNN") or ""))

    @property
    def permanent_wwpn(self) -> str:
        fc = self._sub("FibreChannel")
        return norm_wwn(str(fc.get("PermanentWWPN") or fc.get("WWPN") or ""))

    @property
    def permanent_wwnn(self) -> str:
        fc = self._sub("FibreChannel")
        return norm_wwn(str(fc.get("PermanentWWNN") or fc.get("WWNN") or ""))

    @property
    def iscsi(self) -> dict[str, Any] | None:
        sub = self.body.get("iSCSIBoot")
        return sub if isinstance(sub, dict) else None


def split(ndfs: list[Ndf]) -> tuple[list[Ndf], list[Ndf]]:
    eth = [n for n in ndfs if n.kind == "eth"]
    fc = [n for n in ndfs if n.kind == "fc"]
    return eth, fc


def capabilities(ndfs: list[Ndf]) -> IdentityCaps:
    eth, fc = split(ndfs)
    return IdentityCaps(
        mac=any("MACAddress" in n._sub("Ethernet") for n in eth),
        wwpn=any("WWPN" in n._sub("FibreChannel") for n in fc),
        wwnn=any("WWNN" in n._sub("FibreChannel") for n in fc),
        iscsi_initiator=any(n.iscsi is not None for n in eth),
    )


def hbas(ndfs: list[Ndf]) -> tuple[HbaFact, ...]:
    """Burned-in FC identities (inspection facts)."""
    _, fc = split(ndfs)
    return tuple(
        HbaFact(name=str(n.body.get("Id") or n.path.rsplit("/", 1)[-1]), wwpn=n.permanent_wwpn, wwnn=n.permanent_wwnn)
        for n in fc
        if n.permanent_wwpn
    )


def _trim(values: list[tuple[Any, bool]]) -> list[Any]:
    """Keep values up to the last one that is virtual (flag True)."""
    last = max((i for i, (_, virtual) in enumerate(values) if virtual), default=-1)
    return [v for v, _ in values[: last + 1]]


def read(ndfs: list[Ndf]) -> VirtualIdentities:
    eth, fc = split(ndfs)
    macs = _trim([(n.mac, n.mac != n.permanent_mac) for n in eth])
    fcs = _trim(
        [
            (FcBoot(wwpn=n.wwpn, wwnn=n.wwnn), (n.wwpn, n.wwnn) != (n.permanent_wwpn, n.permanent_wwnn))
            for n in fc
        ]
    )
    iscsi = None
    for n in eth:
        boot = n.iscsi
        if boot and boot.get("InitiatorName"):
            port = boot.get("PrimaryTargetTCPPort") or 3260
            iscsi = IscsiBoot(
                initiator=str(boot["InitiatorName"]),
                target=str(boot.get("PrimaryTargetName") or ""),
                portal=f"{boot.get('PrimaryTargetIPAddress') or ''}:{port}",
                lun=int(boot.get("PrimaryLUN") or 0),
            )
            break
    return VirtualIdentities(macs=tuple(macs), iscsi=iscsi, fc=tuple(fcs))


def _iscsi_body(boot: IscsiBoot | None) -> dict[str, Any]:
    if boot is None:
        return {
            "InitiatorName": "",
            "PrimaryTargetName": "",
            "PrimaryTargetIPAddress": "",
            "PrimaryTargetTCPPort": 3260,
            "PrimaryLUN": 0,
        }
    host, _, port = boot.portal.rpartition(":")
    if not host:
        host, port = boot.portal, "3260"
    return {
        "InitiatorName": boot.initiator,
        "PrimaryTargetName": boot.target,
        "PrimaryTargetIPAddress": host.strip("[]"),
        "PrimaryTargetTCPPort": int(port),
        "PrimaryLUN": boot.lun,
    }


class PlanError(ValueError):
    """The identities do not fit this blade's functions (too many MACs, no FC function…)."""


def plan(ndfs: list[Ndf], ids: VirtualIdentities) -> list[tuple[str, dict[str, Any]]]:
    """The PATCHes (link, body) that make the functions hold exactly ``ids``; empty if already so."""
    eth, fc = split(ndfs)
    if len(ids.macs) > len(eth):
        raise PlanError(f"{len(ids.macs)} MACs for {len(eth)} Ethernet functions")
    if len(ids.fc) > len(fc):
        raise PlanError(f"{len(ids.fc)} FC identities for {len(fc)} FC functions")
    iscsi_capable = [n for n in eth if n.iscsi is not None]
    if ids.iscsi is not None and not iscsi_capable:
        raise PlanError("no Ethernet function has iSCSIBoot")
    patches: list[tuple[str, dict[str, Any]]] = []
    for i, n in enumerate(eth):
        body: dict[str, Any] = {}
        want_mac = norm_mac(ids.macs[i]) if i < len(ids.macs) else n.permanent_mac
        if n.mac != want_mac:
            body["Ethernet"] = {"MACAddress": want_mac}
        if n.iscsi is not None:
            want_boot = ids.iscsi if (iscsi_capable and n is iscsi_capable[0]) else None
            want = _iscsi_body(want_boot)
            have = {k: n.iscsi.get(k) for k in want}
            if have != want and not (want_boot is None and not n.iscsi.get("InitiatorName")):
                body["iSCSIBoot"] = want
        if body:
            patches.append((n.path, body))
    for i, n in enumerate(fc):
        if i < len(ids.fc):
            want_pn, want_nn = norm_wwn(ids.fc[i].wwpn), norm_wwn(ids.fc[i].wwnn)
        else:
            want_pn, want_nn = n.permanent_wwpn, n.permanent_wwnn
        if (n.wwpn, n.wwnn) != (want_pn, want_nn):
            patches.append((n.path, {"FibreChannel": {"WWPN": want_pn, "WWNN": want_nn}}))
    return patches
