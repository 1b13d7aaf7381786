"""A tiny boot HTTP server for the VM tests, standing in for the appliance (stdlib only).

Run inside the lab namespace: ``python labhttp.py --bind 10.77.0.1 --port 8080 --root DIR
--script FILE --record FILE [--token T] [--secret S] [--interval N]``.

- ``GET /boot.ipxe?mac=M``: FILE's text with ``@MAC@`` replaced (re-read per request).
- ``GET /NAME``: the file NAME from DIR (the kernel and the initrd).
- ``POST /callback``: form fields recorded; 403 unless ``token`` matches ``--token``; the
  answer gives the heartbeat secret, URL and interval as the appliance does.
- ``POST /heartbeat``: recorded; 204 when ``secret`` matches, else 403.

Every request is appended to the record file as one JSON line ``{"t", "kind", "path",
"peer", "fields", "status"}``; the file is created (empty) once the port is bound.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


class Config:
    def __init__(self, args: argparse.Namespace) -> None:
        self.root: Path = args.root
        self.script: Path = args.script
        self.record: Path = args.record
        self.token: str | None = args.token
        self.secret: str = args.secret
        self.interval: int = args.interval
        self.base = f"http://{args.bind}:{args.port}"
        self.lock = threading.Lock()

    def log(self, **entry: object) -> None:
        with self.lock, open(self.record, "a") as fh:
            fh.write(json.dumps({"t": time.time(), **entry}) + "\n")


def make_handler(cfg: Config) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: object) -> None:
            return None   # the record file is the log

        def _send(self, status: int, body: bytes = b"", ctype: str = "text/plain") -> None:
            self.send_response(status)
            if status != 204:
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body and status != 204:
                self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            name = url.path.lstrip("/")
            status = 404
            if name == "boot.ipxe":
                mac = parse_qs(url.query).get("mac", [""])[-1]
                status = 200
                self._send(200, cfg.script.read_text().replace("@MAC@", mac).encode())
            else:
                path = cfg.root / name
                if name and "/" not in name and path.is_file():
                    status = 200
                    self._send(200, path.read_bytes(), "application/octet-stream")
                else:
                    self._send(404, b"not found\n")
            cfg.log(kind="get", path=self.path, peer=self.client_address[0], fields={}, status=status)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace")
            fields = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
            path = urlsplit(self.path).path
            if path == "/callback":
                ok = cfg.token is None or fields.get("token") == cfg.token
                status = 200 if ok else 403
                answer = (f"heartbeat_secret={cfg.secret}\nheartbeat_url={cfg.base}/heartbeat\n"
                          f"heartbeat_interval={cfg.interval}\n") if ok else "invalid or used boot token\n"
                self._send(status, answer.encode())
                kind = "callback"
            elif path == "/heartbeat":
                status = 204 if fields.get("secret") == cfg.secret else 403
                self._send(status, b"" if status == 204 else b"invalid heartbeat secret\n")
                kind = "heartbeat"
            else:
                status, kind = 404, "post"
                self._send(404, b"not found\n")
            cfg.log(kind=kind, path=self.path, peer=self.client_address[0], fields=fields, status=status)

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--script", type=Path, required=True)
    ap.add_argument("--record", type=Path, required=True)
    ap.add_argument("--token")
    ap.add_argument("--secret", default="hb-secret")
    ap.add_argument("--interval", type=int, default=1)
    args = ap.parse_args()
    cfg = Config(args)
    server = ThreadingHTTPServer((args.bind, args.port), make_handler(cfg))
    server.daemon_threads = True
    args.record.touch()
    print(f"labhttp: serving {args.root} on {cfg.base}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
