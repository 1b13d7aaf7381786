"""`anvil serve --role boot` as a real process on loopback (TFTP on a free UDP port, DHCP off),
boot HTTP beside the API in role `all`, and the new [boot] settings."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import tftpy
import yaml

from appliance.boot.tftp import IPXE_SOURCE
from appliance.lab.procs import free_tcp_port, free_udp_port
from appliance.store import open_store
from tests.cli.conftest import Anvil
from tests.support.boot_role import BootRole, wait_for
from tests.unit.boot.conftest import IMAGE, Inventory, profile_doc

needs_ipxe = pytest.mark.skipif(not (IPXE_SOURCE / "undionly.kpxe").is_file(), reason="apt package ipxe is missing")


def _boot_role(tmp_path: Path, **extra: str) -> BootRole:
    state = tmp_path / "state"
    config = tmp_path / "anvil.toml"
    lines = [f'{k} = "{v}"' for k, v in {"listen": f"127.0.0.1:{free_tcp_port()}", **extra}.items()]
    config.write_text("[boot]\n" + "\n".join(lines) + "\n")
    return BootRole(state=state, config=config, env={"ANVIL_LOG_LEVEL": "INFO"})


@pytest.fixture
def role(tmp_path: Path) -> Iterator[BootRole]:
    r = _boot_role(tmp_path, tftp_listen=f"127.0.0.1:{free_udp_port()}")
    try:
        yield r.start()
    finally:
        r.stop()


def _bind_image_blade(state: Path) -> Inventory:
    store = open_store(f"sqlite:///{state / 'anvil.db'}")
    inv = Inventory(store, {}, {}, {})
    inv.add_blade("blade-1", ("52:54:00:00:01:01",))
    inv.add_profile(profile_doc("web-01", IMAGE, macs=("02:a0:00:00:00:01",)))
    inv.bind("web-01", "blade-1")
    return inv


@needs_ipxe
def test_boot_role_serves_scripts_images_and_tftp_then_stops_by_pid(role: BootRole, tmp_path: Path) -> None:
    status, body = role.get("/boot/ipxe?mac=52:54:00:12:34:56")
    assert status == 200 and f"chain {role.url}/boot/discover##params" in body.decode()
    inv = _bind_image_blade(role.state)
    try:
        status, body = role.get("/boot/ipxe?mac=52:54:00:00:01:01")
        text = body.decode()
        assert status == 200 and "anvil.profile=acme/web-01" in text and "anvil.mode=agent" in text
        assert re.search(r"anvil\.token=\S{40,}", text), text
    finally:
        inv.store.close()
    (role.state / "images" / "lab").mkdir(parents=True)
    (role.state / "images" / "lab" / "vmlinuz").write_bytes(b"k" * 100_000)
    status, body = role.get("/boot/images/lab/vmlinuz")
    assert status == 200 and body == b"k" * 100_000
    assert role.get("/api/v1/blades")[0] == 404      # the boot role serves /boot only

    tftp_port = int(tomllib.loads(role.config.read_text())["boot"]["tftp_listen"].rsplit(":", 1)[1])
    out = tmp_path / "undionly.kpxe"
    tftpy.TftpClient("127.0.0.1", tftp_port).download("undionly.kpxe", str(out), timeout=2, retries=2)
    assert out.read_bytes() == (IPXE_SOURCE / "undionly.kpxe").read_bytes()

    assert role.stop() == 0
    # No API token, no TLS key pair, no secrets key: the boot role makes none of them.
    assert not {"admin.token", "secrets.key", "tls"} & {p.name for p in role.state.iterdir()}


def test_boot_role_never_opens_the_secrets_key(tmp_path: Path) -> None:
    """The key file is a FIFO: opening it would block the process, so serving proves it is never opened."""
    r = _boot_role(tmp_path)
    r.state.mkdir()
    os.mkfifo(r.state / "secrets.key", 0o600)
    try:
        r.start(timeout=30)
        status, body = r.get("/boot/ipxe?mac=52:54:00:12:34:56")
        assert status == 200 and body.startswith(b"#!ipxe")
        assert r.stop() == 0
    finally:
        r.stop()
    assert (r.state / "secrets.key").is_fifo()


def test_the_boot_role_refuses_a_boot_address_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = _boot_role(tmp_path, listen=f"127.0.0.1:{taken.getsockname()[1]}")
        with pytest.raises(AssertionError, match="exited with 1") as err:
            r.start()
    assert "boot http: cannot listen on" in str(err.value)


def _serve_all(anvil_env: dict[str, str], env: dict[str, str], drop: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    ready = Path(anvil_env["ANVIL_STATE_DIR"]).parent / "all.ready"
    ready.unlink(missing_ok=True)
    full = {**os.environ, **anvil_env, "ANVIL_API_LISTEN": f"127.0.0.1:{free_tcp_port()}", **env}
    for key in drop:
        full.pop(key, None)
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--insecure-http", "--ready-file",
                             str(ready)], env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (ready.exists() and ready.read_text().strip()) or proc.poll() is not None, 30,
                 "anvil serve ready")
    except AssertionError:
        proc.kill()
        proc.wait(5)
        raise
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.terminate()
    out, _ = proc.communicate(timeout=20)
    return out.decode()


def test_role_all_serves_boot_http_beside_the_api(anvil_env: dict[str, str]) -> None:
    boot = f"127.0.0.1:{free_tcp_port()}"
    proc = _serve_all(anvil_env, {"ANVIL_BOOT_LISTEN": boot})
    try:
        with urllib.request.urlopen(f"http://{boot}/boot/ipxe?mac=52:54:00:12:34:56", timeout=10) as resp:
            assert resp.status == 200 and b"/boot/discover##params" in resp.read()
    finally:
        out = _stop(proc)
    assert f"boot HTTP on http://{boot}" in out


def test_role_all_without_its_default_boot_port_still_serves_the_api(anvil_env: dict[str, str]) -> None:
    """Only the *default* boot address may be skipped (another appliance or test holds 8080);
    a configured one is never skipped."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", 8080))
            holder.listen()
        except OSError:
            pass   # someone else holds it: just as good
        proc = _serve_all(anvil_env, {}, drop=["ANVIL_BOOT_LISTEN"])
        assert proc.poll() is None, _stop(proc)
        out = _stop(proc)
        assert "serving no boot HTTP" in out and "API and console on http://" in out
        proc = _serve_all(anvil_env, {"ANVIL_BOOT_LISTEN": "127.0.0.1:8080"})
        out = _stop(proc)
        assert proc.returncode == 1 and "boot http: cannot listen on 127.0.0.1:8080" in out


def test_config_show_has_the_boot_settings_and_checks_them(anvil: Anvil, anvil_env: dict[str, str]) -> None:
    cfg = Path(anvil_env["ANVIL_CONFIG"])
    cfg.write_text('[boot]\nlisten = "0.0.0.0:8080"\nadvertise_url = "http://10.77.0.1:8080/"\n'
                   'tftp_listen = "10.77.0.1:69"\ndhcp = "proxy"\ninterface = "br0"\nimage_agent_mode = "oneshot"\n')
    boot = yaml.safe_load(anvil("config", "show", env={"ANVIL_BOOT_LISTEN": "0.0.0.0:8080"}).out)["boot"]
    assert boot == {"listen": "0.0.0.0:8080", "advertise_url": "http://10.77.0.1:8080", "tftp_listen": "10.77.0.1:69",
                    "dhcp": "proxy", "interface": "br0", "dhcp_range": "", "template_dirs": [],
                    "image_agent_mode": "oneshot"}
    cfg.write_text('[boot]\ndhcp = "reservations"\ninterface = "br0"\n')
    res = anvil("config", "show", check=False)
    assert res.code == 1 and f"{cfg}:boot.dhcp_range: Value error, required when dhcp = 'reservations'" in res.err
    res = anvil("config", "show", check=False, env={"ANVIL_BOOT_DHCP": "proxy", "ANVIL_BOOT_INTERFACE": ""})
    assert res.code == 1 and "boot.interface" in res.err
    cfg.write_text('[boot]\ndhcp_range = "10.77.0.200,10.77.0.100"\n')
    assert "START is after END" in anvil("config", "show", check=False).err
