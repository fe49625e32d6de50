"""How :class:`~loops.client.GatewayClient`'s requests reach the gateway.

Two transports with one method, :meth:`Transport.request`: a request's bytes out, the
answer's status and body back.

- :class:`SocketTransport`, for ``http://host:port`` gateways that no proxy setting
  routes elsewhere: kept-alive HTTP/1.1 over plain blocking sockets, the answer parsed
  by httptools (the C parser uvicorn uses). Measured against a bare uvicorn app on
  loopback (client CPU per small JSON ``POST``, 3 x 2,000 requests): these sockets
  23-28 µs, the stdlib ``http.client`` 144-177 µs, ``httpx.Client`` 650-820 µs.
- :class:`HttpxTransport` for everything else (``https://``, a path prefix, a proxy),
  so TLS and proxies behave as httpx makes them behave.

Both keep idle connections for :data:`KEEPALIVE_S`, below uvicorn's keep-alive timeout
(5 s). A kept connection the gateway closed anyway (a shorter timeout, a restart) is
noticed before the request is written to it (it reads as closed) and replaced. What
cannot be noticed is the gateway closing it while the request is on its way: the
request was written and no byte of an answer came. Whether the gateway acted on it is
then unknown, so it is sent again, on a fresh connection, only when the caller says it
is ``replayable`` (a read, or a create carrying an idempotency key); otherwise
:class:`RequestNotAnswered` says so. A request that could not be written at all never
reached the gateway's application and is always sent again once.
"""

from __future__ import annotations

import select
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Protocol

import httptools

#: seconds an idle connection is kept (below uvicorn's keep-alive timeout, 5 s)
KEEPALIVE_S = 4.0
#: idle connections kept at most (one per thread that sent at the same time)
MAX_IDLE = 8
#: bytes read from a socket at a time
_READ_SIZE = 65_536


class RequestNotAnswered(ConnectionError):
    """The connection closed after the request was sent and before any answer came:
    the gateway may or may not have acted on it."""


class _NotSent(ConnectionError):
    """The request could not be written: the gateway's application never saw it."""


class Transport(Protocol):
    """Sends one request to the gateway and returns the answer's status and body."""

    def request(
        self, method: str, path: str, body: bytes | None, *, replayable: bool, timeout_s: float
    ) -> tuple[int, bytes]:
        """``method path`` with a JSON ``body`` (or none).

        Args:
            method: ``GET`` or ``POST``.
            path: the path and query, already quoted.
            body: JSON bytes, or ``None`` for no body.
            replayable: the request may be sent twice (a read, or a create with an
                idempotency key): it is, once, when its connection closed unanswered.
            timeout_s: seconds to connect, and to wait for each part of the answer.

        Raises:
            RequestNotAnswered: sent, and the connection closed before any answer.
            OSError: the gateway cannot be reached, or the answer broke off.
            TimeoutError: no answer within ``timeout_s``.
        """
        ...

    def close(self) -> None:
        """Close the idle connections."""
        ...


def plain_http_address(base_url: str) -> tuple[str, int] | None:
    """The host and port of ``base_url`` when plain HTTP/1.1 reaches it directly; ``None``
    when it needs more (``https``, a path prefix, or a proxy the environment sets)."""
    url = urllib.parse.urlsplit(base_url)
    if url.scheme != "http" or not url.hostname or url.path not in ("", "/"):
        return None
    proxies = urllib.request.getproxies()
    if ("http" in proxies or "all" in proxies) and not urllib.request.proxy_bypass(url.hostname):
        return None
    return url.hostname, url.port or 80


def transport_for(base_url: str, *, headers: Mapping[str, str]) -> Transport:
    """The cheapest transport that reaches ``base_url`` correctly."""
    address = plain_http_address(base_url)
    if address is None:
        return HttpxTransport(base_url, headers=headers)
    return SocketTransport(*address, headers=headers)


class _Answer:
    """One answer being read; httptools calls back into it."""

    __slots__ = ("body", "complete", "parser", "reusable")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.complete = False
        self.reusable = False

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        # asked here: once feed_data returns, the parser has reset for the next answer
        self.reusable = self.parser.should_keep_alive()


class _Connection:
    """One kept-alive socket, one request at a time."""

    __slots__ = ("idle_since", "poller", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        """Fresh, and not readable: an idle connection that reads has been closed by the
        gateway (end of stream) or carries bytes nobody asked for."""
        return now - self.idle_since < KEEPALIVE_S and not self.poller.poll(0)

    def exchange(self, request: bytes, timeout_s: float) -> tuple[int, bytes, bool]:
        """Send ``request``; the answer's status, body and whether the connection can
        carry another request."""
        self.sock.settimeout(timeout_s)
        try:
            self.sock.sendall(request)
        except TimeoutError:
            raise
        except OSError as exc:
            raise _NotSent(str(exc) or type(exc).__name__) from exc
        answer = _Answer()
        started = False
        while not answer.complete:
            try:
                data = self.sock.recv(_READ_SIZE)
            except TimeoutError:
                raise
            except OSError as exc:
                if not started:
                    raise RequestNotAnswered(str(exc) or type(exc).__name__) from exc
                raise
            if not data:
                if not started:
                    raise RequestNotAnswered("the gateway closed the connection")
                raise ConnectionError("the gateway closed the connection mid-answer")
            started = True
            try:
                answer.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise ConnectionError(f"the gateway's answer is not HTTP/1.1: {exc}") from exc
        return answer.parser.get_status_code(), b"".join(answer.body), answer.reusable

    def close(self) -> None:
        self.sock.close()


class SocketTransport:
    """Kept-alive HTTP/1.1 connections to ``http://host:port`` over blocking sockets.

    Thread-safe: each request takes an idle connection (or opens one) for itself and
    gives it back when its answer is read, so threads sending at the same time use
    separate connections.

    Args:
        host: the gateway's host.
        port: its port.
        headers: sent with every request (e.g. ``Authorization``).
    """

    def __init__(self, host: str, port: int, *, headers: Mapping[str, str]) -> None:
        for key, value in headers.items():
            if any(c in f"{key}{value}" for c in "\r\n\0"):
                raise ValueError(f"header {key!r} holds a line break or NUL")
        self.host = host
        self.port = port
        authority = f"[{host}]" if ":" in host else host
        lines = [f"Host: {authority}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def request(
        self, method: str, path: str, body: bytes | None, *, replayable: bool, timeout_s: float
    ) -> tuple[int, bytes]:
        """See :meth:`Transport.request`."""
        if body is None:
            length = b"Content-Length: 0\r\n" if method == "POST" else b""
            request = b"%s %s HTTP/1.1\r\n%s%s\r\n" % (
                method.encode(),
                path.encode("ascii"),
                self._head,
                length,
            )
        else:
            request = b"%s %s HTTP/1.1\r\n%sContent-Type: application/json\r\n" % (
                method.encode(),
                path.encode("ascii"),
                self._head,
            ) + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        connection = self._idle_connection()
        if connection is not None:
            try:
                return self._exchange(connection, request, timeout_s)
            except _NotSent:
                pass  # closed under us before the request went out: a new one is safe
            except RequestNotAnswered:
                if not replayable:
                    raise
        connection = self._connect(timeout_s)
        try:
            return self._exchange(connection, request, timeout_s)
        except _NotSent as exc:
            raise ConnectionError(f"the gateway closed a new connection: {exc}") from exc

    def _exchange(
        self, connection: _Connection, request: bytes, timeout_s: float
    ) -> tuple[int, bytes]:
        try:
            status, body, reusable = connection.exchange(request, timeout_s)
        except BaseException:  # failed, timed out or interrupted mid-answer: not reusable
            connection.close()
            raise
        if reusable:
            self._keep(connection)
        else:
            connection.close()
        return status, body

    def _idle_connection(self) -> _Connection | None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    return None
                connection = self._idle.pop()
            if connection.usable(now):
                return connection
            connection.close()

    def _keep(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self, timeout_s: float) -> _Connection:
        sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(sock)

    def close(self) -> None:
        """Close the idle connections (one in use closes or stays after its request)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class HttpxTransport:
    """Requests through ``httpx.Client`` (TLS, proxies and path prefixes as httpx does
    them); thread-safe as httpx's client is.

    Args:
        base_url: the gateway's URL.
        headers: sent with every request.
    """

    def __init__(self, base_url: str, *, headers: Mapping[str, str]) -> None:
        import httpx  # only here: a fifth of a second to import

        self._httpx = httpx
        self._http = httpx.Client(
            base_url=base_url,
            headers=dict(headers),
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S),
        )

    def request(
        self, method: str, path: str, body: bytes | None, *, replayable: bool, timeout_s: float
    ) -> tuple[int, bytes]:
        """See :meth:`Transport.request`."""
        httpx = self._httpx
        headers: Any = None if body is None else {"Content-Type": "application/json"}
        for attempt in (1, 2):
            try:
                response = self._http.request(
                    method, path, content=body, headers=headers, timeout=timeout_s
                )
                return response.status_code, response.content
            except httpx.TimeoutException as exc:
                raise TimeoutError(f"{type(exc).__name__}: {exc}") from exc
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError) as exc:
                # httpx does not tell whether the request went out: count it as sent
                if replayable and attempt == 1:
                    continue
                raise RequestNotAnswered(f"{type(exc).__name__}: {exc}") from exc
            except httpx.TransportError as exc:
                raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    def close(self) -> None:
        """Close httpx's connections."""
        self._http.close()
