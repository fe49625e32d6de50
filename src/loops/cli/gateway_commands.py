"""``loop gateway``: serve the queue over HTTP (REST, event stream, metrics).

FastAPI and uvicorn are imported only when the command runs, so other commands start
fast.
"""

from __future__ import annotations

import logging
import sys

import click

from loops import config, redact


@click.command("gateway")
@click.option(
    "--host",
    default=None,
    metavar="ADDR",
    help="Address to bind (default: QUEUE_API_HOST or 127.0.0.1). "
    "Any non-loopback address needs QUEUE_API_TOKEN.",
)
@click.option(
    "--port",
    default=None,
    type=click.IntRange(0, 65535),
    help="TCP port (default: QUEUE_API_PORT or 7070; 0 picks a free port).",
)
@click.option(
    "--db",
    "db_path",
    metavar="PATH",
    default=None,
    help="SQLite database file (default: QUEUE_DB_PATH or ./data/queue.sqlite).",
)
@click.option(
    "--tick-interval-ms",
    "tick_interval_ms",
    default=None,
    type=click.IntRange(min=0),
    help="Tick by itself (dispatch due responsibilities, reclaim expired leases) when a "
    "responsibility is due and at least this often (default: QUEUE_TICK_INTERVAL_MS or "
    "30000; 0: never, use `loop tick`).",
)
def gateway_command(
    host: str | None, port: int | None, db_path: str | None, tick_interval_ms: int | None
) -> None:
    """Serve the task queue's REST API until Ctrl-C or SIGTERM.

    The web dashboard at /, routes, OpenAPI docs at /docs, live events at
    /events/stream and Prometheus metrics at /metrics. Workers lease tasks from it
    with long polling.
    """
    from loops.gateway import server
    from loops.services.queue import QueueService

    # warnings and errors (a failed request, the store going away) go to stderr
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    redact.install_logging_filter()  # no secret reaches a log line

    settings = config.load_settings(
        overrides={
            "api.host": host,
            "queue.db_path": db_path,
            "api.tick_interval_ms": tick_interval_ms,
        }
    )
    bind_host = settings.api.host
    bind_port = settings.api.port if port is None else port
    server.check_binding(bind_host, settings.api.token)
    service = QueueService.open(settings)
    try:
        server.serve(
            service,
            settings,
            host=bind_host,
            port=bind_port,
            announce=lambda url: _announce(url, token=bool(settings.api.token)),
        )
    finally:
        service.close()
    click.echo("loop gateway: stopped")


def _announce(url: str, *, token: bool) -> None:
    auth = " (token required)" if token else ""
    click.echo(
        f"loop gateway: serving the queue on {url}{auth}; dashboard at {url}/, docs at {url}/docs"
    )
    sys.stdout.flush()  # a supervisor reading a pipe sees the line at once


def register(group: click.Group) -> None:
    """Add ``loop gateway`` to the root group."""
    group.add_command(gateway_command)
