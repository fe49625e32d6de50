"""The producer client's transports against a small socket server that answers as told:
when a kept connection closes, what is sent again and what is not.

Both transports (plain sockets, and httpx for https and proxies) keep the same rule: a
request whose connection closed before any answer is sent again only when replayable.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from loops import errors
from loops.client import GatewayClient, transports

TASK = (
    b'{"id": %d, "type": "task", "title": "", "prompt": "p", "status": "queued", '
    b'"priority": 3, "created_at": "2026-11-28T12:00:00Z"}'
)


def answer(number: int, status: str = "201 Created") -> bytes:
    body = TASK % number
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


class Scripted:
    """A loopback server; the n-th request (counted over all connections) is handled as
    ``plan[n]`` says: ``ok`` answers, ``ok-close`` answers then closes the connection,
    ``drop`` closes it without answering. Records (connection number, request line)."""

    def __init__(self, plan: list[str]) -> None:
        self.plan = plan
        self.seen: list[tuple[int, bytes]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connections = 0
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            connections += 1
            with conn:
                self._talk(conn, connections)

    def _talk(self, conn: socket.socket, number: int) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                buffer += conn.recv(65536)
            buffer = buffer[length:]
            self.seen.append((number, head.split(b"\r\n")[0]))
            action = self.plan[len(self.seen) - 1] if len(self.seen) <= len(self.plan) else "ok"
            if action == "drop":
                return
            conn.sendall(answer(len(self.seen)))
            if action == "ok-close":
                return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[Callable[[list[str]], Scripted]]:
    servers: list[Scripted] = []

    def start(plan: list[str]) -> Scripted:
        servers.append(Scripted(plan))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def make_transport(kind: str, url: str) -> transports.Transport:
    if kind == "sockets":
        host, port = transports.plain_http_address(url) or ("", 0)
        return transports.SocketTransport(host, port, headers={})
    return transports.HttpxTransport(url, headers={})


@pytest.fixture(params=["sockets", "httpx"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def post(transport: transports.Transport, *, replayable: bool) -> int:
    status, _ = transport.request(
        "POST", "/tasks", b'{"prompt": "p"}', replayable=replayable, timeout_s=5
    )
    return status


def test_a_kept_connection_carries_the_next_requests(scripted, kind) -> None:
    server = scripted(["ok", "ok", "ok"])
    transport = make_transport(kind, server.url)
    assert [post(transport, replayable=False) for _ in range(3)] == [201, 201, 201]
    assert [number for number, _ in server.seen] == [1, 1, 1]
    transport.close()


def test_a_connection_the_gateway_closed_while_idle_is_replaced_before_sending(
    scripted, kind
) -> None:
    server = scripted(["ok-close", "ok"])
    transport = make_transport(kind, server.url)
    assert post(transport, replayable=False) == 201
    time.sleep(0.2)  # the close reaches the client while the connection is idle
    assert post(transport, replayable=False) == 201  # not replayable, and still sent
    assert [number for number, _ in server.seen] == [1, 2]
    transport.close()


def test_a_create_that_may_have_been_acted_on_is_not_sent_again(scripted, kind) -> None:
    server = scripted(["ok", "drop", "ok"])
    transport = make_transport(kind, server.url)
    assert post(transport, replayable=False) == 201
    with pytest.raises(transports.RequestNotAnswered):
        post(transport, replayable=False)
    assert len(server.seen) == 2  # the dropped create reached the server once
    assert post(transport, replayable=False) == 201  # and the next one goes through
    transport.close()


def test_a_replayable_request_is_sent_again_once_on_a_new_connection(scripted, kind) -> None:
    server = scripted(["ok", "drop", "ok"])
    transport = make_transport(kind, server.url)
    assert post(transport, replayable=False) == 201
    assert post(transport, replayable=True) == 201
    assert [number for number, _ in server.seen] == [1, 1, 2]
    transport.close()


def test_a_replayable_request_is_not_sent_a_third_time(scripted, kind) -> None:
    server = scripted(["ok", "drop", "drop", "ok"])
    transport = make_transport(kind, server.url)
    post(transport, replayable=False)
    with pytest.raises(transports.RequestNotAnswered):
        post(transport, replayable=True)
    assert len(server.seen) == 3
    transport.close()


def test_the_client_says_a_dropped_create_may_have_been_made(scripted) -> None:
    server = scripted(["ok", "drop"])
    with GatewayClient(server.url) as client:
        assert client.create_task({"prompt": "p"}).id == 1
        with pytest.raises(errors.GatewayUnavailable, match="may have acted on it") as caught:
            client.create_task({"prompt": "p"})
        assert "idempotency_key" in str(caught.value)
        assert len(server.seen) == 2


def test_the_client_repeats_a_dropped_create_that_has_an_idempotency_key(scripted) -> None:
    server = scripted(["ok", "drop", "ok"])
    with GatewayClient(server.url) as client:
        client.create_task({"prompt": "p"})
        task, created = client.create({"prompt": "p", "idempotency_key": "k1"})
        assert (task.id, created) == (3, True)
        assert [line for _, line in server.seen] == [b"POST /tasks HTTP/1.1"] * 3


def test_which_transport_a_url_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    plain = transports.transport_for("http://127.0.0.1:7070", headers={})
    assert isinstance(plain, transports.SocketTransport)
    for url in ("https://gw.example:7070", "http://gw.example/prefix"):
        assert isinstance(transports.transport_for(url, headers={}), transports.HttpxTransport)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    proxied = transports.transport_for("http://gw.example:7070", headers={})
    assert isinstance(proxied, transports.HttpxTransport)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    bypassed = transports.transport_for("http://127.0.0.1:7070", headers={})
    assert isinstance(bypassed, transports.SocketTransport)


def test_a_token_with_a_line_break_is_refused() -> None:
    with pytest.raises(errors.ConfigError, match="line break"):
        GatewayClient("http://127.0.0.1:7070", token="abc\r\nX-Evil: 1")
    with pytest.raises(errors.ConfigError, match="not http"):
        GatewayClient("127.0.0.1:7070")


def test_the_plain_http_client_does_not_import_httpx() -> None:
    code = (
        "import sys; from loops.client import GatewayClient; "
        "GatewayClient('http://127.0.0.1:7070').close(); "
        "assert 'httpx' not in sys.modules, 'httpx was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
