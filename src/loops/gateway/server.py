"""Running the gateway: bind the socket, serve with uvicorn, stop cleanly on a signal.

The socket is bound before uvicorn starts, so a busy port or a bad address is a clear
one-line error, and ``port=0`` picks a free port (the start message names it). On
SIGINT or SIGTERM, long-polling leases answer 204 and event streams end at once, then
uvicorn finishes the requests in flight and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn

from loops import config, errors, notifications
from loops.gateway.app import create_app
from loops.gateway.auth import check_binding
from loops.gateway.state import Gateway
from loops.services.queue import QueueService

__all__ = ["GatewayServer", "bind", "check_binding", "serve", "url_of"]

#: seconds uvicorn waits for requests in flight after a stop signal
GRACEFUL_SHUTDOWN_S = 5
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket bound to ``host:port`` (``port`` 0: any free port).

    Raises:
        ConfigError: the address cannot be resolved or bound (e.g. the port is busy).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise errors.ConfigError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = "; choose another with --port or QUEUE_API_PORT" if port else ""
        raise errors.ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """The http URL a bound socket serves."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class GatewayServer(uvicorn.Server):
    """uvicorn's server, ending long polls at a stop signal and exiting without re-raising it."""

    def __init__(
        self, config: uvicorn.Config, *, gateway: Gateway, on_started: Callable[[], None]
    ) -> None:
        super().__init__(config)
        self.gateway = gateway
        self.on_started = on_started
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start serving, then announce it."""
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)
        if self.started:
            self.on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Stop accepting, and end waiting requests now instead of after their wait."""
        super().handle_exit(sig, frame)
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.gateway.begin_shutdown)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Handle SIGINT/SIGTERM as a clean stop (the process then exits 0)."""
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(
    service: QueueService,
    settings: config.Settings,
    *,
    host: str,
    port: int,
    announce: Callable[[str], None],
) -> None:
    """Serve the gateway until SIGINT or SIGTERM.

    Args:
        service: the queue to serve (closed by the caller).
        settings: all settings (the token and body limit are read from ``settings.api``).
        host: address to bind; non-loopback needs ``settings.api.token``.
        port: TCP port; 0 picks a free one.
        announce: called with the URL once the gateway accepts connections.

    Raises:
        ConfigError: non-loopback without a token, a ``[[notify]]`` secret_env that
            is not set, or the address cannot be bound.
    """
    check_binding(host, settings.api.token)
    notifications.require_secrets(settings.notify)
    sock = bind(host, port)
    app = create_app(service, settings)
    gateway = app.state.gateway
    uv_config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
    )
    server = GatewayServer(uv_config, gateway=gateway, on_started=lambda: announce(url_of(sock)))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
