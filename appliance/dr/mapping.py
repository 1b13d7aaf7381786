"""A profile document as it runs at the recovery site: VLANs and boot LUN mapped by a plan, and
for a rehearsal, a clone with identities of its own. Pure: dict in, dict out.

Rehearsal identities. A rehearsal clone runs while the live profile keeps running at the
primary site. Isolated VLANs would make duplicate MACs harmless on the wire, but not
everywhere else: the recovery site's store holds the replicated profile's identities (an
identity is held once), an FC fabric or a SAN ACL has no VLANs, and the DR watcher reading
both sites' BMCs could not tell a rehearsal from a split brain. So a clone gets its own
identities, derived from the live ones and the run (stable for one run, so a resumed
rehearsal re-derives the same): MACs locally administered (``0a:…``), a name-based UUID, the
initiator IQN with a ``.rh-RUN`` suffix, WWNs with the NAA 5 prefix hashed. The clone boots
from a copy of the replica (its own target), never from the replica an activation would use.
"""

from __future__ import annotations

import copy
import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from appliance.dr.plan import Plan, StorageRule
from appliance.errors import Issue, ValidationError

REHEARSAL_LABEL = "anvil.io/dr-rehearsal"
ORIGIN_LABEL = "anvil.io/dr-origin"
_NS = uuid.UUID("6f1e1c2a-8d0b-4f4e-9a57-3d2f5b0c7e11")


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode()).digest()


def rehearsal_mac(run: str, mac: str) -> str:
    d = _digest("mac", run, mac)
    return ":".join(f"{b:02x}" for b in (0x0A, *d[:5]))


def rehearsal_uuid(run: str, value: str) -> str:
    return str(uuid.uuid5(_NS, f"{run}:{value}"))


def rehearsal_wwn(run: str, value: str) -> str:
    d = _digest("wwn", run, value)
    return ":".join(f"{b:02x}" for b in (0x5A, *d[:7]))


def rehearsal_iqn(run: str, value: str) -> str:
    return f"{value}.rh-{run}"


def rehearsal_target(run: str, target: str) -> str:
    """The target of a rehearsal's copy of a replica."""
    return f"{target}.rh-{run}"


def rehearsal_name(run: str, name: str) -> str:
    """A clone's profile name: the live name cut to fit, and the run (names are ≤ 63)."""
    suffix = f"-rh-{run}"
    return name[: 63 - len(suffix)].rstrip("-") + suffix


def _vlan(vmap: Mapping[int, int], vlan: int, where: str, profile: str, which: str) -> int:
    if vlan not in vmap:
        raise ValidationError([Issue(where, f"profile {profile} uses VLAN {vlan}, which the plan's {which} "
                                            "does not map")])
    return vmap[vlan]


def storage_rule(plan: Plan, target: str, lun: int) -> StorageRule | None:
    for rule in plan.storage:
        if rule.target == target and rule.lun == lun:
            return rule
    return None


def recovery_document(doc: Mapping[str, Any], plan: Plan, *, rehearsal_run: str | None = None) -> dict[str, Any]:
    """The profile ``doc`` as it runs at the recovery site. ValidationError naming the profile
    and what the plan does not map (a VLAN; an iSCSI boot LUN without a replica)."""
    out = copy.deepcopy(dict(doc))
    meta = out.setdefault("metadata", {})
    key = f"{meta.get('tenant', 'default')}/{meta.get('name')}"
    spec = out.setdefault("spec", {})
    ident = spec.setdefault("identity", {})
    vmap = plan.rehearsal_vlans if rehearsal_run else plan.vlans
    which = "spec.rehearsalVlans" if rehearsal_run else "spec.vlans"
    for i, nic in enumerate(ident.get("nics", ())):
        vl = nic.get("vlans") or {}
        where = f"{key}: spec.identity.nics.{i}.vlans"
        if vl.get("native") is not None:
            vl["native"] = _vlan(vmap, int(vl["native"]), where, key, which)
        if vl.get("tagged"):
            vl["tagged"] = [_vlan(vmap, int(v), where, key, which) for v in vl["tagged"]]
    src = (spec.get("boot") or {}).get("source") or {}
    if src.get("type") == "iscsi":
        rule = storage_rule(plan, src["target"], int(src.get("lun", 0)))
        if rule is None:
            raise ValidationError([Issue(f"{key}: spec.boot.source", f"profile {key} boots from {src['target']} "
                                         f"LUN {src.get('lun', 0)}, which the plan's spec.storage does not map")])
        src["portal"] = rule.replica.portal
        src["target"] = rule_target(rule, rehearsal_run)
        src["lun"] = rule.replica.lun
    if rehearsal_run:
        _rehearsal_identities(out, rehearsal_run)
    return out


def rule_target(rule: StorageRule, rehearsal_run: str | None) -> str:
    return rehearsal_target(rehearsal_run, rule.replica.target) if rehearsal_run else rule.replica.target


def _rehearsal_identities(doc: dict[str, Any], run: str) -> None:
    meta = doc["metadata"]
    origin = f"{meta.get('tenant', 'default')}/{meta['name']}"
    meta["name"] = rehearsal_name(run, meta["name"])
    labels = dict(meta.get("labels") or {})
    labels[REHEARSAL_LABEL] = run
    labels[ORIGIN_LABEL] = origin.replace("/", ".")
    meta["labels"] = labels
    ident = doc["spec"]["identity"]
    if ident.get("uuid") and not str(ident["uuid"]).startswith("pool:"):
        ident["uuid"] = rehearsal_uuid(run, ident["uuid"])
    if ident.get("iscsiInitiator") and not str(ident["iscsiInitiator"]).startswith("pool:"):
        ident["iscsiInitiator"] = rehearsal_iqn(run, ident["iscsiInitiator"])
    for nic in ident.get("nics", ()):
        if nic.get("mac") and not str(nic["mac"]).startswith("pool:"):
            nic["mac"] = rehearsal_mac(run, nic["mac"])
    for hba in ident.get("hbas", ()):
        for f in ("wwpn", "wwnn"):
            if hba.get(f) and not str(hba[f]).startswith("pool:"):
                hba[f] = rehearsal_wwn(run, hba[f])
    # A clone is not protected by the live profile's failover domain: a rehearsal is torn down.
    doc["spec"].pop("failover", None)


