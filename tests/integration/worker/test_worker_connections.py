"""The worker's own kept-alive connections for its hot calls (lease, batch completion).

Against small asyncio servers that answer as told (to count connections, close early,
or never answer), and against the real gateway served by uvicorn.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from loops import config, errors
from loops.queue.tasks import TaskStatus
from loops.services.queue import QueueService, task_spec
from loops.worker.connections import ConnectionClosed, ConnectionPool
from loops.worker.http import HttpQueueClient
from served_gateway import served

#: appended to an answer: the server closes the connection after writing it
CLOSE_AFTER = b"<close>"
OK = b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: application/json\r\n\r\n{"ok":true}'


class Scripted(asyncio.Protocol):
    """Answers each request's head with ``answer(n)`` (n counts requests on all
    connections); ``None`` closes the connection without answering."""

    def __init__(
        self,
        answer: Callable[[int], bytes | None],
        seen: list[bytes],
        opened: list[asyncio.Transport],
    ) -> None:
        self.answer = answer
        self.seen = seen
        self.opened = opened

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.opened.append(transport)
        self.seen.append(b"<connect>")

    def data_received(self, data: bytes) -> None:
        self.seen.append(data)
        reply = self.answer(sum(1 for s in self.seen if s != b"<connect>"))
        if reply is None:
            self.transport.close()
        elif reply.endswith(CLOSE_AFTER):
            self.transport.write(reply.removesuffix(CLOSE_AFTER))
            self.transport.close()
        elif reply:
            self.transport.write(reply)


class Server:
    """A :class:`Scripted` server on a free loopback port."""

    def __init__(self, answer: Callable[[int], bytes | None]) -> None:
        self.answer = answer
        #: each request's bytes as received, ``<connect>`` for each new connection
        self.seen: list[bytes] = []
        self.opened: list[asyncio.Transport] = []

    async def __aenter__(self) -> Server:
        self.server = await asyncio.get_running_loop().create_server(
            lambda: Scripted(self.answer, self.seen, self.opened), "127.0.0.1", 0
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for transport in self.opened:
            transport.close()
        await asyncio.sleep(0)

    def pool(self, **headers: str) -> ConnectionPool:
        port = self.server.sockets[0].getsockname()[1]
        pool = ConnectionPool.for_url(f"http://127.0.0.1:{port}", headers=headers)
        assert pool is not None
        return pool


async def test_requests_reuse_one_kept_alive_connection_and_send_the_body() -> None:
    async with Server(lambda n: OK) as server:
        pool = server.pool(Authorization="Bearer t")
        for i in range(3):
            answer = await pool.post("/tasks/lease", b'{"i":%d}' % i, timeout_s=5)
            assert answer == (200, b'{"ok":true}')
        pool.close()
    assert server.seen.count(b"<connect>") == 1
    first = server.seen[1]
    assert first.startswith(b"POST /tasks/lease HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer t\r\n" in first and b"\r\nContent-Length: 7\r\n" in first
    assert first.endswith(b'\r\n\r\n{"i":0}')


async def test_an_answer_that_closes_the_connection_is_not_reused() -> None:
    closing = OK.replace(b"Content-Type", b"Connection: close\r\nContent-Type")
    async with Server(lambda n: closing) as server:
        pool = server.pool()
        for _ in range(2):
            assert (await pool.post("/x", b"{}", timeout_s=5))[0] == 200
        pool.close()
    assert server.seen.count(b"<connect>") == 2


async def test_a_chunked_answer_is_read_whole() -> None:
    chunked = (
        b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n'
    )
    async with Server(lambda n: chunked) as server:
        pool = server.pool()
        assert await pool.post("/x", b"{}", timeout_s=5) == (409, b'{"a":1}')
        assert await pool.post("/x", b"{}", timeout_s=5) == (409, b'{"a":1}')
        pool.close()
    assert server.seen.count(b"<connect>") == 1


async def test_no_answer_and_a_closed_connection_are_errors_and_never_reused() -> None:
    async with Server(lambda n: None if n == 1 else (b"" if n == 2 else OK)) as server:
        pool = server.pool()
        with pytest.raises(ConnectionClosed):
            await pool.post("/x", b"{}", timeout_s=5)  # closed without an answer
        with pytest.raises(TimeoutError):
            await pool.post("/x", b"{}", timeout_s=0.2)  # never answered
        assert (await pool.post("/x", b"{}", timeout_s=5))[0] == 200
        pool.close()
    assert server.seen.count(b"<connect>") == 3  # each failure cost its connection


async def test_a_kept_connection_the_server_closed_while_idle_is_not_used() -> None:
    async with Server(lambda n: OK + CLOSE_AFTER) as server:  # keep-alive, then closed
        pool = server.pool()
        assert (await pool.post("/x", b"{}", timeout_s=5))[0] == 200
        await asyncio.sleep(0.05)  # the close arrives while the connection is idle
        assert (await pool.post("/x", b"{}", timeout_s=5))[0] == 200
        pool.close()
    assert server.seen.count(b"<connect>") == 2


def test_plain_http_only_and_never_past_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert ConnectionPool.for_url("http://127.0.0.1:7070", headers={}) is not None
    assert ConnectionPool.for_url("https://gw.example:7070", headers={}) is None
    assert ConnectionPool.for_url("http://gw.example/prefix", headers={}) is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert ConnectionPool.for_url("http://gw.example:7070", headers={}) is None
    monkeypatch.setenv("NO_PROXY", "gw.example")
    assert ConnectionPool.for_url("http://gw.example:7070", headers={}) is not None


TASK = (
    b'{"id":7,"type":"task","title":"","prompt":"p","status":"queued","priority":3,'
    b'"created_at":"2026-11-28T12:00:00Z"}'
)
CREATED = b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(TASK), TASK)


async def test_a_create_closed_unanswered_is_sent_again_only_with_an_idempotency_key() -> None:
    async with Server(lambda n: None if n in (1, 2) else CREATED) as server:
        port = server.server.sockets[0].getsockname()[1]
        client = HttpQueueClient(f"http://127.0.0.1:{port}")
        with pytest.raises(errors.GatewayUnavailable):
            await client.create_task({"prompt": "p"})  # may have been made: not repeated
        assert server.seen.count(b"<connect>") == 1
        task = await client.create_task({"prompt": "p", "idempotency_key": "k"})
        assert task.id == 7 and server.seen.count(b"<connect>") == 3  # request 2 was dropped
        await client.aclose()


async def test_an_unreachable_gateway_is_one_clear_error_for_a_lease() -> None:
    client = HttpQueueClient("http://127.0.0.1:9")
    with pytest.raises(errors.GatewayUnavailable, match="cannot reach the gateway"):
        await client.lease(worker="w", ttl_ms=1_000, wait_ms=0)
    await client.aclose()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[tuple[QueueService, HttpQueueClient]]:
    from loops.gateway.app import create_app

    settings = config.load_settings(env={"QUEUE_DB_PATH": str(tmp_path / "q.sqlite")}, cwd=tmp_path)
    service = QueueService.open(settings)
    app = create_app(service, settings)
    async with served(app) as url:
        client = HttpQueueClient(url)
        yield service, client
        await client.aclose()
    service.close()


async def test_a_cancelled_long_poll_leaves_a_task_created_after_it_queued(live) -> None:
    service, client = live
    waiting = asyncio.ensure_future(client.lease(worker="gone", ttl_ms=60_000, wait_ms=10_000))
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.2)  # the gateway sees the connection close
    created = service.create_task(task_spec({"prompt": "p"})).task
    (leased,) = await client.lease(worker="w", ttl_ms=60_000, wait_ms=2_000)
    assert leased.task.id == created.id
    task = service.get_task(created.id)
    assert task.status is TaskStatus.LEASED and task.lease_owner == "w"
