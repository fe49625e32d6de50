"""The gateway app served by uvicorn on a real loopback socket, in the test's event loop.

Importable as ``served_gateway`` (pytest puts ``tests/`` on the path for its conftest).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
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
