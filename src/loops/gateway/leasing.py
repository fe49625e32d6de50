"""Long-polling leases: wait asynchronously for work, lease in a thread.

A waiting lease holds no thread: it awaits the feed's work signal (in-process
notifications and the event-log probe), and calls the synchronous service in the
thread pool only to try a lease. A slow fallback poll catches what no event announces
(a ``run_after`` that passed, a lease that expired and waits to be reclaimed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from starlette.concurrency import run_in_threadpool

from loops.gateway.feed import EventFeed
from loops.queue.tasks import LeasedTask
from loops.services.queue import QueueService

#: how often a waiting lease tries again when nothing announced work
FALLBACK_POLL_S = 1.0


class Leaser:
    """Leases tasks for HTTP requests, waiting up to ``wait_ms`` for work."""

    def __init__(
        self, service: QueueService, feed: EventFeed, *, fallback_poll_s: float = FALLBACK_POLL_S
    ) -> None:
        """Lease from ``service``, woken by ``feed``."""
        self.service = service
        self.feed = feed
        self.fallback_poll_s = fallback_poll_s

    async def lease(
        self,
        *,
        worker: str,
        ttl_ms: int | None,
        wait_ms: int,
        limit: int,
        types: Sequence[str] | None,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> list[LeasedTask]:
        """Lease up to ``limit`` ready tasks, waiting up to ``wait_ms`` for the first.

        ``gone`` tells whether the caller hung up (a worker stopping cancels its
        waiting lease); a hung-up wait stops instead of leasing to nobody.

        Returns:
            The leases granted; empty when nothing was ready in time (or the gateway
            is stopping).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_ms / 1000
        work = self.feed.work
        generation = work.generation
        leased = await self._try(worker, ttl_ms, limit, types)
        if leased or wait_ms <= 0:
            return leased
        with self.feed.demand():
            while not work.closed:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await work.wait(since=generation, timeout_s=min(remaining, self.fallback_poll_s))
                if work.closed or (gone is not None and await gone()):
                    break
                generation = work.generation
                leased = await self._try(worker, ttl_ms, limit, types)
                if leased:
                    return leased
        return []

    async def _try(
        self, worker: str, ttl_ms: int | None, limit: int, types: Sequence[str] | None
    ) -> list[LeasedTask]:
        return await run_in_threadpool(
            self.service.lease, worker=worker, ttl_ms=ttl_ms, limit=limit, types=types
        )
