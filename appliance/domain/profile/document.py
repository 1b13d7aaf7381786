"""Profile ↔ plain data, and pydantic errors → :class:`~appliance.errors.Issue` lists.

Both codecs end here: they turn their input into plain data (dicts, lists, str, int,
bool) and call :func:`validate_data` with a ``line_of`` callback that maps a location
to its source line. Every problem is reported, each with a dotted path such as
``spec.identity.nics[1].mac``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import pydantic

from appliance.domain.profile.model import BOOT_SOURCE_TYPES, PARKING_VLAN_CONTEXT, Loc, Profile
from appliance.errors import Issue, ValidationError

MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_ISSUES = 100

LineOf = Callable[[Loc], int | None]

_SIMPLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_+-]*$")


def format_path(loc: Loc) -> str:
    """``("spec", "identity", "nics", 1, "mac")`` → ``spec.identity.nics[1].mac``; odd map keys are quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SIMPLE_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def check_size(data: str | bytes, *, source: str | None = None) -> None:
    """Refuse documents over :data:`MAX_DOCUMENT_BYTES` before any parser sees them."""
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        reason = f"document is {size} bytes; the limit is {MAX_DOCUMENT_BYTES} bytes (1 MiB)"
        raise ValidationError([Issue("", reason)], source=source)


def _clean_loc(loc: tuple[int | str, ...]) -> Loc:
    out: list[str | int] = []
    for part in loc:
        if part == "[key]":
            continue
        if part in BOOT_SOURCE_TYPES and tuple(out[-3:]) == ("spec", "boot", "source") and len(out) == 3:
            continue  # pydantic adds the union's tag to the location; the document has no such level
        out.append(part)
    return tuple(out)


def _show(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = json.dumps(value) if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_REASONS = {
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
}


def _reason(err: Mapping[str, Any], loc: Loc) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "is required"
    if kind == "literal_error" and loc == ("apiVersion",):
        return f'unsupported apiVersion {_show(value)} (expected "anvil/v1")'
    if kind == "enum" and loc == ("kind",):
        return f"unknown kind {_show(value)} (expected ServerProfile or ServerProfileTemplate)"
    if kind == "enum":
        return f"{_show(value)} is not one of {ctx.get('expected', '')}"
    if kind == "union_tag_invalid":
        return f"unknown boot source type {_show(ctx.get('tag'))} (expected iscsi, fc, image or local)"
    if kind == "union_tag_not_found":
        return 'needs a "type": iscsi, fc, image or local'
    if kind in _TYPE_REASONS:
        return f"{_TYPE_REASONS[kind]} (got {_show(value)})"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']} (got {_show(value)})"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']} (got {_show(value)})"
    if kind == "string_too_short":
        return "must not be empty"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def issues_from(exc: pydantic.ValidationError, line_of: LineOf | None = None) -> list[Issue]:
    """One Issue per problem; ``profile_issues`` errors unfold into their located problems."""
    issues: list[Issue] = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(err["loc"])
        located: list[tuple[Loc, str]]
        if err["type"] == "profile_issues":
            located = [(loc + tuple(sub), reason) for sub, reason in err["ctx"]["issues"]]
        else:
            located = [(loc, _reason(err, loc))]
        for where, reason in located:
            issues.append(Issue(format_path(where), reason, line_of(where) if line_of else None))
    return issues[:MAX_ISSUES]


def validate_data(data: object, *, source: str | None = None, line_of: LineOf | None = None,
                  parking_vlan: int | None = None) -> Profile:
    """Validate plain data as a Profile, raising ValidationError with every issue.

    ``parking_vlan``: the appliance's configured parking VLAN, which no NIC may use; None
    skips that rule (documents the store already holds).
    """
    if not isinstance(data, dict):
        issue = Issue("", f"a profile must be a mapping, not {_show(data)}", line_of(()) if line_of else None)
        raise ValidationError([issue], source=source)
    try:
        return Profile.model_validate(data, context={PARKING_VLAN_CONTEXT: parking_vlan})
    except pydantic.ValidationError as exc:
        raise ValidationError(issues_from(exc, line_of), source=source) from None


def from_dict(data: object, *, source: str | None = None, parking_vlan: int | None = None) -> Profile:
    """A Profile from plain data (parsed JSON, YAML); raises ValidationError listing every issue.

    The parking VLAN is checked only when given: stored documents are read back with None.
    """
    return validate_data(data, source=source, parking_vlan=parking_vlan)


def _prune(value: Any) -> Any:
    # Every list, map and sub-object that can dump to empty defaults to that empty value,
    # so dropping empties keeps from_dict(to_dict(p)) == p.
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def to_dict(p: Profile) -> dict[str, Any]:
    """Plain JSON-able data with the document's keys; unset optional fields and empty collections are left out."""
    data: dict[str, Any] = _prune(p.model_dump(mode="json", exclude_none=True))
    return data
