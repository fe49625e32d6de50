"""Kept-alive HTTP/1.1 connections to the gateway for the worker's hot calls.

The long-polling lease and the batch completion are most of what a worker says to the
gateway, and the lease's answer is on the pickup path (task created -> handler started).
httpx spends about 1 ms of CPU per request on a slow core (its models, httpcore's
state machine, anyio's cancel scopes around every read); these calls need none of that:
a JSON body out, a status and a body back, over a loopback or LAN connection. So they
go over plain asyncio connections, the answer parsed by httptools (the C parser
uvicorn uses), about 0.2 ms per request. aiohttp's client was measured too, against a
uvicorn server on loopback (client CPU per small JSON POST, 2,000 requests, 3 runs):
httpx 1,350 µs, aiohttp 250-370 µs, these connections 86-100 µs; a second client stack
of that weight for two routes did not pay its way.

Only ``http://`` gateways that no proxy setting (``HTTP_PROXY``, ``NO_PROXY``) routes
elsewhere are reached this way (:meth:`ConnectionPool.for_url` says ``None`` otherwise);
the worker's other calls, and these ones in every other case, go through httpx.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httptools

from loops.client import transports

#: seconds an idle connection is kept; below uvicorn's keep-alive timeout (5 s), so a
#: request rarely meets a connection the server is closing
KEEPALIVE_S = 2.0
#: idle connections kept at most
MAX_IDLE = 32


class ConnectionClosed(ConnectionError):
    """The connection closed before the whole answer arrived."""


class _Connection(asyncio.Protocol):
    """One connection, one request at a time; the answer's status and body."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionClosed(f"the gateway's answer is not HTTP/1.1: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionClosed("the gateway closed the connection"))

    # -- httptools callbacks -----------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.reusable = self.parser.should_keep_alive()
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            answer.set_result((self.parser.get_status_code(), b"".join(self.body)))
        self.body = []

    # -- use ---------------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Write one request; the future resolves to the answer's status and body."""
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.reusable = False
        self.transport.write(request)
        return self.answer

    def _fail(self, exc: Exception) -> None:
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            answer.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class ConnectionPool:
    """Kept-alive connections to one ``http://host:port`` gateway.

    Args:
        host: the gateway's host.
        port: its port.
        headers: sent with every request (e.g. ``Authorization``).
    """

    def __init__(self, host: str, port: int, *, headers: Mapping[str, str]) -> None:
        self.host = host
        self.port = port
        authority = f"[{host}]" if ":" in host else host
        lines = [f"Host: {authority}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
        self._head = ("\r\n".join(lines) + "\r\nContent-Type: application/json\r\n").encode()
        self._idle: list[_Connection] = []

    @classmethod
    def for_url(cls, base_url: str, *, headers: Mapping[str, str]) -> ConnectionPool | None:
        """A pool for ``base_url``, or ``None`` when it needs more than plain HTTP
        (``https``, a path prefix, or a proxy that the environment routes it through)."""
        address = transports.plain_http_address(base_url)
        return None if address is None else cls(*address, headers=headers)

    async def post(self, path: str, body: bytes, *, timeout_s: float) -> tuple[int, bytes]:
        """``POST path`` with a JSON ``body``; the answer's status and body.

        A kept-alive connection that the gateway closed before answering is not retried
        here (a POST may have been acted on): the caller decides.

        Raises:
            OSError: the gateway cannot be reached, or closed the connection
                (:class:`ConnectionClosed`) before its whole answer arrived.
            TimeoutError: no whole answer within ``timeout_s``.
        """
        request = b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
            path.encode(),
            self._head,
            len(body),
            body,
        )
        async with asyncio.timeout(timeout_s):
            connection = self._idle_connection() or await self._connect()
            try:
                status, content = await connection.send(request)
            except BaseException:  # timed out, cancelled or failed mid-answer: not reusable
                connection.close()
                raise
        if connection.reusable and not connection.closed and len(self._idle) < MAX_IDLE:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
        else:
            connection.close()
        return status, content

    def _idle_connection(self) -> _Connection | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            fresh = now - connection.idle_since < KEEPALIVE_S
            closing = connection.transport is None or connection.transport.is_closing()
            if fresh and not connection.closed and not closing:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        return connection

    def close(self) -> None:
        """Close the idle connections (those in use close when their request ends)."""
        while self._idle:
            self._idle.pop().close()
