"""The gateway's ASGI app: ``create_app(service, settings)``.

The app serves the dashboard at ``/`` (its files under ``/ui``), every route of
:mod:`loops.gateway.routes` (with ``/jobs`` aliases), OpenAPI at ``/openapi.json``
and docs at ``/docs``. Every HTTP request first passes the front door
(:mod:`loops.gateway.front`): the HTTP metrics, the bearer token check (when
``QUEUE_API_TOKEN`` is set), the cross-site request check (:mod:`loops.gateway.csrf`)
and the body size limit; then the create lane (:mod:`loops.gateway.lane`) serves the
ordinary ``POST /tasks``, and FastAPI everything else, behind its catch-all error
answer.

Typical use::

    settings = config.load_settings()
    service = QueueService.open(settings)
    app = create_app(service, settings)      # serve with uvicorn, or test in process
"""

from __future__ import annotations

import collections.abc
import contextlib
import functools
from importlib import metadata

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from loops import config
from loops.gateway import errors, routes
from loops.gateway.feed import PROBE_INTERVAL_S, EventFeed
from loops.gateway.front import FrontDoor
from loops.gateway.leasing import FALLBACK_POLL_S, Leaser
from loops.gateway.metrics import GatewayMetrics
from loops.gateway.notifier import Notifier
from loops.gateway.routes import dashboard
from loops.gateway.state import Gateway
from loops.gateway.ticker import Ticker
from loops.gateway.writes import WriteLane
from loops.services.queue import QueueService

#: largest artifact upload (``POST /tasks/{id}/artifacts``); other bodies obey
#: ``QUEUE_MAX_BODY_BYTES``
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024

_DESCRIPTION = """\
The loops task queue over HTTP: create tasks, lease them with long polling, heartbeat
and complete them with the lease token, follow the event stream.

Errors are `{"error": {"code", "message"}}`. With `QUEUE_API_TOKEN` set, every route
but `/healthz` and the dashboard's page (`/`, `/ui/...`) needs
`Authorization: Bearer <token>`. Every `/tasks...` route is also served as `/jobs...`.
"""


def _version() -> str:
    try:
        return metadata.version("loops")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0"


class GatewayApp(FastAPI):
    """The FastAPI app with the gateway's front door before it (set by :func:`create_app`)."""

    front: FrontDoor | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection: HTTP through the front door, the rest as FastAPI."""
        if self.front is None:
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)


def create_app(
    service: QueueService,
    settings: config.Settings | config.ApiSettings,
    *,
    probe_interval_s: float = PROBE_INTERVAL_S,
    fallback_poll_s: float = FALLBACK_POLL_S,
) -> FastAPI:
    """Build the gateway app over ``service``.

    Args:
        service: the queue (the app does not close it).
        settings: all settings, or just the API group (host, port, token, body limit).
        probe_interval_s: how often other processes' changes are looked for while a
            request waits (long-polling lease, event stream).
        fallback_poll_s: how often a waiting lease retries when nothing announced work.

    Returns:
        The ASGI app; its lifespan starts and stops the event feed, the ticker when
        ``tick_interval_ms`` is set, and the webhook sender when ``settings`` has
        ``[[notify]]`` receivers.
    """
    api = settings.api if isinstance(settings, config.Settings) else settings
    feed = EventFeed(service, probe_interval_s=probe_interval_s)
    leaser = Leaser(service, feed, fallback_poll_s=fallback_poll_s)
    gateway = Gateway(
        service=service,
        settings=api,
        feed=feed,
        leaser=leaser,
        metrics=GatewayMetrics(service, waiters=lambda: leaser.waiting),
        writes=WriteLane(serial=service.store.serial_writes, threads=service.settings.db_pool_size),
        runs_home=settings.home if isinstance(settings, config.Settings) else None,
    )

    targets = settings.notify if isinstance(settings, config.Settings) else ()
    notifier = Notifier(service, targets) if targets else None
    ticker = Ticker(service, interval_ms=api.tick_interval_ms) if api.tick_interval_ms else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> collections.abc.AsyncIterator[None]:
        await feed.start()
        if notifier is not None:
            await notifier.start()
        if ticker is not None:
            await ticker.start()
        try:
            yield
        finally:
            if ticker is not None:
                await ticker.stop()
            if notifier is not None:
                await notifier.stop()
            await leaser.stop()
            await feed.stop()
            gateway.writes.close()

    app = GatewayApp(
        title="loops gateway",
        description=_DESCRIPTION,
        version=_version(),
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.gateway = gateway
    app.state.notifier = notifier
    routes.add_routes(app)
    app.mount(
        dashboard.STATIC_PREFIX, StaticFiles(directory=dashboard.static_dir()), name="dashboard"
    )
    errors.install(app)

    def body_limit(path: str) -> int:
        if path.endswith("/artifacts") and path.startswith(("/tasks/", "/jobs/")):
            return max(MAX_ARTIFACT_BYTES, api.max_body_bytes)
        return api.max_body_bytes

    app.front = FrontDoor(
        functools.partial(FastAPI.__call__, app),
        gateway=gateway,
        token=api.token,
        limit_for=body_limit,
    )
    return app
