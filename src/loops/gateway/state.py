"""What one gateway app holds: the service, its settings, the feed, leaser and metrics."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from starlette.requests import Request

from loops import config
from loops.gateway.feed import EventFeed
from loops.gateway.leasing import Leaser
from loops.gateway.metrics import GatewayMetrics
from loops.gateway.writes import WriteLane
from loops.services.queue import QueueService


@dataclasses.dataclass(frozen=True, slots=True)
class Gateway:
    """The parts of a running gateway, shared by its request handlers.

    Attributes:
        service: the queue every route calls.
        settings: the HTTP server's settings (token, body limit).
        feed: wake-ups for long polls and the event stream.
        leaser: long-polling leases.
        metrics: the Prometheus registry.
        writes: where the create and the batch completion run their store calls.
        runs_home: the run registry's root (``None``: from the settings of the environment).
    """

    service: QueueService
    settings: config.ApiSettings
    feed: EventFeed
    leaser: Leaser
    metrics: GatewayMetrics
    writes: WriteLane
    runs_home: Path | None = None

    def begin_shutdown(self) -> None:
        """End long polls (204) and event streams now: the server is stopping.

        Call on the event loop's thread.
        """
        self.feed.close_waiters()


def gateway_of(request: Request) -> Gateway:
    """The gateway serving ``request``."""
    gateway = request.app.state.gateway
    assert isinstance(gateway, Gateway)
    return gateway
