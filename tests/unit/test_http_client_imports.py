"""An httpx request imports nothing once warm (the cost behind the sniffio dependency).

httpcore asks ``import sniffio`` several times per request and falls back to asyncio
when it is missing; a failed import is not cached, so without the package every
request searched ``sys.path`` again (~1 ms of client CPU per request measured).
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

import httpx

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class _Recorder(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.searched: list[str] = []

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        self.searched.append(fullname)
        return None


class _Server(asyncio.Protocol):
    """Answers every request (a GET without a body) with ``ok``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for _ in range(data.count(b"\r\n\r\n")):
            self.transport.write(RESPONSE)


def test_a_warm_httpx_request_searches_for_no_module() -> None:
    async def scenario() -> list[str]:
        server = await asyncio.get_running_loop().create_server(_Server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        recorder = _Recorder()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await client.get("/")  # warm: first-use imports happen here
            sys.meta_path.insert(0, recorder)
            try:
                for _ in range(3):
                    assert (await client.get("/")).text == "ok"
            finally:
                sys.meta_path.remove(recorder)
        server.close()
        await server.wait_closed()
        return recorder.searched

    assert asyncio.run(scenario()) == []
