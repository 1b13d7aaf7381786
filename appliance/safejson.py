"""JSON from the network, parsed with bounds: nesting depth, duplicate keys, and errors
that name the problem instead of a RecursionError deep inside whoever walks the result.

Used for every JSON body the appliance reads (API routes, boot callbacks and discovery,
BMC events). Size is bounded before this by each app's ``client_max_size``.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.errors import Issue, ValidationError

MAX_DEPTH = 32    # far beyond any document of ours (a profile is 6 levels deep)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key[:64]!r} appears twice in one object")
        out[key] = value
    return out


def depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        stack.extend((child, level) for child in children)
    return deepest


def loads(raw: bytes | str, *, where: str = "body") -> Any:
    """Parse JSON; ValidationError (naming ``where``) for invalid JSON, duplicate keys, or
    nesting deeper than :data:`MAX_DEPTH`."""
    try:
        data = json.loads(raw, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ValidationError([Issue(where, f"nests deeper than {MAX_DEPTH} levels")]) from None
    except (ValueError, UnicodeDecodeError) as exc:
        reason = str(exc) if "appears twice" in str(exc) else "is not valid JSON"
        raise ValidationError([Issue(where, reason)]) from None
    if depth(data) > MAX_DEPTH:
        raise ValidationError([Issue(where, f"nests deeper than {MAX_DEPTH} levels")])
    return data
