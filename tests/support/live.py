"""An aiohttp app served from its own event loop in a thread, for sync clients (Playwright, schemathesis)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aiohttp import web


@contextmanager
def serve_in_thread(make_app: Callable[[], web.Application]) -> Iterator[str]:
    """Start the app on 127.0.0.1 and a free port; yield its base URL; stop it on exit."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, object] = {}

    async def start() -> None:
        runner = web.AppRunner(make_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["runner"], box["port"] = runner, runner.addresses[0][1]

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # surface start-up errors to the test
            box["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True, name="live-server")
    thread.start()
    if not started.wait(20) or "error" in box:
        raise RuntimeError(f"the live server did not start: {box.get('error')}")
    try:
        yield f"http://127.0.0.1:{box['port']}"
    finally:
        runner = box["runner"]
        assert isinstance(runner, web.AppRunner)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(20)
        loop.close()
