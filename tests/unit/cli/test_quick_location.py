"""The CLI's quick reading of where the state and the store are (appliance.configsource, no
pydantic) says what the full Settings say, for every configuration it answers; any other it
leaves to them."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import config
from appliance.configsource import SECTIONS, TOP_KEYS, Location, quick_location
from appliance.errors import ConfigError


def test_the_variable_names_are_the_settings_fields() -> None:
    assert set(SECTIONS) == set(config._SECTIONS)
    assert set(TOP_KEYS) == set(config.Settings.model_fields) - set(SECTIONS) - {"config_file"}


# (file text or None for no file, environment beyond HOME and ANVIL_CONFIG)
ANSWERED: list[tuple[str | None, dict[str, str]]] = [
    (None, {}),                                                  # all defaults: ~/.local/state/anvil
    (None, {"XDG_STATE_HOME": "/srv/xdg"}),
    (None, {"ANVIL_STATE_DIR": "/srv/anvil"}),
    (None, {"ANVIL_STATE_DIR": "relative/state"}),
    (None, {"ANVIL_STORE_URL": "postgresql+psycopg://anvil:pw@db.example/anvil"}),
    (None, {"ANVIL_STORE_URL": ""}),                             # empty: the default again
    (None, {"ANVIL_SYSTEM": "1"}),                               # the service's /var/lib/anvil
    ('state_dir = "/srv/from-file"\n', {}),
    ('state_dir = "~/anvil-state"\n', {}),
    ('state_dir = "/srv/from-file"\n', {"ANVIL_STATE_DIR": "/srv/from-env"}),
    ('[store]\nurl = "sqlite:////srv/db/anvil.db"\n', {}),
    ('[store]\nurl = "sqlite:////srv/db/anvil.db"\n', {"ANVIL_STORE_URL": "sqlite:////srv/other.db"}),
    ('state_dir = "/srv/s"\n[store]\n', {}),
    ("", {"ANVIL_CI": "1", "ANVIL_URL": "", "ANVIL_TOKEN": "t", "ANVIL_BMC_PASSWORD": "p"}),  # not settings
]


@pytest.mark.parametrize(("text", "env"), ANSWERED)
def test_a_configuration_naming_only_the_state_and_store_is_read_as_the_settings_read_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | None, env: dict[str, str]) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "anvil.toml"
    if text is not None:
        cfg.write_text(text)
    full_env = {"HOME": str(tmp_path / "home"), "ANVIL_CONFIG": str(cfg), **env}
    quick = quick_location(None, full_env)
    settings = config.load_settings(None, full_env)
    assert quick == Location(settings.state_dir, settings.store_url)
    assert quick_location(cfg if text is not None else None, full_env) == quick   # --config the same file


LEFT: list[tuple[str | None, dict[str, str]]] = [
    ('[api]\nlisten = "0.0.0.0:9443"\n', {}),                  # valid, but more than it reads
    (None, {"ANVIL_API_LISTEN": "0.0.0.0:9443"}),
    (None, {"ANVIL_LOG_LEVEL": "DEBUG"}),
    (None, {"ANVIL_CPUS": "any"}),
    ('log_level = "LOUD"\n', {}),                                # invalid: the settings say so
    ('[network]\nparking_vlan = 5000\n', {}),
    ('state_dir = 5\n', {}),
    ('state_dir = ""\n', {}),
    ('store = "sqlite:///x.db"\n', {}),
    ('[store]\nurl = 5\n', {}),
    ('[store]\nbogus = "x"\n', {}),
    ('bogus = 1\n', {}),
    ('state_dir = "/srv/a"\nnot toml at all\n', {}),
    ('state_dir = "~nosuchuser-anvil/x"\n', {}),
]


@pytest.mark.parametrize(("text", "env"), LEFT)
def test_any_other_configuration_is_left_to_the_full_settings(tmp_path: Path, text: str | None,
                                                              env: dict[str, str]) -> None:
    cfg = tmp_path / "anvil.toml"
    if text is not None:
        cfg.write_text(text)
    assert quick_location(None, {"HOME": str(tmp_path), "ANVIL_CONFIG": str(cfg), **env}) is None


def test_a_missing_explicit_file_is_left_to_the_full_settings(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert quick_location(missing, {"HOME": str(tmp_path)}) is None
    with pytest.raises(ConfigError, match="no such configuration file"):
        config.load_settings(missing, {"HOME": str(tmp_path)})
