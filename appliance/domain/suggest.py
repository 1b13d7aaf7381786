"""Suggestions ("did you mean …?") for a name that was not found. Pure: the caller passes only the names
the asker may see (appliance.services.scope), so a suggestion never reveals another
tenant's objects."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

MAX_SUGGESTIONS = 3
CUTOFF = 0.6      # difflib's ratio: "web01" → "web-01", "rf-1" → "rf-01"; not "db-01" → "rf-01"


NEAR_BEST = 0.1  # "rf-1" → rf-01 only, not also rf-02: only names about as close as the closest


def close_names(name: str, candidates: Iterable[str], *, n: int = MAX_SUGGESTIONS) -> list[str]:
    """Up to ``n`` of ``candidates`` that look like ``name`` (best first), never ``name`` itself."""
    pool = sorted({c for c in candidates if c and c != name})
    exact_case = [c for c in pool if c.lower() == name.lower()]
    if exact_case:
        return exact_case[:n]
    scored = []
    for c in pool:
        m = difflib.SequenceMatcher(None, name, c)
        if m.real_quick_ratio() >= CUTOFF and m.quick_ratio() >= CUTOFF and m.ratio() >= CUTOFF:
            scored.append((m.ratio(), c))
    scored.sort(key=lambda rc: (-rc[0], rc[1]))
    return [c for r, c in scored if r >= scored[0][0] - NEAR_BEST][:n]


def did_you_mean(names: list[str]) -> str | None:
    """``did you mean web-01?`` / ``did you mean web-01 or web-02?``; None for no name."""
    if not names:
        return None
    if len(names) == 1:
        return f"did you mean {names[0]}?"
    return f"did you mean {', '.join(names[:-1])} or {names[-1]}?"


def elsewhere(name: str, tenants: list[str]) -> str | None:
    """``web-01 exists in tenant acme`` (only for a caller who may see those tenants)."""
    if not tenants:
        return None
    where = tenants[0] if len(tenants) == 1 else f"{', '.join(tenants[:-1])} and {tenants[-1]}"
    return f"{name} exists in tenant{'s' if len(tenants) > 1 else ''} {where}"
