"""VM hosts on SQLite and PostgreSQL: enrolment makes one libvirt blade per slot (the libvirt
calls are the driver's, replaced here by a recorder: tests/integration/vm and tests/e2e run
them against a real libvirtd), failover domains list VM hosts as spares of last resort,
blade pools choose which kind goes first, and a planned move is refused before it fences."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.drivers.libvirt.domain import Slot
from appliance.drivers.protocols import Secret
from appliance.errors import Conflict, NotFound, ValidationError
from appliance.secrets import SecretBox
from appliance.services.blade_pools import BladePoolService
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.failover import FailoverService, domain_spares
from appliance.services.jobs import JobService
from appliance.services.profiles import ProfileService
from appliance.services.vm_hosts import VmHostService, VmHostSpec
from appliance.store import Store
from appliance.store.tables import BindingRow, BladeRow, FailoverDomainRow, FailoverRow, JobRow, ProfileRow

URI = "qemu+ssh://root@hv1/system"
DOC = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {name: web-01, tenant: acme}
spec:
  requirements: {minCpus: 1}
  identity:
    uuid: 4c4c4544-0042-3510-8052-b4c04f384d32
    nics: [{name: eth0, mac: "02:a0:00:00:00:01", pxe: true}]
  boot: {source: {type: local}}
  failover: {domain: dom, priority: 10, policy: n+1}
"""


class Libvirt:
    def __init__(self) -> None:
        self.defined: dict[str, Slot] = {}

    def define(self, uri: str, slot: Slot) -> str:
        assert uri == URI
        if slot.name in self.defined:
            return "kept"
        self.defined[slot.name] = slot
        return "defined"

    def undefine(self, uri: str, name: str) -> str:
        return "undefined" if self.defined.pop(name, None) else "gone"


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return SecretBox(tmp_path / "secrets.key")


@pytest.fixture
def lv() -> Libvirt:
    return Libvirt()


@pytest.fixture
def hosts(store: Store, box: SecretBox, lv: Libvirt) -> VmHostService:
    return VmHostService(store, box, define=lv.define, undefine=lv.undefine)


def physical(store: Store, box: SecretBox, name: str, n: int) -> None:
    BladeService(store, box).enroll(Enrollment(name=name, bmc=f"ipmi://127.0.0.1:{6230 + n}", username="admin",
                                               password=Secret("pw"), cpus=2, memory_gib=4,
                                               nics=(NicSpec("eth0", f"52:54:00:00:{n:02x}:01"),)))


def test_enrolment_defines_a_domain_per_slot_and_enrols_each_as_a_libvirt_blade(
        store: Store, hosts: VmHostService, lv: Libvirt) -> None:
    info = hosts.enroll(VmHostSpec(name="hv1", uri=URI, slots=2, cpus=2, memory_mib=2048))
    assert [b for b, _, _ in info.blades] == ["hv1-01", "hv1-02"]
    assert sorted(lv.defined) == ["anvil-hv1-01", "anvil-hv1-02"]
    with store.read() as s:
        row = s.scalar(select(BladeRow).where(BladeRow.name == "hv1-01"))
        assert row is not None
        assert (row.driver, row.bmc_address, row.chassis, row.cpus, row.memory_gib) == (
            "libvirt", f"libvirt+{URI}#anvil-hv1-01", "hv1", 2, 2)
        assert row.facts["virtual"] is True
    with pytest.raises(Conflict, match="already enrolled"):
        hosts.enroll(VmHostSpec(name="hv1", uri=URI))
    assert hosts.list()[0].public()["blades"][0] == {"name": "hv1-01", "state": "spare", "profile": None}


def test_bad_input_names_each_field_and_defines_nothing(hosts: VmHostService, lv: Libvirt) -> None:
    with pytest.raises(ValidationError) as err:
        hosts.enroll(VmHostSpec(name="HV 1", uri="http://hv1/", bridge="a bridge name too long", slots=0,
                                bridge_type="vde"))
    fields = {i.path for i in err.value.issues}
    assert fields == {"name", "uri", "bridge", "bridgeType", "slots"}, err.value.issues
    assert lv.defined == {}


def test_a_failover_domain_uses_vm_slots_only_when_it_lists_their_host_and_after_physical_spares(
        store: Store, box: SecretBox, hosts: VmHostService) -> None:
    hosts.enroll(VmHostSpec(name="hv1", uri=URI, slots=1, cpus=4, memory_mib=1024))
    physical(store, box, "rack-01", 1)
    fo = FailoverService(store, box)
    fo.create_domain("plain")
    fo.create_domain("dom", vm_hosts=["hv1"])
    with pytest.raises(ValidationError, match="VM host 'hv9' is not enrolled"):
        fo.create_domain("bad", vm_hosts=["hv9"])
    assert fo.get_domain("dom").public()["vmHosts"] == ["hv1"]
    with store.read() as s:
        plain = s.scalar(select(FailoverDomainRow).where(FailoverDomainRow.name == "plain"))
        listed = s.scalar(select(FailoverDomainRow).where(FailoverDomainRow.name == "dom"))
        assert plain is not None and listed is not None
        assert [c.name for c in domain_spares(s, plain)] == ["rack-01"]
        assert sorted(c.name for c in domain_spares(s, listed)) == ["hv1-01", "rack-01"]
    ProfileService(store).import_document(DOC)
    with store.write() as s:
        from appliance.services.failover import open_record

        open_record(s, tenant="acme", profile="web-01", reason="test")
    plan = fo.spare_plan("dom")
    assert [(a.profile, a.blade) for a in plan.assignments] == [("acme/web-01", "rack-01")]
    BladeService(store, box).set_maintenance("rack-01", True)
    plan = fo.spare_plan("dom")
    assert [(a.profile, a.blade) for a in plan.assignments] == [("acme/web-01", "hv1-01")]   # last resort
    # A VM host a domain lists is not deleted from under it; detached when it goes away for good.
    with pytest.raises(Conflict, match="spare source of failover domain"):
        hosts.delete("hv1")
    fo.update_domain("dom", vm_hosts=[])
    assert fo.get_domain("dom").vm_hosts == ()


def test_a_blade_pool_may_prefer_vm_slots(store: Store, box: SecretBox, hosts: VmHostService) -> None:
    from appliance.domain.profile import from_dict
    from appliance.services.placement import dry_run

    hosts.enroll(VmHostSpec(name="hv1", uri=URI, slots=1, cpus=2, memory_mib=1024))
    physical(store, box, "rack-01", 1)
    pools = BladePoolService(store)
    pools.create("mixed", prefer="virtual")
    pools.add("mixed", ("rack-01", "hv1-01"))
    ProfileService(store).import_document(DOC)
    with pytest.raises(ValidationError, match="'cloud' is not one of physical, virtual, any"):
        pools.update("mixed", prefer="cloud")
    with store.read() as s:
        doc = from_dict(s.scalar(select(ProfileRow.document).where(ProfileRow.name == "web-01")))
        assert dry_run(s, doc).chosen == ("rack-01", "hv1-01")
        assert dry_run(s, doc, pool="mixed").chosen == ("hv1-01", "rack-01")
    pools.update("mixed", prefer="physical")
    with store.read() as s:
        assert dry_run(s, doc, pool="mixed").chosen == ("rack-01", "hv1-01")


def test_a_move_that_cannot_land_is_refused_before_anything_is_fenced(
        store: Store, box: SecretBox, hosts: VmHostService) -> None:
    hosts.enroll(VmHostSpec(name="hv1", uri=URI, slots=1, cpus=2, memory_mib=1024))
    physical(store, box, "rack-01", 1)
    FailoverService(store, box).create_domain("dom", vm_hosts=["hv1"])
    ProfileService(store).import_document(DOC)
    with store.write() as s:
        p = s.scalar(select(ProfileRow).where(ProfileRow.name == "web-01"))
        b = s.scalar(select(BladeRow).where(BladeRow.name == "rack-01"))
        assert p is not None and b is not None
        s.add(BindingRow(profile_id=p.id, blade_id=b.id, generation=1, state="live"))
        p.state, b.state = "active", "active"
    jobs = JobService(store)
    BladeService(store, box).set_maintenance("hv1-01", True)
    with pytest.raises(Conflict, match="hv1-01 cannot take acme/web-01: in maintenance"):
        jobs.submit_move("web-01", tenant="acme", to_blade="hv1-01", reason="test")
    with pytest.raises(Conflict, match="is on rack-01 already"):
        jobs.submit_move("web-01", tenant="acme", to_blade="rack-01", reason="test")
    with pytest.raises(NotFound):
        jobs.submit_move("web-01", tenant="acme", to_blade="nowhere", reason="test")
    with store.read() as s:
        assert s.scalar(select(FailoverRow.id)) is None and s.scalar(select(JobRow.id)) is None
    BladeService(store, box).set_maintenance("hv1-01", False)
    failover_id, job = jobs.submit_move("web-01", tenant="acme", to_blade="hv1-01", reason="test")
    with store.read() as s:
        row = s.get(FailoverRow, failover_id)
        jrow = s.get(JobRow, job.id)
        assert row is not None and row.drill and jrow is not None
        assert jrow.params["to"] == "hv1-01" and jrow.params["exact"] is True
