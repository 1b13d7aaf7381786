"""Failover policy: who gets a spare, what to do with a failed profile, when a fence counts.

Pure: the caller passes the failed profiles and the inventory as values.

**Priority.** A larger ``priority`` number is more important and wins a spare first
(``spec.failover.priority``, default 0; negative values rank below the default). This
follows the issue's "higher priority wins" and the usual reading elsewhere (Kubernetes
PriorityClass, Pacemaker scores, VRRP): the example database profile carries 100, the
web profile 10. Ties go to the profile that failed first, then to the name, so the
queue is stable from one evaluation to the next.

**Policies.** ``none``: alert only. ``restart``: power-cycle the same blade up to the
domain's ``restart_attempts``, then move to a spare like ``n+1`` ("first" in the issue:
a restart is tried before a move, not instead of it). ``n+1``: fence and move at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import urlsplit

from appliance.domain.names import NAME_RE
from appliance.domain.placement import Candidate, Requirements, place, rejection

MAX_RESTART_ATTEMPTS = 10
MAX_WEBHOOK_URL = 2048
MIN_WEBHOOK_SECRET = 16
MAX_WEBHOOK_SECRET = 512
EVENT_NAME_MAX = 32


class Policy(StrEnum):
    """Same values as the profile model's ``FailoverPolicy`` (a test keeps them equal); kept
    apart so the monitor need not import the pydantic profile model."""

    NONE = "none"
    RESTART = "restart"
    N_PLUS_1 = "n+1"


class FailoverState(StrEnum):
    DETECTED = "detected"              # a failure was declared; nothing done yet
    RESTARTING = "restarting"          # policy restart: power-cycling the same blade
    FENCING = "fencing"                # cutting the old blade off (power, then ports/LUNs)
    NEEDS_OPERATOR = "needs-operator"  # no fence could be confirmed: an admin must confirm by hand
    FENCED = "fenced"                  # the old blade is confirmed cut off
    WAITING = "waiting"                # fenced, in line for a spare
    MOVING = "moving"                  # identities, VLANs and LUN access going to the spare
    BOOTING = "booting"                # spare powered on; waiting for the boot signal or heartbeat
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


F = FailoverState

# A record never skips the fence on its way to a spare: FENCED is the only way into
# WAITING and MOVING, and once fenced a record only goes forward (a spare that fails
# while moving or booting sends the profile back in line, still fenced).
FAILOVER_TRANSITIONS: Mapping[FailoverState, frozenset[FailoverState]] = {
    F.DETECTED: frozenset({F.RESTARTING, F.FENCING, F.FAILED, F.CANCELLED}),
    F.RESTARTING: frozenset({F.SUCCEEDED, F.FENCING, F.FAILED, F.CANCELLED}),
    F.FENCING: frozenset({F.FENCED, F.NEEDS_OPERATOR, F.FAILED, F.CANCELLED}),
    F.NEEDS_OPERATOR: frozenset({F.FENCED, F.FAILED, F.CANCELLED}),
    F.FENCED: frozenset({F.WAITING, F.MOVING, F.FAILED, F.CANCELLED}),
    F.WAITING: frozenset({F.MOVING, F.FAILED, F.CANCELLED}),
    F.MOVING: frozenset({F.BOOTING, F.WAITING, F.FAILED}),
    F.BOOTING: frozenset({F.SUCCEEDED, F.MOVING, F.WAITING, F.FAILED}),
    F.SUCCEEDED: frozenset(),
    F.FAILED: frozenset(),
    F.CANCELLED: frozenset(),
}
FINAL_FAILOVER_STATES = frozenset({F.SUCCEEDED, F.FAILED, F.CANCELLED})
OPEN_FAILOVER_STATES = frozenset(FailoverState) - FINAL_FAILOVER_STATES


class FailoverEvent(StrEnum):
    """Timeline events the appliance records; a timeline may carry others (same name rule)."""

    DETECTED = "detected"
    RESTARTED = "restarted"
    FENCED = "fenced"
    FENCE_UNCONFIRMED = "fence-unconfirmed"
    FENCE_CONFIRMED = "fence-confirmed"    # by an admin, by hand
    SPARE_CHOSEN = "spare-chosen"
    WAITING = "waiting"
    POWERED_ON = "powered-on"
    BOOTED = "booted"
    ACTIVE = "active"
    FAILED = "failed"
    CANCELLED = "cancelled"


def is_event_name(value: str) -> bool:
    """Timeline event names follow the object-name rule, shorter (they are shown in tables)."""
    return len(value) <= EVENT_NAME_MAX and bool(NAME_RE.match(value))


# --- domains -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FailoverDomain:
    """A set of profiles protected by the blades of ``spare_pool``. The webhook secret is
    not part of this value: it stays encrypted in the store until a sender needs it."""

    name: str
    spare_pool: str = "spares"
    restart_attempts: int = 1          # power cycles of the same blade under policy restart
    webhook_url: str | None = None
    description: str = ""


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot receive webhooks, or None."""
    if len(url) > MAX_WEBHOOK_URL:
        return f"is longer than {MAX_WEBHOOK_URL} characters"
    try:
        parts = urlsplit(url)
        _ = parts.port  # parsing it is the check
    except ValueError:
        return f'"{url}" is not a valid URL'
    if parts.scheme not in ("http", "https"):
        return f'"{url}" must be an http:// or https:// URL'
    if not parts.hostname:
        return f'"{url}" has no host'
    if parts.username or parts.password:
        return "credentials do not belong in the webhook URL (the body is signed with the webhook secret)"
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        return f"{url!r} contains whitespace or a control character"
    return None


def domain_problems(domain: FailoverDomain, *, webhook_secret: str | None,
                    secret_required: bool = True) -> list[tuple[str, str]]:
    """Every problem with a domain definition as (field, reason); empty when it is valid.

    ``secret_required`` is False when updating a domain that already holds a secret.
    Field names are the API's (camelCase), as other validation errors.
    """
    out: list[tuple[str, str]] = []
    if not NAME_RE.match(domain.name):
        out.append(("name", f"{domain.name!r} is not a lowercase name (a-z, 0-9, '-')"))
    if not NAME_RE.match(domain.spare_pool):
        out.append(("sparePool", f"{domain.spare_pool!r} is not a lowercase name (a-z, 0-9, '-')"))
    if not 0 <= domain.restart_attempts <= MAX_RESTART_ATTEMPTS:
        out.append(("restartAttempts", f"{domain.restart_attempts} is outside 0-{MAX_RESTART_ATTEMPTS}"))
    if len(domain.description) > 255:
        out.append(("description", "is longer than 255 characters"))
    if domain.webhook_url is not None:
        problem = webhook_url_problem(domain.webhook_url)
        if problem:
            out.append(("webhookUrl", problem))
        if webhook_secret is None and secret_required:
            out.append(("webhookSecret", "is required with a webhook URL (webhooks are always signed)"))
    elif webhook_secret is not None:
        out.append(("webhookSecret", "is given without a webhook URL"))
    if webhook_secret is not None:
        if len(webhook_secret) < MIN_WEBHOOK_SECRET:
            out.append(("webhookSecret", f"must be at least {MIN_WEBHOOK_SECRET} characters"))
        elif len(webhook_secret) > MAX_WEBHOOK_SECRET:
            out.append(("webhookSecret", f"must be at most {MAX_WEBHOOK_SECRET} characters"))
        elif any(c.isspace() or ord(c) < 0x20 for c in webhook_secret):
            out.append(("webhookSecret", "must not contain whitespace or control characters"))
    return out


# --- spares ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FailedProfile:
    """A protected profile whose blade failed. ``name`` is the caller's key (``tenant/name``)."""

    name: str
    priority: int
    failed_at: datetime
    requirements: Requirements = field(default_factory=Requirements)


@dataclass(frozen=True, slots=True)
class Assignment:
    profile: str
    blade: str


@dataclass(frozen=True, slots=True)
class Waiting:
    profile: str
    position: int                      # 1-based place in the line of waiting profiles
    reason: str


@dataclass(frozen=True, slots=True)
class SparePlan:
    assignments: tuple[Assignment, ...]
    waiting: tuple[Waiting, ...]

    def blade_for(self, profile: str) -> str | None:
        return next((a.blade for a in self.assignments if a.profile == profile), None)


def _utc(t: datetime) -> datetime:
    """Naive datetimes are taken as UTC (SQLite hands them back naive)."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def queue_order(failed: Iterable[FailedProfile]) -> list[FailedProfile]:
    """Most important first: higher priority, then earlier failure, then name."""
    return sorted(failed, key=lambda f: (-f.priority, _utc(f.failed_at), f.name))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _waiting_reason(p: FailedProfile, available: Sequence[Candidate],
                    taken_by: Mapping[str, FailedProfile]) -> str:
    if not available:
        return "waiting for a spare: the spare pool has no available blade"
    fitting = [c for c in available if rejection(p.requirements, c) is None]
    if not fitting:
        why = "; ".join(f"{c.name}: {rejection(p.requirements, c)}" for c in available[:3])
        more = f"; and {len(available) - 3} more" if len(available) > 3 else ""
        return f"waiting for a spare that meets its requirements ({why}{more})"
    ahead = [taken_by[c.name] for c in fitting]
    higher = sum(1 for q in ahead if q.priority > p.priority)
    same = len(ahead) - higher
    parts = []
    if higher:
        parts.append(_plural(higher, "higher-priority profile"))
    if same:
        parts.append(_plural(same, "earlier failure") + " of the same priority")
    return f"waiting for a spare: {' and '.join(parts)} ahead"


def plan_spares(failed: Iterable[FailedProfile], spares: Iterable[Candidate]) -> SparePlan:
    """Give each failed profile a spare, most important first; the rest wait in order.

    Each profile gets the best blade (by :func:`~appliance.domain.placement.place`, so its
    requirements are met) among those not yet given to a profile ahead of it. A profile
    that no available spare can take waits, with the reason; it does not hold up the
    profiles behind it that a spare can take. Profile names must be unique.
    """
    order = queue_order(failed)
    names = [p.name for p in order]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"profile {dup!r} is listed twice")
    candidates = sorted(spares, key=lambda c: c.name)
    if len({c.name for c in candidates}) != len(candidates):
        raise ValueError("a spare blade is listed twice")
    available = [c for c in candidates if rejection(Requirements(), c) is None]
    taken_by: dict[str, FailedProfile] = {}
    assignments: list[Assignment] = []
    waiting: list[Waiting] = []
    for p in order:
        best = place(p.requirements, [c for c in available if c.name not in taken_by]).best
        if best is not None:
            taken_by[best] = p
            assignments.append(Assignment(p.name, best))
        else:
            waiting.append(Waiting(p.name, len(waiting) + 1, _waiting_reason(p, available, taken_by)))
    return SparePlan(tuple(assignments), tuple(waiting))


# --- what to do with one failure -------------------------------------------------------


class Action(StrEnum):
    ALERT = "alert"        # policy none: tell someone, touch nothing
    RESTART = "restart"    # power-cycle the same blade
    MOVE = "move"          # fence the old blade and move the profile to a spare


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str


def decide(policy: Policy, *, restarts_done: int, restart_attempts: int, bmc_reachable: bool) -> Decision:
    """The next action for a failed profile under ``policy``.

    A restart needs a BMC that answers; without one the profile moves at once (after
    its fence, which then relies on switch ports and LUN access).
    """
    if policy is Policy.NONE:
        return Decision(Action.ALERT, "policy none: alert only")
    if policy is Policy.RESTART:
        if not bmc_reachable:
            return Decision(Action.MOVE, "policy restart, but the BMC does not answer: moving to a spare")
        if restarts_done < restart_attempts:
            return Decision(Action.RESTART, f"policy restart: power cycle {restarts_done + 1} of {restart_attempts}")
        return Decision(Action.MOVE, f"policy restart: {_plural(restarts_done, 'power cycle')} did not help; "
                                     "moving to a spare")
    return Decision(Action.MOVE, "policy n+1: moving to a spare")


# --- fencing ---------------------------------------------------------------------------


class FenceMethod(StrEnum):
    POWER = "power"          # BMC power off, read back as off
    ISOLATION = "isolation"  # every switch port shut and (for iSCSI boot) LUN access revoked, read back
    OPERATOR = "operator"    # an admin confirmed by hand (anvil failover confirm-fenced)
