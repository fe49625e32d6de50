"""The gateway app served by uvicorn on a real loopback socket, in the test's event loop.

Importable as ``served_gateway`` (pytest puts ``tests/`` on the path for its conftest).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """``app`` (from ``create_app``) served on a free loopback port; yields its URL."""
    import uvicorn

    from loops.gateway.server import bind, url_of

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        app.state.gateway.begin_shutdown()  # long polls answer now
        await serving
        sock.close()


@contextlib.contextmanager
def served_in_thread(app: Any, **options: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port from a thread of its own, for a
    blocking client in the test's thread; ``options`` go to ``uvicorn.Config`` (e.g.
    ``timeout_keep_alive``). Yields the URL."""
    import uvicorn

    from loops.gateway.server import bind, url_of

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **options))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(server.serve(sockets=[sock]),), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        loop.call_soon_threadsafe(app.state.gateway.begin_shutdown)  # long polls answer now
        thread.join(30)
        loop.close()
        sock.close()
