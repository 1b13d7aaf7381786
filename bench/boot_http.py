"""Boot serving: image throughput against nginx, and iPXE scripts per second.

    .venv/bin/python bench/boot_http.py            # 64 MiB image, 4 rounds of 4 s each server (ABBA); scripts 4 x 4 s
    .venv/bin/python bench/boot_http.py --smoke    # CI: 8 MiB image, 1 round of 1 s each (a few seconds)
    .venv/bin/python bench/boot_http.py --profile boot.prof   # cProfile the boot role process

Both servers run on loopback from a temporary state directory, are started here and
stopped by PID:

* Anvil: a real ``anvil serve --role boot`` (boot HTTP only; TFTP and DHCP off) on a
  SQLite store holding one blade bound to an image-boot profile;
* nginx (nginx-light) with its own config, prefix and PID file, 2 workers, sendfile on,
  serving the same images directory.

Client: wrk for both. Image: ``/boot/images/bench/disk.img`` (random bytes) with
``wrk -t2 -c4``; the rounds alternate Anvil and nginx (ABBA…), and the median of each is
reported (target: Anvil >= 80 % of nginx, DESIGN §5). Scripts: ``/boot/ipxe?mac=`` of the
bound blade, whose engine-opened boot attempt the script carries (its token derived from
the boot key: a read, no store write; DESIGN §5 target >= 5,000 req/s), and of an unknown
MAC (the discovery script), with ``wrk -t1 -c16``. Afterwards the store must hold exactly
the boot tokens it held before: serving scripts writes nothing (DESIGN §8).

The 2 cores are shared by client and servers (and by anything else running), so req/s
and MiB/s are noisy: rerun to compare. The servers' CPU time per request (user + system,
from /proc) moves much less with other load. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from appliance.boot.tokens import KEY_FILE, BootKey, open_attempt
from appliance.lab import procs
from appliance.store import open_store
from appliance.store.tables import BindingRow, BladeNicRow, BladeRow, BootTokenRow, ProfileRow

MIB = 1024 * 1024
TARGET_RATIO = 0.80
TARGET_SCRIPTS = 5000.0
KNOWN_MAC = "52:54:00:be:00:01"
UNKNOWN_MAC = "52:54:00:be:99:99"
IMAGE = "bench/disk.img"

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 2;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path {root}/tmp/body;
  proxy_temp_path {root}/tmp/proxy;
  fastcgi_temp_path {root}/tmp/fastcgi;
  uwsgi_temp_path {root}/tmp/uwsgi;
  scgi_temp_path {root}/tmp/scgi;
  types {{ application/octet-stream img; }}
  server {{
    listen 127.0.0.1:{port};
    location /boot/images/ {{ alias {images}/; }}
  }}
}}
"""


def free_port() -> int:
    return procs.free_tcp_port()


def fill(state: Path, image_mib: int) -> None:
    """A 64 MiB image, the kernel and initrd the profile names, one blade bound to the profile."""
    images = state / "images"
    (images / "bench").mkdir(parents=True)
    (images / "lab").mkdir()
    with open(images / IMAGE, "wb") as fh:
        for _ in range(image_mib):
            fh.write(os.urandom(MIB))
    (images / "lab" / "vmlinuz").write_bytes(b"kernel")
    (images / "lab" / "initrd.img").write_bytes(b"initrd")
    doc = {"apiVersion": "anvil/v1", "kind": "ServerProfile", "metadata": {"name": "web-01", "tenant": "bench"},
           "spec": {"identity": {"uuid": "4c4c4544-0042-3510-8052-b4c04f384d32",
                                 "nics": [{"name": "eth0", "mac": "02:b0:00:00:00:01", "pxe": True,
                                           "ipv4": "10.77.0.11/24", "vlans": {"native": 100}}]},
                    "boot": {"mode": "uefi", "source": {"type": "image", "kernel": "lab/vmlinuz",
                                                        "initrd": "lab/initrd.img", "cmdline": "console=ttyS0"}}}}
    store = open_store(f"sqlite:///{state / 'anvil.db'}")
    try:
        with store.write() as s:
            blade = BladeRow(name="bench-1", bmc_address="fake://bench-1", driver="fake", username="u",
                             password_enc="x", facts={})
            profile = ProfileRow(kind="ServerProfile", tenant="bench", name="web-01", document=doc, state="active")
            s.add_all([blade, profile])
            s.flush()
            s.add(BladeNicRow(blade_id=blade.id, position=0, name="nic0", mac=KNOWN_MAC))
            binding = BindingRow(profile_id=profile.id, blade_id=blade.id, generation=1, state="live")
            s.add(binding)
            s.flush()
            # What the engine's set-boot step does: open a boot attempt, with the key the boot role reads.
            open_attempt(s, binding, BootKey.load(state / KEY_FILE), job_id=None)
    finally:
        store.close()


def count_tokens(state: Path) -> int:
    store = open_store(f"sqlite:///{state / 'anvil.db'}", migrate=False)
    try:
        with store.read() as s:
            return int(s.scalar(select(func.count()).select_from(BootTokenRow)) or 0)
    finally:
        store.close()


def wait_http(proc: subprocess.Popen[bytes], port: int, what: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:] if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise SystemExit(f"{what} did not listen on {port} within {timeout:g} s")


def start_anvil(state: Path, port: int, profile: str | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ANVIL_STATE_DIR": str(state), "ANVIL_CONFIG": str(state / "anvil.toml"),
           "ANVIL_BOOT_LISTEN": f"127.0.0.1:{port}", "ANVIL_LOG_LEVEL": "WARNING"}
    for key in ("ANVIL_STORE_URL", "ANVIL_BOOT_TFTP_LISTEN", "ANVIL_BOOT_DHCP", "ANVIL_BOOT_ADVERTISE_URL"):
        env.pop(key, None)
    prof = ["-m", "cProfile", "-o", profile] if profile else []
    log = state / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, *prof, "-m", "appliance", "serve", "--role", "boot"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    wait_http(proc, port, "anvil serve --role boot", log)
    return proc


def start_nginx(root: Path, images: Path, port: int) -> subprocess.Popen[bytes]:
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, port=port, images=images))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    log = root / "error.log"
    # -e: the default error log (/var/log/nginx) is opened before the config is read.
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(root), "-e", str(log)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    wait_http(proc, port, "nginx", log)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID (nginx's workers exit with their master), SIGKILL after 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


_UNITS = {"B": 1, "KB": 1024, "MB": MIB, "GB": 1024 * MIB, "TB": 1024 * 1024 * MIB}


def _size(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)([KMGT]?B)", text)
    if not m:
        raise ValueError(f"not a wrk size: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its direct children (nginx's workers), in s."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command: state, ppid, … utime is field 14 of the whole line, stime 15.
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def wrk(url: str, *, threads: int, connections: int, seconds: float, server: int) -> dict[str, Any]:
    """One wrk run; requests, req/s and MiB/s (wrk's MB are MiB), how many answers were not 2xx/3xx,
    and the server's CPU time per request (less sensitive to other load on the machine than req/s)."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", url]
    cpu0 = cpu_seconds(server)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    cpu = cpu_seconds(server) - cpu0
    out = res.stdout
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {res.stderr or out}")
    total = re.search(r"(\d+) requests in ([\d.]+)(m?s), ([\d.]+[KMGT]?B) read", out)
    if not total:
        raise SystemExit(f"cannot read wrk's summary:\n{out}")
    secs = float(total.group(2)) / (1000 if total.group(3) == "ms" else 1)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    requests = int(total.group(1))
    return {"requests": requests, "seconds": round(secs, 2),
            "server_cpu_us_per_request": round(cpu / requests * 1e6, 1) if requests else None,
            "req_per_s": round(int(total.group(1)) / secs, 1),
            "mib_per_s": round(_size(total.group(4)) / MIB / secs, 1),
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0}


def median_row(case: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"case": case, "rounds": len(runs), "requests": sum(r["requests"] for r in runs),
            "req_per_s": statistics.median(r["req_per_s"] for r in runs),
            "mib_per_s": statistics.median(r["mib_per_s"] for r in runs),
            "non_2xx": sum(r["non_2xx"] for r in runs), "socket_errors": sum(r["socket_errors"] for r in runs),
            "server_cpu_us_per_request": statistics.median(r["server_cpu_us_per_request"] or 0 for r in runs),
            "each_mib_per_s": [r["mib_per_s"] for r in runs], "each_req_per_s": [r["req_per_s"] for r in runs]}


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    # nginx's workers drop root for nobody: they must be able to reach the images.
    tmp.chmod(0o711)
    state = tmp / "state"
    state.mkdir(mode=0o711)
    fill(state, args.image_mib)
    anvil_port, nginx_port = free_port(), free_port()
    anvil = start_anvil(state, anvil_port, args.profile)
    nginx = None
    try:
        # The state directory is private to Anvil's user (0700): nginx's workers (nobody) get the same
        # bytes through hard links in a folder of their own.
        shared = tmp / "nginx-images"
        for src in (state / "images").rglob("*"):
            dst = shared / src.relative_to(state / "images")
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True, mode=0o755)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                os.link(src, dst)
                dst.chmod(0o644)
        nginx = start_nginx(tmp / "nginx", shared, nginx_port)
        image_runs: dict[str, list[dict[str, Any]]] = {"anvil": [], "nginx": []}
        for i in range(args.rounds):
            servers = [("anvil", anvil_port, anvil.pid), ("nginx", nginx_port, nginx.pid)]
            # Alternate who goes first: the machine's other load drifts, and first place is not neutral.
            for who, port, pid in servers if i % 2 == 0 else servers[::-1]:
                image_runs[who].append(wrk(f"http://127.0.0.1:{port}/boot/images/{IMAGE}", threads=2,
                                           connections=4, seconds=args.seconds, server=pid))
        stop(nginx)
        nginx = None
        before = count_tokens(state)
        known = [wrk(f"http://127.0.0.1:{anvil_port}/boot/ipxe?mac={KNOWN_MAC}", threads=1,
                     connections=args.connections, seconds=args.seconds, server=anvil.pid) for _ in range(args.rounds)]
        tokens = count_tokens(state) - before
        unknown = [wrk(f"http://127.0.0.1:{anvil_port}/boot/ipxe?mac={UNKNOWN_MAC}", threads=1,
                       connections=args.connections, seconds=args.seconds, server=anvil.pid)
                   for _ in range(args.rounds)]
    finally:
        if nginx is not None:
            stop(nginx)
        stop(anvil)
    rows = [median_row(f"image {args.image_mib} MiB, Anvil boot HTTP", image_runs["anvil"]),
            median_row(f"image {args.image_mib} MiB, nginx", image_runs["nginx"]),
            median_row("iPXE script, bound blade (a read)", known),
            median_row("iPXE script, unknown MAC (discovery)", unknown)]
    ratio = rows[0]["mib_per_s"] / rows[1]["mib_per_s"] if rows[1]["mib_per_s"] else 0.0
    scripts_ok = rows[2]["req_per_s"] >= TARGET_SCRIPTS
    clean = all(r["non_2xx"] == 0 and r["socket_errors"] == 0 for r in rows)
    return {"bench": "boot_http", "smoke": args.smoke, "image_mib": args.image_mib, "rounds": args.rounds,
            "seconds_per_run": args.seconds, "connections_scripts": args.connections, "rows": rows,
            "ratio_vs_nginx": round(ratio, 3), "target_ratio": TARGET_RATIO, "ratio_ok": ratio >= TARGET_RATIO,
            "target_scripts_per_s": TARGET_SCRIPTS, "scripts_ok": scripts_ok,
            "tokens_written": tokens,
            "scripts_write_nothing": tokens == 0,
            "clean": clean,
            "cpus": os.cpu_count()}


def report(out: dict[str, Any]) -> list[str]:
    lines = [f"# boot serving on loopback, {out['cpus']} CPUs shared by wrk and the servers; median of "
             f"{out['rounds']} x {out['seconds_per_run']:g} s; targets: image >= {out['target_ratio']:.0%} of nginx, "
             f"scripts >= {out['target_scripts_per_s']:,.0f} req/s",
             f"{'case':44} {'requests':>9} {'req/s':>9} {'MiB/s':>9} {'srv CPU us/req':>14}  each round"]
    for r in out["rows"]:
        each = r["each_mib_per_s"] if r["case"].startswith("image") else r["each_req_per_s"]
        lines.append(f"{r['case']:44} {r['requests']:9d} {r['req_per_s']:9.1f} {r['mib_per_s']:9.1f} "
                     f"{r['server_cpu_us_per_request']:14.1f}  {each}")
    lines.append(f"Anvil / nginx image throughput: {out['ratio_vs_nginx']:.0%} "
                 f"({'ok' if out['ratio_ok'] else 'BELOW TARGET'}); bound-blade scripts: "
                 f"{'ok' if out['scripts_ok'] else 'BELOW TARGET'}; boot token rows written by "
                 f"{out['rows'][2]['requests']} script requests: {out['tokens_written']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CI: 8 MiB image, 1 round of 1 s per case")
    ap.add_argument("--image-mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4, help="runs per case (the image cases alternate servers)")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each wrk run")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections for the script cases")
    ap.add_argument("--profile", default=None,
                    help="cProfile the boot role process into this file (its event-loop thread only)")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON result here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.image_mib, args.rounds, args.seconds = 8, 1, 1.0
    for tool in ("wrk", "nginx"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            raise SystemExit(f"{tool} is missing (apt-get install wrk nginx-light)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="anvil-bench-boot-") as d:
        out = run(args, Path(d))
    out["wall_s"] = round(time.monotonic() - started, 1)
    for line in report(out):
        print(line)
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out))
    ok = out["clean"] and out["scripts_write_nothing"]
    return 0 if ok and (args.smoke or (out["ratio_ok"] and out["scripts_ok"])) else 1


if __name__ == "__main__":
    sys.exit(main())
