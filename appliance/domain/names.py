"""The one rule for object names (blades, switches, pools): a DNS label, lowercase."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def is_name(value: str) -> bool:
    return bool(NAME_RE.match(value))
