"""Settings: one TOML file, overridden by ``ANVIL_*`` environment variables.

Built once in ``main()`` and passed down; nothing reads configuration globally.
Where the file lives:

* ``--config PATH`` or ``ANVIL_CONFIG``, when given;
* ``/etc/anvil/anvil.toml`` for the system service (root under systemd, or ``ANVIL_SYSTEM=1``),
  with the state directory ``/var/lib/anvil``;
* otherwise ``anvil.toml`` inside the per-user state directory
  (``$XDG_STATE_HOME/anvil``, default ``~/.local/state/anvil``).

A missing file means "all defaults". Environment variables name a key as
``ANVIL_<SECTION>_<KEY>`` (``ANVIL_STORE_URL``, ``ANVIL_API_LISTEN``) or
``ANVIL_<KEY>`` for top-level keys (``ANVIL_STATE_DIR``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic import ValidationError as PydanticValidationError

from appliance.configsource import (
    SYSTEM_CONFIG,
    SYSTEM_STATE_DIR,
    default_config_path,
    default_state_dir,
    default_store_url,
    env_keys,
    is_system,
    merge,
    read_file,
    user_state_dir,
)
from appliance.errors import ConfigError

# Where files and variables come from lives in appliance.configsource (no pydantic: the CLI's
# quick start-up reads it too); re-exported here for the callers that know them from this module.
__all__ = ["SYSTEM_CONFIG", "SYSTEM_STATE_DIR", "Settings", "default_config_path", "is_system", "load_settings",
           "mask_url", "user_state_dir"]


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSettings(_Section):
    url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite anvil.db in the state directory")


class ApiSettings(_Section):
    listen: str = Field("127.0.0.1:8443", description="API and console address (HOST:PORT)")
    tls: bool = Field(True, description="HTTPS (self-signed on first start unless cert/key are given)")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    workers: int = Field(0, ge=0, le=32, description="API worker processes answering list pages beside the "
                                                     "engine (appliance.api.workers); 0: one process")

    _check_listen = field_validator("listen")(classmethod(lambda cls, v: _listen(v)))


class BootSettings(_Section):
    """Boot services: HTTP always; TFTP and DHCP only when configured (they need the provisioning
    interface, and ports 69 and 67)."""

    listen: str = Field("127.0.0.1:8080", description="boot HTTP address on the provisioning network (HOST:PORT)")
    advertise_url: str = Field("", description="base URL blades reach boot HTTP at (http://HOST:PORT); "
                                               "default: from listen, or the request's own address for 0.0.0.0")
    tftp_listen: str = Field("", description="TFTP address for the iPXE binaries (HOST:PORT); empty: no TFTP")
    dhcp: Literal["off", "reservations", "proxy"] = Field(
        "off", description="managed dnsmasq: off; reservations (a pool plus each live profile's addresses); "
                           "proxy (another DHCP server hands out addresses, dnsmasq answers PXE only)")
    interface: str = Field("", description="provisioning interface dnsmasq serves (required unless dhcp = off)",
                           validate_default=True)
    dhcp_range: str = Field("", description="START,END of the DHCP pool on the interface's subnet "
                                            "(required for dhcp = reservations)", validate_default=True)
    template_dirs: list[Path] = Field(
        default_factory=list, description="folders searched for iPXE templates before the built-in ones "
                                          "(absolute; a site's boot.*.ipxe.j2, or profiles/TENANT/NAME.ipxe.j2 "
                                          "for one profile); from the environment: colon-separated")
    image_agent_mode: Literal["agent", "oneshot"] = Field(
        "agent", description="anvil.mode= for image boots: agent (callback, then heartbeats) or oneshot "
                             "(callback, then power off; one-shot tests)")

    _check_listen = field_validator("listen")(classmethod(lambda cls, v: _listen(v)))

    @field_validator("template_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, v: object) -> object:
        return [p for p in v.split(":") if p] if isinstance(v, str) else v

    @field_validator("template_dirs")
    @classmethod
    def _check_dirs(cls, v: list[Path]) -> list[Path]:
        relative = [str(p) for p in v if not p.is_absolute()]
        if relative:
            raise ValueError(f"template folders must be absolute paths, not {', '.join(relative)}")
        return v

    @field_validator("tftp_listen")
    @classmethod
    def _check_tftp(cls, v: str) -> str:
        return _listen(v) if v else v

    @field_validator("advertise_url")
    @classmethod
    def _check_advertise(cls, v: str) -> str:
        if not v:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{v!r} is not a base URL like http://10.77.0.1:8080")
        return v.rstrip("/")

    @field_validator("interface")
    @classmethod
    def _check_interface(cls, v: str, info: ValidationInfo) -> str:
        if v and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,15}", v):
            raise ValueError(f"{v!r} is not an interface name")
        if not v and info.data.get("dhcp", "off") != "off":
            raise ValueError(f"required when dhcp = {info.data['dhcp']!r}")
        return v

    @field_validator("dhcp_range")
    @classmethod
    def _check_range(cls, v: str, info: ValidationInfo) -> str:
        if not v:
            if info.data.get("dhcp") == "reservations":
                raise ValueError("required when dhcp = 'reservations' (START,END)")
            return v
        try:
            start, end = (ipaddress.IPv4Address(a.strip()) for a in v.split(","))
        except ValueError:
            raise ValueError(f"{v!r} is not START,END (two IPv4 addresses)") from None
        if start > end:
            raise ValueError(f"{v!r}: START is after END")
        return f"{start},{end}"


class NetworkSettings(_Section):
    parking_vlan: int = Field(4094, ge=1, le=4094, description="VLAN that released ports are moved to")


class StorageSettings(_Section):
    driver: str = Field("", pattern=r"^(|tgt)$",
                        description="iSCSI target driver for profiles' boot LUNs: '' (none) or 'tgt'")
    tgt_control_port: int | None = Field(None, ge=0, le=32767, description="tgtd's management port (tgtd -C)")
    tgt_netns: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,64}$",
                           description="network namespace tgtd runs in ('' = this one)")
    default_size_mib: int = Field(64, ge=1, le=16 * 1024 * 1024,
                                  description="size of a new boot LUN whose profile gives no sizeMiB")


class MonitorSection(_Section):
    interval: float = Field(30.0, gt=0, le=3600, description="seconds between health polls of every blade")
    concurrency: int = Field(64, ge=1, le=1024, description="blades probed at once")
    probe_timeout: float = Field(5.0, gt=0, le=120, description="seconds a BMC has to answer one probe")
    heartbeat_timeout: float = Field(6.5, gt=0, le=86400,
                                     description="seconds without a booted profile's heartbeat that count as a miss "
                                                 "(the lab agent beats every 2 s: three lost beats and a margin); "
                                                 "checked every second, apart from the polls")
    tcp_probe_port: int = Field(0, ge=0, le=65535,
                                description="for profiles whose OS sends no heartbeat: TCP port to probe (0: off)")
    fail_after: int = Field(3, ge=1, le=1000, description="consecutive bad polls that declare a blade failed")
    recover_after: int = Field(2, ge=1, le=1000, description="consecutive good polls that declare it healthy again")
    events: bool = Field(True, description="subscribe to BMC event services (Redfish) and confirm each event "
                                           "with an immediate poll of the blades it names")
    event_destination: str = Field("", max_length=1024, pattern=r"^(https?://[^/\s]+)?$",
                                   description="base URL at which BMCs reach this appliance's API for events "
                                               "(default: api.listen, unless that is a wildcard address)")
    event_confirm_interval: float = Field(0.2, gt=0, le=60,
                                          description="seconds between the confirming polls an event triggers")


class EngineSection(_Section):
    boot_timeout: float = Field(600.0, gt=0, le=86400,
                                description="seconds from power-on to the boot signal before a stamp fails")


class MetricsSection(_Section):
    """Prometheus text on listens of their own, without authentication (like node_exporter): loopback
    by default; bind them to a management address to expose them. Empty: none."""

    listen: str = Field("127.0.0.1:9464", description="/metrics of the API, engine and monitor roles "
                                                     "(HOST:PORT; empty: none)")
    boot_listen: str = Field("127.0.0.1:9465", description="/metrics of a `serve --role boot` process "
                                                          "(HOST:PORT; empty: none)")

    @field_validator("listen", "boot_listen")
    @classmethod
    def _check(cls, v: str) -> str:
        return _listen(v) if v else v


class Settings(_Section):
    """The effective configuration. Paths are absolute after :func:`load_settings`."""

    state_dir: Path
    secrets_key: Path | None = Field(None, description="Fernet key file; default STATE_DIR/secrets.key")
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    cpus: Literal["one", "any"] = Field("one", description="one: every thread of an `anvil serve` process on one "
                                                          "CPU, moved when another process crowds it "
                                                          "(appliance.cpus); any: wherever the kernel puts them")
    store: StoreSettings = StoreSettings()
    api: ApiSettings = ApiSettings()
    boot: BootSettings = BootSettings()
    network: NetworkSettings = NetworkSettings()
    storage: StorageSettings = StorageSettings()
    engine: EngineSection = EngineSection()
    monitor: MonitorSection = MonitorSection()
    metrics: MetricsSection = MetricsSection()
    config_file: Path | None = Field(None, description="the file these settings were read from")

    @property
    def store_url(self) -> str:
        return self.store.url or default_store_url(self.state_dir)

    @property
    def secrets_key_path(self) -> Path:
        return self.secrets_key or self.state_dir / "secrets.key"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def images_dir(self) -> Path:
        return self.state_dir / "images"

    @property
    def lab_dir(self) -> Path:
        return self.state_dir / "lab"

    @property
    def luns_dir(self) -> Path:
        """Backing files of boot LUNs: outside images/, which the boot service serves to anyone."""
        return self.state_dir / "luns"

    def masked(self) -> dict[str, Any]:
        """The settings as plain data with secrets (passwords in URLs) masked."""
        data = self.model_dump(mode="json")
        data["store"]["url"] = mask_url(self.store_url)
        return data


def mask_url(url: str) -> str:
    """Replace the password of a URL with ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


_SECTIONS: dict[str, type[_Section]] = {
    "store": StoreSettings, "api": ApiSettings, "boot": BootSettings, "network": NetworkSettings,
    "storage": StorageSettings, "engine": EngineSection, "monitor": MonitorSection,
    "metrics": MetricsSection,
}


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    top = {n for n in Settings.model_fields if n not in _SECTIONS and n != "config_file"}
    for section, key, value in env_keys(env, top, _SECTIONS):
        if section is None:
            out[key] = value
        elif key in _SECTIONS[section].model_fields:
            out.setdefault(section, {})[key] = value
    return out


def load_settings(config: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if it exists), apply ``ANVIL_*`` overrides and validate.

    Raises ConfigError naming ``file:key: reason`` for the first bad value.
    """
    env = dict(os.environ if env is None else env)
    path = config or default_config_path(env)
    file_data: dict[str, Any] = {}
    if path.exists():
        try:
            file_data = read_file(path)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    elif config is not None:
        raise ConfigError(f"{path}: no such configuration file")
    data = merge(file_data, _env_overrides(env))
    if "state_dir" not in data:
        data["state_dir"] = str(default_state_dir(env))
    data["config_file"] = str(path) if path.exists() else None
    try:
        settings = Settings.model_validate(data)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}:{key}: {err['msg']}") from exc
    state_dir = settings.state_dir.expanduser().absolute()
    return settings.model_copy(update={"state_dir": state_dir})
