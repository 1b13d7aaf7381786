"""API worker processes (``[api] workers = N``): list pages served beside the engine, not on its loop.

By default ``anvil serve`` is one asyncio process (DESIGN §7): API, console, engine, monitor and
boot share one event loop and one interpreter lock. A client paging 10,000 blades then competes
with every job step for that lock, and sixteen of them at once slow a hundred deploys to a crawl.
With ``workers = N`` (N ≥ 1):

- the main process (the *leader* here: engine, monitor, boot) opens the API's listening socket,
  as it always does (a taken address fails there, with the usual error), but accepts nothing on it;
- N worker processes (``anvil serve --role api`` with a hidden ``--api-worker``) inherit that
  socket and accept on it, TLS included;
- a worker answers the read-only list routes in :data:`READ_ROUTES` itself, from the store;
- everything else (writes, console pages, hardware reads, job streams, /metrics) it forwards,
  unchanged, to the leader over a private unix socket, so that jobs, the in-process ``fake``
  driver, sessions and the metrics registry stay one; the leader takes the client's address and
  scheme from the forwarding headers on that socket only (mode 0600, in a 0700 directory);
- workers stop with the leader (SIGTERM by PID), exit when it is gone, and are restarted by it
  when one dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, UnixConnector, web
from multidict import CIMultiDict

log = logging.getLogger(__name__)

# Served by a worker from the store; every other request goes to the leader.
READ_ROUTES = frozenset({
    "/api/v1/blades", "/api/v1/profiles", "/api/v1/jobs",
    "/baremetal/v1/nodes", "/baremetal/v1/nodes/", "/baremetal/v1/nodes/detail", "/baremetal/v1/nodes/detail/",
    "/baremetal/v1/ports", "/baremetal/v1/ports/", "/baremetal/v1/ports/detail", "/baremetal/v1/ports/detail/",
})
FORWARDED_FOR = "X-Anvil-Forwarded-For"
FORWARDED_PROTO = "X-Anvil-Forwarded-Proto"
# Hop-by-hop headers (RFC 9110 §7.6.1) and the length, which the hop recomputes.
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                  "transfer-encoding", "upgrade", "content-length"})
_START_TIMEOUT = 60.0
_RESTART_PAUSE = 2.0


def is_read(request: web.Request) -> bool:
    """Whether a worker answers ``request`` itself."""
    if request.method not in ("GET", "HEAD"):
        return False
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in READ_ROUTES


def forwarding_middleware(session: Callable[[], ClientSession]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A worker's outermost middleware: :func:`is_read` requests go on, the rest to the leader."""

    @web.middleware
    async def forward(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if is_read(request):
            return await handler(request)
        return await _forward(request, session())

    return forward


async def _forward(request: web.Request, session: ClientSession) -> web.StreamResponse:
    body = await request.read()
    headers = CIMultiDict((k, v) for k, v in request.headers.items()
                          if k.lower() not in _HOP and k not in (FORWARDED_FOR, FORWARDED_PROTO))
    headers[FORWARDED_FOR] = request.remote or ""
    headers[FORWARDED_PROTO] = request.scheme
    try:
        upstream = await session.request(request.method, f"http://anvil{request.rel_url.raw_path_qs}",
                                         headers=headers, data=body or None, allow_redirects=False,
                                         skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"))
    except OSError as exc:
        log.error("api worker: the leader did not answer (%s)", exc)
        return web.json_response({"error": "the appliance is restarting; try again"}, status=503)
    try:
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for k, v in upstream.headers.items():
            if k.lower() not in _HOP:
                resp.headers.add(k, v)
        if upstream.content_length is not None:
            resp.content_length = upstream.content_length
        await resp.prepare(request)
        async for chunk in upstream.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp
    finally:
        upstream.release()


@web.middleware
async def trust_forwarded(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """The leader's outermost middleware: a request that came over the workers' unix socket carries
    the client's address and scheme in :data:`FORWARDED_FOR` and :data:`FORWARDED_PROTO`; from
    anywhere else those headers are ignored."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None and sock.family == socket.AF_UNIX:
        proto = request.headers.get(FORWARDED_PROTO, "http")
        request = request.clone(remote=request.headers.get(FORWARDED_FOR, ""),
                                scheme=proto if proto in ("http", "https") else "http")
    return await handler(request)


def private_socket_path(run_dir: Path) -> tuple[Path, Path | None]:
    """Where the leader listens for its workers, and a directory to remove afterwards (when the
    state directory's path is too long for a unix socket, a private one under the temp dir)."""
    path = run_dir / "api-workers.sock"
    if len(os.fsencode(path)) < 100:
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return path, None
    tmp = Path(tempfile.mkdtemp(prefix="anvil-api-"))
    return tmp / "s.sock", tmp


@dataclass
class Workers:
    """The leader's side: N children accepting on ``listener``, forwarding to ``socket_path``."""

    count: int
    listener: socket.socket
    socket_path: Path
    argv: list[str]                       # ``anvil [--config P] serve`` for a child
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    cleanup_dir: Path | None = None       # the socket's own directory, when it had to be made
    on_spawn: Callable[[int], None] = lambda pid: None   # each child's pid, once started (appliance.cpus)
    _ready_dir: Path | None = None

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        assert self._ready_dir is not None
        ready = self._ready_dir / f"worker-{index}"
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        fd = self.listener.fileno()
        cmd = [*self.argv, "--role", "api", "--api-worker", f"{fd}:{os.getpid()}:{self.socket_path}",
               "--ready-file", str(ready)]
        proc = subprocess.Popen(cmd, env=self.env, pass_fds=(fd,), stdin=subprocess.DEVNULL)
        self.on_spawn(proc.pid)
        return proc

    async def start(self) -> None:
        """Start every worker and wait until each accepts (or fail, naming the one that did not)."""
        self._ready_dir = Path(tempfile.mkdtemp(prefix="anvil-workers-"))
        self.procs = [self._spawn(i) for i in range(self.count)]
        deadline = time.monotonic() + _START_TIMEOUT
        for i, proc in enumerate(self.procs):
            assert proc is not None
            ready = self._ready_dir / f"worker-{i}"
            while not ready.exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"API worker {i} exited with status {proc.returncode} while starting "
                                       f"(its error is above)")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"API worker {i} did not start within {_START_TIMEOUT:g} s")
                await asyncio.sleep(0.05)

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart a worker that died, until ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_RESTART_PAUSE):
                    await stop.wait()
            if stop.is_set():
                return
            for i, proc in enumerate(self.procs):
                if proc is not None and proc.poll() is not None:
                    log.error("API worker %d (pid %d) exited with status %s; starting another", i, proc.pid,
                              proc.returncode)
                    self.procs[i] = self._spawn(i)

    async def stop(self) -> None:
        """SIGTERM every worker by PID; SIGKILL one still there after 10 s."""
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        for p in live:
            while p.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
        if self._ready_dir is not None:
            shutil.rmtree(self._ready_dir, ignore_errors=True)


async def watch_parent(stop: asyncio.Event, parent: int) -> None:
    """A worker ends with its leader ``parent``, even one killed without a chance to stop it (and
    one killed while this worker was still starting)."""
    while not stop.is_set():
        if os.getppid() != parent:
            log.error("api worker: the leader (pid %d) is gone; stopping", parent)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await stop.wait()


def leader_session(path: Path) -> ClientSession:
    """The worker's connections to the leader (no total timeout: job event streams last)."""
    return ClientSession(connector=UnixConnector(path=str(path), limit=64), auto_decompress=False,
                         timeout=ClientTimeout(total=None, sock_connect=10))


def child_argv(config_path: Path | None) -> list[str]:
    """``anvil [--config P] serve`` with this interpreter."""
    return [sys.executable, "-m", "appliance", *(["--config", str(config_path)] if config_path else []), "serve"]
