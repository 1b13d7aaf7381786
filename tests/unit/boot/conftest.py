"""A small inventory for the boot tests: blades with NICs, profiles, live bindings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from appliance.boot.peers import PeerCheck
from appliance.boot.tokens import BootKey, open_attempt
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeNicRow, BladeRow, JobRow, ProfileRow


def profile_doc(name: str, source: dict[str, Any], *, mode: str = "uefi", tenant: str = "acme",
                macs: tuple[str, ...] = (), uuid: str | None = None, iqn: str | None = None) -> dict[str, Any]:
    identity: dict[str, Any] = {"nics": [{"name": f"eth{i}", "mac": m, "vlans": {"native": 100 + i},
                                          **({"pxe": True, "ipv4": f"10.100.0.{11 + i}/24"} if i == 0 else {})}
                                         for i, m in enumerate(macs)]}
    if uuid:
        identity["uuid"] = uuid
    if iqn:
        identity["iscsiInitiator"] = iqn
    return {"apiVersion": "anvil/v1", "kind": "ServerProfile",
            "metadata": {"name": name, "tenant": tenant, "labels": {}},
            "spec": {"identity": identity, "boot": {"mode": mode, "source": source}}}


@dataclass
class Inventory:
    store: Store
    blades: dict[str, int]
    profiles: dict[str, int]
    bindings: dict[str, int]
    key: BootKey = field(default_factory=BootKey.ephemeral)
    tokens: dict[str, str] = field(default_factory=dict)   # profile → token of its open boot attempt

    def add_blade(self, name: str, macs: tuple[str, ...], *, facts: dict[str, Any] | None = None) -> int:
        with self.store.write() as s:
            blade = BladeRow(name=name, bmc_address=f"fake://{name}", driver="fake", username="admin",
                             password_enc="not-a-real-token", facts=facts or {})
            s.add(blade)
            s.flush()
            for i, mac in enumerate(macs):
                s.add(BladeNicRow(blade_id=blade.id, position=i, name=f"nic{i}", mac=mac))
            self.blades[name] = blade.id
            return blade.id

    def add_profile(self, doc: dict[str, Any]) -> int:
        with self.store.write() as s:
            row = ProfileRow(kind="ServerProfile", tenant=doc["metadata"]["tenant"], name=doc["metadata"]["name"],
                             document=doc, state="assigned")
            s.add(row)
            s.flush()
            self.profiles[row.name] = row.id
            return row.id

    def bind(self, profile: str, blade: str, *, generation: int = 1, job: bool = True) -> int:
        with self.store.write() as s:
            job_id = None
            if job:
                job_id = f"00000000-0000-4000-8000-{len(self.bindings) + 1:012d}"
                s.add(JobRow(id=job_id, kind="assign", profile_id=self.profiles[profile], subject=profile,
                             state="waiting"))
                s.flush()
            row = BindingRow(profile_id=self.profiles[profile], blade_id=self.blades[blade], generation=generation,
                             state="live", job_id=job_id)
            s.add(row)
            s.flush()
            self.bindings[profile] = row.id
            if job_id is not None:      # as the engine's set-boot step does
                self.tokens[profile] = open_attempt(s, row, self.key, job_id=job_id)
            return row.id

    def open_attempt(self, profile: str, *, job_id: str | None = None) -> str:
        """A new boot attempt for ``profile``'s binding (the engine's set-boot or restart)."""
        with self.store.write() as s:
            row = s.get(BindingRow, self.bindings[profile])
            assert row is not None
            token = open_attempt(s, row, self.key, job_id=job_id or row.job_id)
        self.tokens[profile] = token
        return token




IMAGE = {"type": "image", "kernel": "lab/vmlinuz", "initrd": "lab/initrd.img", "cmdline": "console=ttyS0 quiet"}
ISCSI = {"type": "iscsi", "portal": "10.30.0.5:3260", "target": "iqn.2026-11.io.anvil.san:db-01", "lun": 1}


@pytest.fixture
def inventory(sqlite_store: Store) -> Inventory:
    """blade-1 (image profile web-01), blade-2 (iSCSI db-01), blade-3 (local, legacy), blade-4 (iSCSI + image),
    blade-5 (no profile)."""
    inv = Inventory(sqlite_store, {}, {}, {})
    inv.add_blade("blade-1", ("52:54:00:00:01:01", "52:54:00:00:01:02"))
    inv.add_blade("blade-2", ("52:54:00:00:02:01",))
    inv.add_blade("blade-3", ("52:54:00:00:03:01",))
    inv.add_blade("blade-4", ("52:54:00:00:04:01",))
    inv.add_blade("blade-5", ("52:54:00:00:05:01",), facts={"uuid": "11111111-2222-3333-4444-555555555555"})
    inv.add_profile(profile_doc("web-01", IMAGE, macs=("02:a0:00:00:00:01", "02:a0:00:00:00:02"),
                                uuid="4c4c4544-0042-3510-8052-b4c04f384d32"))
    inv.add_profile(profile_doc("db-01", ISCSI, mode="legacy", macs=("02:a0:00:00:01:01",),
                                iqn="iqn.2026-11.io.anvil:db-01"))
    inv.add_profile(profile_doc("local-01", {"type": "local"}, mode="legacy", macs=("02:a0:00:00:03:01",)))
    inv.add_profile(profile_doc("hybrid-01", {**ISCSI, "kernel": "lab/vmlinuz", "initrd": "lab/initrd.img"},
                                macs=("02:a0:00:00:04:01",), iqn="iqn.2026-11.io.anvil:hybrid-01"))
    inv.bind("web-01", "blade-1")
    inv.bind("db-01", "blade-2")
    inv.bind("local-01", "blade-3", job=False)
    inv.bind("hybrid-01", "blade-4", generation=3)
    return inv


def loopback_peers() -> PeerCheck:
    """Tests call back from 127.0.0.1: the emulated-rack rule (the service listens on loopback only)."""
    return PeerCheck(loopback_only=True)
