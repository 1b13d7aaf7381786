"""anvil-firstboot: run as root by anvil-setup.service before Anvil starts, at every boot.

1. The data disk: mount the ANVIL-DATA filesystem at /var/lib/anvil, or, on the first boot,
   format an empty disk once the seed or the console's admin confirms.
2. The first time only: the answers (seed file, else the console dialogue) become
   /etc/anvil/anvil.toml, the network and NTP settings, the admin user and the TLS certificate.
   /etc/anvil is the data disk's etc/ folder, so all of it outlives the live image's overlay.
3. Every boot: the saved network, NTP and host name settings are put in place under /run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.firstboot import disk, render
from appliance.firstboot.answers import AnswerError, Answers
from appliance.firstboot.dialogue import Dialogue, DialogueAborted, console_streams
from appliance.firstboot.seed import SEED_LABEL, Seed, parse, seed_path_from_cmdline

# The same name as appliance.services.users.INITIAL_ADMIN_PASSWORD (a test checks); not imported
# from there, which would load SQLAlchemy on a slow first boot.
INITIAL_ADMIN_PASSWORD = "admin.initial-password"


class SetupError(Exception):
    """First boot cannot go on; the message says what to do."""


@dataclass(frozen=True)
class Paths:
    state: Path = Path("/var/lib/anvil")
    etc: Path = Path("/etc/anvil")
    seed_mount: Path = Path("/run/anvil/seed")
    run_network: Path = Path("/run/systemd/network")
    run_timesyncd: Path = Path("/run/systemd/timesyncd.conf.d")
    cmdline: Path = Path("/proc/cmdline")
    console: str = "/dev/console"


def sh(*argv: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=300)
    if check and res.returncode != 0:
        raise SetupError(f"{' '.join(argv[:3])} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return res


def say(text: str) -> None:
    # stdout goes to the journal and the console (StandardOutput=journal+console).
    print(f"anvil-firstboot: {text}", flush=True)


def devices() -> list[disk.Device]:
    sh("udevadm", "settle", "--timeout=30", check=False)
    return disk.parse_lsblk(sh(*disk.LSBLK).stdout)


def read_seed(devs: list[disk.Device], paths: Paths) -> Seed | None:
    name = seed_path_from_cmdline(paths.cmdline.read_text() if paths.cmdline.exists() else "")
    volume = next((d for d in devs if d.label == SEED_LABEL), None)
    if name is None or volume is None:
        return None
    paths.seed_mount.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(paths.seed_mount):
        sh("mount", "-o", "ro", volume.path, str(paths.seed_mount))
    file = paths.seed_mount / name
    if not file.is_file():
        raise SetupError(f"seed volume {volume.path} ({SEED_LABEL}) has no {name}")
    try:
        seed = parse(file.read_text(), file.parent)
    except AnswerError as exc:
        raise SetupError(f"seed {volume.path}:{name}: {exc}") from None
    say(f"answers from the seed {volume.path}:{name}")
    return seed


def data_disk(devs: list[disk.Device], seed: Seed | None, paths: Paths) -> disk.Device:
    found = disk.labelled(devs)
    if found is not None:
        return found
    if seed is not None:
        try:
            chosen = disk.choose_blank(devs, seed.format_data_disk)
        except ValueError as exc:
            raise SetupError(str(exc)) from None
        if chosen is None:
            raise SetupError(f"no {disk.DATA_LABEL} disk, and the seed does not confirm formatting one "
                             "(data_disk: {format: true})")
    else:
        chosen = None
        inp, out = console_streams(paths.console)
        dialogue = Dialogue(inp, out, [])
        for candidate in disk.blank(devs):
            if dialogue.confirm_format(candidate.describe()):
                chosen = candidate
                break
        if chosen is None:
            raise SetupError(f"no {disk.DATA_LABEL} disk: attach an empty disk of at least 1 GiB and confirm "
                             "formatting it")
    say(f"formatting {chosen.describe()} as {disk.DATA_LABEL}")
    sh("mkfs.ext4", "-q", "-F", "-L", disk.DATA_LABEL, chosen.path)
    return chosen


def mount_state(dev: disk.Device, paths: Paths) -> None:
    paths.state.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(paths.state):
        sh("mount", "-o", "nodev,nosuid", f"LABEL={disk.DATA_LABEL}", str(paths.state))
        say(f"state on {dev.path} at {paths.state}")
    os.chmod(paths.state, 0o700)
    shutil.chown(paths.state, "anvil", "anvil")
    sh("systemd-tmpfiles", "--create", "anvil.conf", check=False)     # the state's parts, hidden by the mount
    saved = paths.state / "etc"
    saved.mkdir(exist_ok=True)
    os.chmod(saved, 0o750)
    shutil.chown(saved, "root", "anvil")
    paths.etc.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(paths.etc):
        sh("mount", "--bind", str(saved), str(paths.etc))


def import_tls(a: Answers, paths: Paths) -> None:
    if a.tls.generate:
        return      # anvil serve makes a self-signed pair in the state's tls/ on its first start
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    assert a.tls.cert is not None and a.tls.key is not None
    try:
        cert = x509.load_pem_x509_certificate(a.tls.cert.read_bytes())
        key = serialization.load_pem_private_key(a.tls.key.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise SetupError(f"tls: cannot read the certificate or key to import: {exc}") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if (cert.public_key().public_bytes(serialization.Encoding.PEM, pub)
            != key.public_key().public_bytes(serialization.Encoding.PEM, pub)):
        raise SetupError(f"tls: the key {a.tls.key} does not belong to the certificate {a.tls.cert}")
    tls = paths.state / "tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    for src, dst in ((a.tls.cert, render.IMPORTED_CERT), (a.tls.key, render.IMPORTED_KEY)):
        target = tls / dst.name
        target.write_bytes(src.read_bytes())
        os.chmod(target, 0o600)
        shutil.chown(target, "anvil", "anvil")
    shutil.chown(tls, "anvil", "anvil")


def configure(a: Answers, paths: Paths) -> None:
    """The answers, saved on the data disk. anvil.toml is written last: its presence means done."""
    import_tls(a, paths)
    net = paths.etc / "network"
    net.mkdir(exist_ok=True)
    for old in net.glob("*.network"):
        old.unlink()
    for name, text in render.network_units(a).items():
        (net / name).write_text(text)
    ntp = render.timesyncd_conf(a)
    if ntp:
        (paths.etc / "timesyncd.conf").write_text(ntp)
    (paths.etc / "hostname").write_text(a.hostname + "\n")
    # anvil serve adds the admin user with this password on its first start, then deletes the file.
    chosen = paths.state / INITIAL_ADMIN_PASSWORD
    fd = os.open(chosen, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(a.admin_password + "\n")
    shutil.chown(chosen, "anvil", "anvil")
    conf = paths.etc / "anvil.toml"
    partial = conf.with_name(conf.name + ".partial")
    partial.write_text(render.anvil_toml(a))
    os.chmod(partial, 0o640)
    shutil.chown(partial, "root", "anvil")
    partial.rename(conf)
    say("first boot set-up done: the console will answer on https://<management address>/")


def apply_saved(paths: Paths) -> None:
    """Every boot: the saved settings put where systemd reads them (the image's /etc is not kept)."""
    units = sorted((paths.etc / "network").glob("*.network"))
    if units:
        paths.run_network.mkdir(parents=True, exist_ok=True)
        for unit in units:     # read when systemd-networkd starts, right after this unit
            shutil.copy(unit, paths.run_network / unit.name)
    ntp = paths.etc / "timesyncd.conf"
    if ntp.exists():
        paths.run_timesyncd.mkdir(parents=True, exist_ok=True)
        shutil.copy(ntp, paths.run_timesyncd / "anvil.conf")
        sh("systemctl", "try-restart", "systemd-timesyncd.service", check=False)
    hostname = paths.etc / "hostname"
    if hostname.exists():
        sh("hostname", hostname.read_text().strip(), check=False)


def run(paths: Paths) -> None:
    devs = devices()
    seed = read_seed(devs, paths)
    mount_state(data_disk(devs, seed, paths), paths)
    if not (paths.etc / "anvil.toml").exists():
        if seed is not None:
            answers = seed.answers
        else:
            inp, out = console_streams(paths.console)
            answers = Dialogue(inp, out, interfaces()).run()
        configure(answers, paths)
    apply_saved(paths)


def interfaces() -> list[str]:
    return sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name != "lo" and (p / "device").exists())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anvil-firstboot", description=__doc__.splitlines()[0])
    parser.add_argument("--console", default="/dev/console", help="terminal of the dialogue (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        run(Paths(console=args.console))
    except (SetupError, DialogueAborted) as exc:
        print(f"anvil-firstboot: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
