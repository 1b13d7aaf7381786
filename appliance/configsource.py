"""The configuration's sources without pydantic: which file, the ``ANVIL_*`` variables, the
state directory's default, and where the state and the store are when that is all a
configuration sets.

appliance.config builds the validated Settings from these same functions (one set of
defaults and variable names); importing it costs pydantic and the models' schemas (~0.1 s),
too much for ``anvil blade list``'s start-up (issue 20: ≤ 0.3 s). :func:`quick_location`
answers for that command when the configuration names nothing but ``state_dir`` and
``store.url``; for anything else the caller loads the full Settings, which validate it.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYSTEM_CONFIG = Path("/etc/anvil/anvil.toml")
SYSTEM_STATE_DIR = Path("/var/lib/anvil")
STORE_FILE = "anvil.db"
# The settings' top-level keys and sections as ``ANVIL_*`` variables name them, for quick_location;
# appliance.config reads its models' own, and a test checks these against them.
TOP_KEYS = ("state_dir", "secrets_key", "log_level", "cpus")
SECTIONS = ("store", "api", "boot", "network", "storage", "engine", "monitor", "metrics")
# What quick_location understands: (section or None for a top-level key, key).
_QUICK_KEYS = frozenset({(None, "state_dir"), ("store", "url")})


def is_system(env: Mapping[str, str]) -> bool:
    """The system service (root under systemd, or ``ANVIL_SYSTEM=1``): /etc and /var/lib."""
    if env.get("ANVIL_SYSTEM") == "1":
        return True
    return os.geteuid() == 0 and "INVOCATION_ID" in env and "ANVIL_STATE_DIR" not in env


def user_state_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "state")
    return Path(base) / "anvil"


def default_state_dir(env: Mapping[str, str]) -> Path:
    """The state directory when neither the file nor ``ANVIL_STATE_DIR`` names one."""
    return SYSTEM_STATE_DIR if is_system(env) else user_state_dir(env)


def default_config_path(env: Mapping[str, str]) -> Path:
    if env.get("ANVIL_CONFIG"):
        return Path(env["ANVIL_CONFIG"])
    if is_system(env):
        return SYSTEM_CONFIG
    state = Path(env["ANVIL_STATE_DIR"]) if env.get("ANVIL_STATE_DIR") else user_state_dir(env)
    return state / "anvil.toml"


def default_store_url(state_dir: Path) -> str:
    """The store when ``store.url`` is not set: SQLite, in the state directory."""
    return f"sqlite:///{state_dir / STORE_FILE}"


def env_keys(env: Mapping[str, str], top: Collection[str] = TOP_KEYS,
             sections: Collection[str] = SECTIONS) -> Iterator[tuple[str | None, str, str]]:
    """``(section, key, value)`` of each ``ANVIL_*`` variable shaped like a setting: section None
    for a top-level key (``ANVIL_STATE_DIR``), else ``ANVIL_<SECTION>_<KEY>``. Whether the key is
    one of the section's fields is for appliance.config to say (it knows them, and passes its
    models' names)."""
    for name, value in env.items():
        if not name.startswith("ANVIL_"):
            continue
        key = name[len("ANVIL_"):].lower()
        if key in top:
            yield None, key, value
            continue
        for section in sections:
            if key.startswith(section + "_"):
                yield section, key[len(section) + 1:], value
                break


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, one section deep (the variables override single keys)."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def read_file(path: Path) -> dict[str, Any]:
    """The TOML file's tables (OSError, UnicodeDecodeError or TOMLDecodeError when unreadable)."""
    import tomllib  # here: most CLI calls have no file to parse

    return tomllib.loads(path.read_text())


@dataclass(frozen=True, slots=True)
class Location:
    """Where the appliance's state directory and store are."""

    state_dir: Path
    store_url: str


def quick_location(config: Path | None, env: Mapping[str, str]) -> Location | None:
    """What the full settings would say of the state directory and the store, when the file and
    the variables set nothing but ``state_dir`` and ``store.url`` as strings: such a
    configuration is valid whatever the rest holds (defaults). None for any other, or an
    unreadable or missing explicit file: the caller loads the full Settings, which validate
    it and name what is wrong."""
    try:
        path = config or default_config_path(env)
        if path.exists():
            data = read_file(path)
        elif config is not None:
            return None
        else:
            data = {}
        over: dict[str, Any] = {}
        for section, key, value in env_keys(env):
            if (section, key) not in _QUICK_KEYS:
                return None
            if section is None:
                over[key] = value
            else:
                over.setdefault(section, {})[key] = value
        data = merge(data, over)
        store = data.get("store", {})
        if set(data) - {"state_dir", "store"} or not isinstance(store, dict) or set(store) - {"url"}:
            return None
        url, state = store.get("url"), data.get("state_dir")
        if url is not None and not isinstance(url, str):
            return None
        if state is None:
            state_dir = default_state_dir(env)
        elif isinstance(state, str) and state and "\0" not in state:
            state_dir = Path(state)
        else:
            return None
        state_dir = state_dir.expanduser().absolute()
    except (OSError, ValueError, RuntimeError):   # unreadable, not TOML, no such ~user: the full load says so
        return None
    return Location(state_dir, url or default_store_url(state_dir))
