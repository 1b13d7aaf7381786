"""DR plans (issue 16 item 3): which of this site's profiles come back at the recovery site,
on which of its blade pools, with which VLANs and LUN replicas, in which order. Pure logic.

A plan document (YAML, ``kind: DrPlan``)::

    apiVersion: anvil/v1
    kind: DrPlan
    metadata: {name: prod-to-b}
    spec:
      recoverySite: site-b
      profiles:                       # a profile is in the plan when any selector matches it
        - all: true                   # or {tenant: acme} | {labels: {tier: web}} | {hostPool: hv}
      pools:                          # the recovery site's blade pools: first match wins
        - {profiles: "db-*", pool: db-spares}
        - {pool: spares}              # no pattern: everything left (the default is `spares`)
      vlans: {20: 220}                # production: this site's VLAN -> the recovery site's
      rehearsalVlans: {20: 920}       # rehearsal: isolated, never a production VLAN
      storage:                        # this site's boot LUN -> its named replica there
        - target: iqn.2026-11.io.anvil.san:db-01
          lun: 0
          replica: {name: db-01-r, portal: "10.78.0.1:3260", target: "iqn.2026-11.io.anvil.b:db-01", lun: 0}
      priorities: {"db-*": 100}       # larger first (as failover priorities); default 0
      dependencies: ["db-01 before web-*"]

Patterns are shell globs on the profile's name, or on ``tenant/name`` when they hold a ``/``.

Order: the recovery runs in waves. Of the profiles whose dependencies are all up, the wave is
those of the highest priority; the next wave starts once it is up. So a dependency always
wins over a priority, and profiles of one priority with nothing between them come up at once.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, model_validator
from pydantic import ValidationError as PydanticError
from pydantic_core import PydanticCustomError

from appliance.domain.profile.model import DEFAULT_PARKING_VLAN, VLAN_MAX, VLAN_MIN, Iqn, Lun, Name, Portal
from appliance.errors import Issue, ValidationError

API_VERSION = "anvil/v1"
KIND = "DrPlan"
DEFAULT_POOL = "spares"
MAX_BYTES = 1 << 20        # a plan of thousands of rules is still a few hundred KiB
_DEP_RE = re.compile(r"^\s*(\S+)\s+before\s+(\S+)\s*$")
_GLOB_RE = re.compile(r"^[A-Za-z0-9*?\[\]!/._-]{1,127}$")

Vlan = Annotated[int, Strict(), Field(ge=VLAN_MIN, le=VLAN_MAX)]
# A map's key: an integer in YAML, a string once stored as JSON (whose keys are strings).
VlanKey = Annotated[int, Field(ge=VLAN_MIN, le=VLAN_MAX)]


def _glob(value: str) -> str:
    if not _GLOB_RE.match(value):
        raise PydanticCustomError("invalid_value", '"{v}" is not a profile pattern (a name or shell glob, '
                                  'optionally tenant/name)', {"v": value})
    return value


Glob = Annotated[str, Strict(), AfterValidator(_glob)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Selector(_Model):
    """One way to pick profiles; exactly one field set."""

    all: Annotated[bool, Strict()] | None = None
    tenant: Name | None = None
    labels: dict[str, str] | None = None
    hostPool: Name | None = None

    @model_validator(mode="after")
    def _one(self) -> Selector:
        given = [k for k in ("all", "tenant", "labels", "hostPool") if getattr(self, k) is not None]
        if len(given) != 1:
            raise PydanticCustomError("invalid_value", "a selector has exactly one of all, tenant, labels, "
                                      "hostPool (found {n})", {"n": ", ".join(given) or "none"})
        if self.all is False:
            raise PydanticCustomError("invalid_value", "all: false selects nothing; leave the selector out", {})
        return self


class PoolRule(_Model):
    profiles: Glob | None = None
    pool: Name


class Replica(_Model):
    name: Name
    portal: Portal
    target: Iqn
    lun: Lun = 0


class StorageRule(_Model):
    """A boot LUN at this site (target + LUN) and its replica at the recovery site. ``copyFrom``
    is the lab's stand-in for array replication: the backing file the recovery site copies
    into the replica's backing file when it rehearses or activates."""

    target: Iqn
    lun: Lun = 0
    replica: Replica
    copyFrom: Annotated[str, Strict(), Field(min_length=1, max_length=4096)] | None = None


class Metadata(_Model):
    name: Name
    description: Annotated[str, Strict(), Field(max_length=1024)] = ""


class Spec(_Model):
    recoverySite: Name
    profiles: tuple[Selector, ...] = Field(min_length=1)
    pools: tuple[PoolRule, ...] = ()
    vlans: dict[VlanKey, Vlan] = Field(default_factory=dict)
    rehearsalVlans: dict[VlanKey, Vlan] = Field(default_factory=dict)
    storage: tuple[StorageRule, ...] = ()
    priorities: dict[Glob, Annotated[int, Strict(), Field(ge=-1000, le=1000)]] = Field(default_factory=dict)
    dependencies: tuple[Annotated[str, Strict()], ...] = ()


class PlanDoc(_Model):
    apiVersion: Literal["anvil/v1"]
    kind: Literal["DrPlan"]
    metadata: Metadata
    spec: Spec


@dataclass(frozen=True, slots=True)
class Dependency:
    first: str     # pattern
    then: str      # pattern


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated plan. ``document`` is its canonical dict (what is stored and replicated)."""

    name: str
    recovery_site: str
    selectors: tuple[Selector, ...]
    pools: tuple[PoolRule, ...]
    vlans: Mapping[int, int]
    rehearsal_vlans: Mapping[int, int]
    storage: tuple[StorageRule, ...]
    priorities: Mapping[str, int]
    dependencies: tuple[Dependency, ...]
    document: dict[str, Any] = field(compare=False)


@dataclass(frozen=True, slots=True)
class Member:
    """What a plan needs to know of one of this site's profiles to select and order it."""

    tenant: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    host_pool: str | None = None

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.name}"


def _matches(pattern: str, m: Member) -> bool:
    return fnmatch.fnmatchcase(m.key if "/" in pattern else m.name, pattern)


def _path(loc: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in loc)


def _issues_of(exc: PydanticError) -> list[Issue]:
    out: list[Issue] = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "constrained")))]
        # dict keys appear as "[key]" in pydantic's loc: name them as the key itself
        cleaned = [p for p in loc if p not in ("[key]",)]
        msg = err["msg"]
        if err["type"] == "literal_error":
            msg = f"must be {err['ctx']['expected']}"
        elif err["type"] == "extra_forbidden":
            msg = "is not a field of a DR plan"
        elif err["type"] == "missing":
            msg = "is required"
        out.append(Issue(_path(cleaned), msg))
    return out


def parse(text: str | bytes, *, source: str | None = None,
          parking_vlan: int = DEFAULT_PARKING_VLAN) -> Plan:
    """A plan from its YAML (or JSON) text. ValidationError naming every bad field."""
    if len(text) > MAX_BYTES:
        raise ValidationError([Issue("", f"is {len(text)} bytes; a plan is at most {MAX_BYTES}")], source=source)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = int(mark.line) + 1 if mark is not None else None
        raise ValidationError([Issue("", f"not valid YAML: {getattr(exc, 'problem', exc)}", line)],
                              source=source) from None
    return from_dict(data, source=source, parking_vlan=parking_vlan)


def from_dict(data: Any, *, source: str | None = None, parking_vlan: int = DEFAULT_PARKING_VLAN) -> Plan:
    if not isinstance(data, dict):
        raise ValidationError([Issue("", "a DR plan is a mapping with apiVersion, kind, metadata and spec")],
                              source=source)
    try:
        doc = PlanDoc.model_validate(data)
    except PydanticError as exc:
        raise ValidationError(_issues_of(exc), source=source) from None
    issues = _check(doc.spec, parking_vlan)
    deps: list[Dependency] = []
    for i, text in enumerate(doc.spec.dependencies):
        m = _DEP_RE.match(text)
        if m is None:
            issues.append(Issue(f"spec.dependencies.{i}", f'"{text}" is not "PATTERN before PATTERN"'))
            continue
        for part in m.groups():
            if not _GLOB_RE.match(part):
                issues.append(Issue(f"spec.dependencies.{i}", f'"{part}" is not a profile pattern'))
        deps.append(Dependency(m.group(1), m.group(2)))
    if issues:
        raise ValidationError(issues, source=source)
    s = doc.spec
    return Plan(doc.metadata.name, s.recoverySite, s.profiles, s.pools, dict(s.vlans), dict(s.rehearsalVlans),
                s.storage, dict(s.priorities), tuple(deps), doc.model_dump(mode="json", exclude_none=True))


def _check(spec: Spec, parking: int) -> list[Issue]:
    """Rules across fields: a rehearsal VLAN is never a production VLAN (at either site), no
    map uses the parking VLAN, replicas are distinct."""
    issues: list[Issue] = []
    production = set(spec.vlans) | set(spec.vlans.values())
    for src, dst in spec.vlans.items():
        if parking in (src, dst):
            issues.append(Issue(f"spec.vlans.{src}", f"VLAN {parking} is the parking VLAN"))
    seen: dict[int, int] = {}
    for src, dst in spec.rehearsalVlans.items():
        where = f"spec.rehearsalVlans.{src}"
        if dst in production:
            issues.append(Issue(where, f"VLAN {dst} is a production VLAN (spec.vlans uses it); a rehearsal runs "
                                       "only on isolated VLANs"))
        if dst == parking:
            issues.append(Issue(where, f"VLAN {dst} is the parking VLAN"))
        if dst in seen:
            issues.append(Issue(where, f"VLAN {dst} is already the rehearsal VLAN of {seen[dst]}"))
        seen.setdefault(dst, src)
    for src in spec.rehearsalVlans:
        if spec.vlans and src not in spec.vlans:
            issues.append(Issue(f"spec.rehearsalVlans.{src}", f"VLAN {src} is not in spec.vlans; a rehearsal "
                                "maps the same VLANs as an activation"))
    replicas: dict[str, int] = {}
    sources: dict[tuple[str, int], int] = {}
    for i, rule in enumerate(spec.storage):
        if rule.replica.name in replicas:
            first = replicas[rule.replica.name]
            issues.append(Issue(f"spec.storage.{i}.replica.name",
                                f'"{rule.replica.name}" is already the replica of spec.storage.{first}'))
        replicas.setdefault(rule.replica.name, i)
        if (rule.target, rule.lun) in sources:
            issues.append(Issue(f"spec.storage.{i}.target", f"{rule.target} LUN {rule.lun} is already mapped "
                                f"by spec.storage.{sources[(rule.target, rule.lun)]}"))
        sources.setdefault((rule.target, rule.lun), i)
    for i, pool in enumerate(spec.pools):
        if pool.profiles is None and i != len(spec.pools) - 1:
            issues.append(Issue(f"spec.pools.{i}", "a rule without `profiles` matches everything; it must be last"))
    return issues


# -- selection and order --------------------------------------------------------------------------------------

def selects(plan: Plan, m: Member) -> bool:
    for sel in plan.selectors:
        if sel.all:
            return True
        if sel.tenant is not None and m.tenant == sel.tenant:
            return True
        if sel.labels is not None and all(m.labels.get(k) == v for k, v in sel.labels.items()):
            return True
        if sel.hostPool is not None and m.host_pool == sel.hostPool:
            return True
    return False


def members(plan: Plan, candidates: Iterable[Member]) -> list[Member]:
    """The plan's profiles among ``candidates``, sorted by tenant/name."""
    return sorted((m for m in candidates if selects(plan, m)), key=lambda m: m.key)


def pool_for(plan: Plan, m: Member) -> str:
    for rule in plan.pools:
        if rule.profiles is None or _matches(rule.profiles, m):
            return rule.pool
    return DEFAULT_POOL


def priority_of(plan: Plan, m: Member) -> int:
    """The priority of the first matching pattern (in the document's order); 0 when none."""
    for pattern, prio in plan.priorities.items():
        if _matches(pattern, m):
            return prio
    return 0


class CycleError(ValidationError):
    """The plan's dependencies form a cycle among these profiles."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__([Issue("spec.dependencies", "the dependencies form a cycle: " + " before ".join(cycle))])


def waves(plan: Plan, chosen: Sequence[Member]) -> list[list[Member]]:
    """The recovery order of ``chosen`` (see the module docstring). CycleError naming the
    profiles of a cycle; a dependency on a profile outside ``chosen`` is ignored (it is not
    recovered by this plan, so nothing here can wait for it)."""
    by_key = {m.key: m for m in chosen}
    after = waits_for(plan, chosen)
    cycle = _find_cycle(after)
    if cycle:
        raise CycleError(cycle)
    done: set[str] = set()
    out: list[list[Member]] = []
    while len(done) < len(by_key):
        ready = [k for k in by_key if k not in done and after[k] <= done]
        top = max(priority_of(plan, by_key[k]) for k in ready)
        wave = sorted((by_key[k] for k in ready if priority_of(plan, by_key[k]) == top), key=lambda m: m.key)
        out.append(wave)
        done.update(m.key for m in wave)
    return out


def waits_for(plan: Plan, chosen: Sequence[Member]) -> dict[str, set[str]]:
    """tenant/name -> the tenant/names among ``chosen`` that must be up before it."""
    after: dict[str, set[str]] = {m.key: set() for m in chosen}
    for dep in plan.dependencies:
        firsts = [m.key for m in chosen if _matches(dep.first, m)]
        for m in chosen:
            if _matches(dep.then, m):
                after[m.key].update(f for f in firsts if f != m.key)
    return after


def _find_cycle(after: Mapping[str, set[str]]) -> list[str]:
    """One cycle of the wait-for graph, first element repeated at the end; [] when none."""
    state: dict[str, int] = {}           # 1 on the stack, 2 finished
    for start in sorted(after):
        if state.get(start):
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(after[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            nxt = todo.pop()
            if state.get(nxt) == 1:
                cyc = [*path[path.index(nxt):], nxt]
                return list(reversed(cyc))      # "a before b before a": waits-for reversed
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(after.get(nxt, ()))))
    return []
