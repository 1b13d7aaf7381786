"""Failover bookkeeping on SQLite and PostgreSQL: domains with encrypted webhook secrets,
bounded health history, failover records with timelines, and the needs-operator path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, insert, select, text

from appliance.domain.failover import FailoverState, FenceMethod
from appliance.drivers.protocols import Secret
from appliance.errors import Conflict, NotFound, ValidationError
from appliance.secrets import SecretBox
from appliance.services.audit import AuditFilter, AuditService
from appliance.services.blade_pools import BladePoolService
from appliance.services.blades import BladeService, Enrollment, NicSpec
from appliance.services.failover import FailoverService, HealthSample
from appliance.services.profiles import ProfileService
from appliance.store import Store
from appliance.store.audit import Actor, acting_as
from appliance.store.repos import jobs as jobs_repo
from appliance.store.tables import BindingRow, BladeHealthRow, BladeRow, FailoverDomainRow, JobEventRow, ProfileRow

SECRET = "whsec-0123456789abcdef-SECRET"
ADMIN = Actor("local:alice", "cli")

DOC = """\
apiVersion: anvil/v1
kind: ServerProfile
metadata: {name: NAME, tenant: acme}
spec:
  requirements: {minCpus: CPUS}
  identity:
    nics:
      - {name: eth0, mac: "02:a0:00:00:00:NN", vlans: {native: 100}, pxe: true}
  boot: {source: {type: local}}
  failover: {domain: DOMAIN, priority: PRIO, policy: n+1}
"""


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return SecretBox(tmp_path / "secrets.key")


@pytest.fixture
def svc(store: Store, box: SecretBox) -> FailoverService:
    return FailoverService(store, box, history_limit=20)


def blade(store: Store, box: SecretBox, name: str, n: int, cpus: int = 16) -> None:
    BladeService(store, box).enroll(Enrollment(name=name, bmc=f"ipmi://127.0.0.1:{6230 + n}", username="admin",
                                               password=Secret("pw"), cpus=cpus, memory_gib=64,
                                               nics=(NicSpec("eth0", f"52:54:00:00:{n:02x}:01"),)))


def profile(store: Store, name: str, n: int, *, domain: str = "prod-web", priority: int = 10, cpus: int = 8) -> None:
    doc = (DOC.replace("NAME", name).replace("NN", f"{n:02x}").replace("DOMAIN", domain)
           .replace("PRIO", str(priority)).replace("CPUS", str(cpus)))
    ProfileService(store).import_document(doc)


def bind(store: Store, prof: str, blade_name: str) -> None:
    """What a finished stamp leaves behind: a live binding, both sides active."""
    with store.write() as s:
        p = s.scalar(select(ProfileRow).where(ProfileRow.name == prof))
        b = s.scalar(select(BladeRow).where(BladeRow.name == blade_name))
        assert p is not None and b is not None
        s.add(BindingRow(profile_id=p.id, blade_id=b.id, generation=1, state="live"))
        p.state, b.state = "active", "active"


# --- domains --------------------------------------------------------------------------


def test_domain_webhook_secret_is_encrypted_and_never_returned(store: Store, box: SecretBox,
                                                                svc: FailoverService) -> None:
    with acting_as(ADMIN):
        info = svc.create_domain("prod-web", webhook_url="https://hooks.example/anvil", webhook_secret=Secret(SECRET),
                                 restart_attempts=2, description="web tier")
    assert info.public()["webhookSecret"] == "***" and SECRET not in repr(info) and SECRET not in str(info.public())
    with store.read() as s:
        enc = s.scalar(select(FailoverDomainRow.webhook_secret_enc))
    assert enc and SECRET not in enc and box.decrypt(enc).reveal() == SECRET
    target = svc.webhook_target("prod-web")
    assert target is not None and target.secret.reveal() == SECRET and SECRET not in repr(target)
    assert target.url == "https://hooks.example/anvil"
    entries, _ = AuditService(store).list(AuditFilter(resource="failover-domain"))
    assert [e["action"] for e in entries] == ["create"] and SECRET not in str(entries)
    assert entries[0]["who"] == "local:alice" and entries[0]["after"]["webhookSecret"] == "***"
    svc.create_domain("quiet")
    assert svc.webhook_target("quiet") is None
    assert [d.name for d in svc.list_domains()] == ["prod-web", "quiet"]


def test_bad_domains_name_the_field_and_change_nothing(store: Store, svc: FailoverService) -> None:
    cases = [
        (dict(name="Prod"), "name: "),
        (dict(name="d", spare_pool="nope"), "sparePool: blade pool 'nope' does not exist"),
        (dict(name="d", restart_attempts=-1), "restartAttempts: -1 is outside 0-10"),
        (dict(name="d", webhook_url="https://h/x"), "webhookSecret: is required"),
        (dict(name="d", webhook_url="ftp://h/x", webhook_secret=Secret(SECRET)), "webhookUrl: "),
        (dict(name="d", webhook_url="https://h/x", webhook_secret=Secret("short")), "at least 16"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValidationError) as exc:
            svc.create_domain(**kwargs)  # type: ignore[arg-type]
        assert message in str(exc.value), (kwargs, str(exc.value))
    assert svc.list_domains() == []
    svc.create_domain("d")
    with pytest.raises(Conflict, match="already exists"):
        svc.create_domain("d")
    with pytest.raises(NotFound, match="failover domain 'x' not found"):
        svc.get_domain("x")


def test_update_keeps_or_replaces_the_secret_and_checks_the_pool(store: Store, box: SecretBox,
                                                                 svc: FailoverService) -> None:
    BladePoolService(store).create("web-spares")
    svc.create_domain("d", webhook_url="https://h/a", webhook_secret=Secret(SECRET))
    info = svc.update_domain("d", spare_pool="web-spares", webhook_url="https://h/b", restart_attempts=3)
    assert (info.spare_pool, info.webhook_url, info.restart_attempts, info.has_webhook_secret) == (
        "web-spares", "https://h/b", 3, True)
    assert svc.webhook_target("d").secret.reveal() == SECRET  # type: ignore[union-attr]
    with acting_as(ADMIN):
        svc.update_domain("d", webhook_secret=Secret("another-secret-0123456789"))
    assert svc.webhook_target("d").secret.reveal() == "another-secret-0123456789"  # type: ignore[union-attr]
    entry = AuditService(store).list(AuditFilter(resource="failover-domain"))[0][0]
    assert entry["after"]["webhookSecret"] == "*** (changed)" and "another-secret" not in str(entry)
    with pytest.raises(ValidationError, match="sparePool"):
        svc.update_domain("d", spare_pool="missing")
    assert svc.get_domain("d").spare_pool == "web-spares"
    info = svc.update_domain("d", remove_webhook=True)
    assert info.webhook_url is None and not info.has_webhook_secret and svc.webhook_target("d") is None
    with pytest.raises(ValidationError, match="webhookSecret: is given without a webhook URL"):
        svc.update_domain("d", webhook_secret=Secret(SECRET))


def test_domain_lists_its_profiles_and_refuses_deletion_while_it_protects_them(store: Store, box: SecretBox,
                                                                                svc: FailoverService) -> None:
    svc.create_domain("prod-web")
    blade(store, box, "b1", 1)
    profile(store, "web-01", 1, priority=10)
    profile(store, "db-01", 2, priority=100)
    profile(store, "other", 3, domain="elsewhere")
    bind(store, "web-01", "b1")
    members = svc.get_domain("prod-web").profiles
    assert [(p.name, p.priority, p.blade, p.state) for p in members] == [
        ("db-01", 100, None, "unassigned"), ("web-01", 10, "b1", "active")]
    with pytest.raises(Conflict, match=r"still protects 2 profile\(s\) \(acme/db-01, acme/web-01\)"):
        svc.delete_domain("prod-web")
    svc.create_domain("empty")
    svc.delete_domain("empty")
    assert [d.name for d in svc.list_domains()] == ["prod-web"]


# --- health history -------------------------------------------------------------------


def test_health_history_is_bounded_per_blade_and_newest_first(store: Store, box: SecretBox,
                                                              svc: FailoverService) -> None:
    blade(store, box, "b1", 1)
    blade(store, box, "b2", 2)
    t0 = datetime(2026, 11, 24, tzinfo=UTC)
    svc.record_health("b2", HealthSample(ok=True, at=t0))
    for i in range(25):
        svc.record_health("b1", HealthSample(ok=i % 2 == 0, at=t0 + timedelta(seconds=30 * i), power="on",
                                             health="OK", verdict="healthy", detail=f"poll {i}"))
    history = svc.health_history("b1")
    assert len(history) == 20 and history[0].detail == "poll 24" and history[-1].detail == "poll 5"
    assert history[0].at == t0 + timedelta(seconds=720) and history[0].public()["power"] == "on"
    assert len(svc.health_history("b2")) == 1
    assert len(svc.health_history("b1", limit=3)) == 3
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(BladeHealthRow)) == 21


def test_a_poll_round_is_recorded_in_a_few_statements_whatever_the_blade_count(store: Store,
                                                                                svc: FailoverService) -> None:
    # The monitor records every blade's sample in one write transaction, which holds the store's
    # write lock (the engine's steps wait): at 10,000 blades, ORM rows and two prune statements per
    # blade held it ~3 s a pass. Now: the ids, one insert and one prune, each run once for all.
    names = [f"hb{i:03d}" for i in range(300)]
    with store.write() as s:
        s.execute(insert(BladeRow), [{"name": n, "bmc_address": f"fake://{n}", "driver": "fake", "username": "u",
                                      "password_enc": "x", "verify_tls": True, "state": "spare", "facts": {}}
                                     for n in names])
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        t0 = datetime(2026, 11, 24, tzinfo=UTC)
        for k in range(22):   # beyond the history limit (20): the oldest are pruned
            statements.clear()
            assert svc.record_health_many([(n, HealthSample(ok=True, at=t0 + timedelta(seconds=30 * k),
                                                            detail=f"poll {k}")) for n in names]) == 300
            assert len(statements) <= 6, statements[:10]
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    history = svc.health_history("hb007")
    assert len(history) == 20 and history[0].detail == "poll 21" and history[-1].detail == "poll 2"
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(BladeHealthRow)) == 300 * 20


def test_health_batches_skip_deleted_blades_and_refuse_bad_samples(store: Store, box: SecretBox,
                                                                   svc: FailoverService) -> None:
    blade(store, box, "b1", 1)
    assert svc.record_health_many([("b1", HealthSample(ok=True, source="heartbeat", detail="x" * 600)),
                                   ("gone", HealthSample(ok=False))]) == 1
    assert len(svc.health_history("b1")[0].detail) == 512
    with pytest.raises(ValidationError, match=r"samples\[1\].source: 'bogus' is not one of"):
        svc.record_health_many([("b1", HealthSample(ok=True)), ("b1", HealthSample(ok=True, source="bogus"))])
    assert len(svc.health_history("b1")) == 1
    with pytest.raises(NotFound, match="blade 'gone'"):
        svc.record_health("gone", HealthSample(ok=True))
    with pytest.raises(NotFound):
        svc.health_history("gone")
    BladeService(store, box).delete("b1")  # history goes with the blade
    with store.read() as s:
        assert s.scalar(select(func.count()).select_from(BladeHealthRow)) == 0


# --- failover records -----------------------------------------------------------------


@pytest.fixture
def protected(store: Store, box: SecretBox, svc: FailoverService) -> None:
    svc.create_domain("prod-web")
    for i in (1, 2, 3):
        blade(store, box, f"b{i}", i)
    profile(store, "web-01", 1, priority=10)
    bind(store, "web-01", "b1")


@pytest.mark.usefixtures("protected")
def test_a_failover_runs_through_its_states_with_a_timeline(svc: FailoverService) -> None:
    fo = svc.open_failover(tenant="acme", profile="web-01", reason="3 heartbeats missed")
    assert (fo.domain, fo.policy, fo.priority, fo.from_blade, fo.state) == ("prod-web", "n+1", 10, "b1", "detected")
    assert [e["event"] for e in fo.timeline] == ["detected"] and fo.timeline[0]["detail"] == "3 heartbeats missed"
    with pytest.raises(Conflict, match=r"already has an open failover \(#\d+, detected\)"):
        svc.open_failover(tenant="acme", profile="web-01", reason="again")
    svc.advance(fo.id, FailoverState.FENCING)
    with pytest.raises(ValidationError, match="fence: entering fenced needs how"):
        svc.advance(fo.id, FailoverState.FENCED)
    svc.advance(fo.id, FailoverState.FENCED, fence=FenceMethod.POWER, detail="power off confirmed")
    svc.advance(fo.id, FailoverState.FENCED, fence=FenceMethod.POWER)  # a re-run step: no second entry
    with pytest.raises(ValidationError, match="toBlade"):
        svc.advance(fo.id, FailoverState.MOVING)
    svc.advance(fo.id, FailoverState.MOVING, to_blade="b2", job_id="job-1")
    svc.advance(fo.id, FailoverState.BOOTING)
    svc.add_event(fo.id, "booted", detail="boot signal, generation 2", once=True)
    svc.add_event(fo.id, "booted", once=True)
    with pytest.raises(ValidationError, match="event"):
        svc.add_event(fo.id, "Not An Event")
    done = svc.advance(fo.id, FailoverState.SUCCEEDED)
    assert [e["event"] for e in done.timeline] == ["detected", "fenced", "spare-chosen", "powered-on", "booted",
                                                   "active"]
    assert done.timeline[1]["detail"] == "power off confirmed" and done.timeline[2]["detail"] == "b2"
    assert (done.to_blade, done.fence, done.job_id, done.final) == ("b2", "power", "job-1", True)
    assert done.finished_at is not None
    with pytest.raises(Conflict, match="cannot go from succeeded to failed"):
        svc.advance(fo.id, FailoverState.FAILED)
    # Closed: the profile may fail over again.
    again = svc.open_failover(tenant="acme", profile="web-01", reason="again", from_blade="b2", drill=True)
    assert again.drill and again.from_blade == "b2"
    assert [f.id for f in svc.list_failovers(domain="prod-web")] == [again.id, fo.id]
    assert [f.id for f in svc.list_failovers(open_only=True)] == [again.id]
    assert svc.list_failovers(domain="other") == []


@pytest.mark.usefixtures("protected")
def test_opening_refuses_unknown_things(store: Store, svc: FailoverService) -> None:
    with pytest.raises(NotFound, match="profile 'nope' not found in tenant 'acme'"):
        svc.open_failover(tenant="acme", profile="nope", reason="x")
    with pytest.raises(NotFound, match="failover domain 'ghost'"):
        svc.open_failover(tenant="acme", profile="web-01", reason="x", domain="ghost")
    with pytest.raises(NotFound, match="blade 'b9'"):
        svc.open_failover(tenant="acme", profile="web-01", reason="x", from_blade="b9")
    with pytest.raises(NotFound, match="failover '#999'"):
        svc.get_failover(999)
    assert svc.list_failovers() == []


@pytest.mark.usefixtures("protected")
def test_needs_operator_until_an_admin_confirms_the_fence(store: Store, svc: FailoverService) -> None:
    with store.write() as s:
        pid = s.scalar(select(ProfileRow.id).where(ProfileRow.name == "web-01"))
        job = jobs_repo.create(s, kind="failover", subject="profile acme/web-01", profile_id=pid, tenant="acme",
                               params={}, step_names=["fence"])
        job_id = job.id
    fo = svc.open_failover(tenant="acme", profile="web-01", reason="BMC unreachable", job_id=job_id)
    with pytest.raises(Conflict, match="no failover waiting for a fence confirmation"):
        svc.confirm_fenced("b1")
    svc.advance(fo.id, FailoverState.FENCING)
    held = svc.mark_needs_operator(fo.id, "BMC unreachable and blade b1 has no cabled port")
    assert held.state == "needs-operator" and held.timeline[-1]["event"] == "fence-unconfirmed"
    assert [f.id for f in svc.list_failovers(state="needs-operator")] == [fo.id]
    with store.read() as s:
        assert s.scalar(select(ProfileRow.state).where(ProfileRow.name == "web-01")) == "needs-operator"
    with pytest.raises(Conflict, match="cannot go from needs-operator to moving"):
        svc.advance(fo.id, FailoverState.MOVING, to_blade="b2")
    with pytest.raises(NotFound):
        svc.confirm_fenced("b9")
    with pytest.raises(Conflict):
        svc.confirm_fenced("b2")
    with acting_as(ADMIN):
        done = svc.confirm_fenced("b1")
    assert (done.state, done.fence) == ("fenced", "operator")
    assert done.timeline[-1]["event"] == "fence-confirmed" and done.timeline[-1]["detail"] == "by local:alice"
    with store.read() as s:
        assert s.scalar(select(ProfileRow.state).where(ProfileRow.name == "web-01")) == "failed"
        b1 = s.scalar(select(BladeRow).where(BladeRow.name == "b1"))
        assert b1 is not None and (b1.state, b1.state_reason) == ("fenced", "fence confirmed by hand by local:alice")
        ev = s.scalar(select(JobEventRow).where(JobEventRow.job_id == job_id, JobEventRow.kind == "fence-confirmed"))
        assert ev is not None and ev.data == {"blade": "b1", "failover": fo.id, "by": "local:alice"}
    entries, _ = AuditService(store).list(AuditFilter(resource="blade", action="confirm-fenced"))
    assert entries[0]["who"] == "local:alice" and entries[0]["name"] == "b1"


@pytest.mark.usefixtures("protected")
def test_a_failed_blade_returns_to_spares_only_when_cleared(store: Store, svc: FailoverService) -> None:
    with pytest.raises(Conflict, match="is spare, not failed or fenced"):
        svc.clear_failed("b2")
    fo = svc.open_failover(tenant="acme", profile="web-01", reason="dead")
    with store.write() as s:
        s.execute(text("UPDATE bindings SET state = 'ended'"))
        s.execute(text("UPDATE blades SET state = 'failed', state_reason = 'dead' WHERE name = 'b1'"))
    with pytest.raises(Conflict, match="failed blade of open failover"):
        svc.clear_failed("b1")
    svc.advance(fo.id, FailoverState.CANCELLED, reason="drill over")
    svc.clear_failed("b1")
    with store.read() as s:
        b1 = s.scalar(select(BladeRow).where(BladeRow.name == "b1"))
        assert b1 is not None and (b1.state, b1.state_reason) == ("spare", None)


def test_spare_plan_puts_the_most_important_first_and_explains_the_rest(store: Store, box: SecretBox,
                                                                       svc: FailoverService) -> None:
    svc.create_domain("prod-web")
    for i in (1, 2, 3):
        blade(store, box, f"b{i}", i)
    blade(store, box, "spare", 4)
    for i, (name, prio) in enumerate((("web-01", 10), ("db-01", 100), ("web-02", 10)), start=1):
        profile(store, name, i, priority=prio)
        bind(store, name, f"b{i}")
    ids = []
    for name in ("web-01", "db-01", "web-02"):
        fo = svc.open_failover(tenant="acme", profile=name, reason="dead")
        svc.advance(fo.id, FailoverState.FENCING)
        svc.advance(fo.id, FailoverState.FENCED, fence=FenceMethod.POWER)
        ids.append(fo.id)
    plan = svc.spare_plan("prod-web")
    assert plan.blade_for("acme/db-01") == "spare"
    assert [(w.profile, w.position, w.reason) for w in plan.waiting] == [
        ("acme/web-01", 1, "waiting for a spare: 1 higher-priority profile ahead"),
        ("acme/web-02", 2, "waiting for a spare: 1 higher-priority profile ahead"),
    ]
