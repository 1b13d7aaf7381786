"""A loopback TCP proxy a test can cut: a node's database connection passes through it, and
``cut()`` is the network between that node and the database going away (every connection reset,
new ones refused) while the node itself keeps running. ``heal()`` restores it on the same port.

One thread serves every connection with a selector; ``close()`` stops it (bounded).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time

_CHUNK = 65536


class TcpProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.cuts = 0
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._peer: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._want_cut = threading.Event()
        self._want_heal = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._listen()
        self._thread = threading.Thread(target=self._serve, name=f"tcpproxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _listen(self) -> None:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        ls.setblocking(False)
        self.port = ls.getsockname()[1]
        self._listener = ls
        self._sel.register(ls, selectors.EVENT_READ)

    def cut(self, timeout: float = 5.0) -> None:
        """Reset every connection and refuse new ones, until ``heal()``; returns once done."""
        self._want_cut.set()
        deadline = time.monotonic() + timeout
        while self._want_cut.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._want_cut.is_set():
            raise TimeoutError("the proxy did not cut its connections")

    def heal(self, timeout: float = 5.0) -> None:
        self._want_heal.set()
        deadline = time.monotonic() + timeout
        while self._want_heal.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._want_heal.is_set():
            raise TimeoutError("the proxy did not listen again")

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._drop_all()
        self._sel.close()

    # -- the serving thread ----------------------------------------------------------
    def _serve(self) -> None:
        while not self._stopping.is_set():
            if self._want_cut.is_set():
                self._drop_all()
                self.cuts += 1
                self._want_cut.clear()
            if self._want_heal.is_set():
                if self._listener is None:
                    self._listen()
                self._want_heal.clear()
            for key, _events in self._sel.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                else:
                    self._pump(sock)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _addr = self._listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        for s in (client, upstream):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sel.register(s, selectors.EVENT_READ)
        self._peer[client] = upstream
        self._peer[upstream] = client

    def _pump(self, sock: socket.socket) -> None:
        other = self._peer.get(sock)
        if other is None:
            return
        try:
            data = sock.recv(_CHUNK)
            if data:
                other.setblocking(True)   # small messages: a blocking send keeps order simply
                other.settimeout(5)
                other.sendall(data)
                other.setblocking(False)
                return
        except OSError:
            pass
        self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        other = self._peer.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self._peer.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(s)
            _reset(s)

    def _drop_all(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(self._listener)
            self._listener.close()
            self._listener = None
        for s in list(self._peer):
            self._drop(s)


def _reset(s: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a broken network path shows to both ends."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        s.close()
