"""Long-polling leases: wait asynchronously for work, lease in a thread, one at a time.

A lease request first tries to lease at once. If nothing is ready and it may wait, it
joins a first-in-first-out line and holds no thread. One dispatcher serves the line:
when the feed's work signal changes (in-process notifications, the event-log probe,
LISTEN/NOTIFY) it offers the new work to the waiters in order, calling the
synchronous service in the thread pool for one waiter at a time, and stops at the
first waiter without a type filter that finds nothing (then nothing is ready for
anyone). So a created task costs one or two lease transactions, not one per idle
worker, and the worker that waited longest gets it. A slow fallback sweep catches what
no event announces (a ``run_after`` that passed, a lease that expired and waits to be
reclaimed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from loops.gateway.feed import EventFeed
from loops.queue.tasks import LeasedTask
from loops.services.queue import QueueService

logger = logging.getLogger("loops.gateway")

#: how often the waiting line is swept when nothing announced work
FALLBACK_POLL_S = 1.0


@dataclasses.dataclass(eq=False, slots=True)
class _Waiter:
    """One lease request in the waiting line."""

    attempt: Callable[[], Awaitable[list[LeasedTask]]]
    worker: str
    typed: bool
    future: asyncio.Future[list[LeasedTask]]
    serving: bool = False
    expired: bool = False
    gone: bool = False


class Leaser:
    """Leases tasks for HTTP requests, waiting up to ``wait_ms`` for work."""

    def __init__(
        self, service: QueueService, feed: EventFeed, *, fallback_poll_s: float = FALLBACK_POLL_S
    ) -> None:
        """Lease from ``service``, woken by ``feed``.

        Args:
            service: the queue.
            feed: the source of work signals.
            fallback_poll_s: how often the line is swept when nothing announced work.
        """
        self.service = service
        self.feed = feed
        self.fallback_poll_s = fallback_poll_s
        self._line: list[_Waiter] = []
        self._dispatcher: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Lease requests waiting now (the ``loops_lease_waiters`` gauge)."""
        return len(self._line)

    async def lease(
        self,
        *,
        worker: str,
        ttl_ms: int | None,
        wait_ms: int,
        limit: int,
        types: Sequence[str] | None,
        disconnected: Callable[[], Awaitable[None]] | None = None,
    ) -> list[LeasedTask]:
        """Lease up to ``limit`` ready tasks, waiting up to ``wait_ms`` for the first.

        Args:
            worker: the worker's name.
            ttl_ms: lease length (``None``: the default).
            wait_ms: how long to wait for work.
            limit: most tasks to lease.
            types: lease only these task types.
            disconnected: returns when the client went away; leases granted to a
                client that left are released at once (no attempt charged).

        Returns:
            The leases granted; empty when nothing was ready in time (or the gateway
            is stopping).
        """

        async def attempt() -> list[LeasedTask]:
            return await run_in_threadpool(
                self.service.lease, worker=worker, ttl_ms=ttl_ms, limit=limit, types=types
            )

        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_ms / 1000
        work = self.feed.work
        generation = work.generation
        leased = await attempt()  # also validates the request before it may wait
        if leased or wait_ms <= 0 or work.closed:
            return leased
        waiter = _Waiter(attempt, worker, types is not None, loop.create_future())
        self._line.append(waiter)
        self._ensure_dispatcher()
        if work.generation != generation:
            work.bump()  # work arrived between the attempt and joining the line
        try:
            with self.feed.demand(notified=self.service.store.supports_notify):
                return await self._await(waiter, deadline - loop.time(), disconnected)
        finally:
            with contextlib.suppress(ValueError):
                self._line.remove(waiter)

    async def _await(
        self,
        waiter: _Waiter,
        timeout_s: float,
        disconnected: Callable[[], Awaitable[None]] | None,
    ) -> list[LeasedTask]:
        gone = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        try:
            watched: set[asyncio.Future[Any]] = {waiter.future}
            if gone is not None:
                watched.add(gone)
            await asyncio.wait(watched, timeout=max(timeout_s, 0), return_when="FIRST_COMPLETED")
            left = gone is not None and gone.done()
            if waiter.future.done():
                leased = waiter.future.result()
                if left and leased:
                    await self._release(leased)
                    return []
                return leased
            if waiter.serving:  # an attempt for it is under way
                if left:
                    waiter.gone = True  # the sweep gives back what it gets
                    return []
                waiter.expired = True
                return await waiter.future
            waiter.future.cancel()  # the sweep must not serve it any more
            return []
        finally:
            if gone is not None:
                gone.cancel()

    async def _release(self, leased: list[LeasedTask]) -> None:
        """Give back leases whose requester left (queued again, no attempt charged)."""
        for item in leased:
            try:
                await run_in_threadpool(
                    self.service.release,
                    item.task.id,
                    lease_token=item.lease.token,
                    reason="the lease request's client went away",
                )
            except Exception as exc:  # it expires after its TTL instead
                logger.warning("cannot release task %s: %s", item.task.id, exc)

    def drop(self, worker: str) -> None:
        """Answer ``worker``'s waiting requests (empty) at once: it said it stopped."""
        for waiter in self._line:
            if waiter.worker == worker and not waiter.serving and not waiter.future.done():
                waiter.future.set_result([])

    async def stop(self) -> None:
        """Answer every waiter (empty) and stop the dispatcher."""
        for waiter in self._line:
            if not waiter.future.done():
                waiter.future.set_result([])
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
            self._dispatcher = None

    def _ensure_dispatcher(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="loops-lease-line")

    async def _dispatch(self) -> None:
        work = self.feed.work
        seen = work.generation
        while self._line and not work.closed:
            await work.wait(since=seen, timeout_s=self.fallback_poll_s)
            seen = work.generation
            if work.closed:
                break
            try:
                await self._sweep()
            except Exception:  # the line must keep being served
                logger.exception("lease line: unexpected error")
        for waiter in self._line:
            if not waiter.future.done():
                waiter.future.set_result([])

    async def _sweep(self) -> None:
        """Offer ready work to the waiters, longest waiting first."""
        for waiter in list(self._line):
            if waiter.future.done():
                continue
            waiter.serving = True
            try:
                leased = await waiter.attempt()
            except Exception as exc:  # e.g. the store is down: that request answers it
                waiter.serving = False
                if not waiter.gone:
                    waiter.future.set_exception(exc)
                continue
            waiter.serving = False
            if waiter.gone:
                await self._release(leased)
                continue
            if leased or waiter.expired:
                waiter.future.set_result(leased)
                continue
            if not waiter.typed:
                return  # nothing is ready for anyone
