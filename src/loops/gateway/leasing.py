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

A task created through this gateway (:meth:`Leaser.create_and_offer`) skips the
dispatcher: the creating thread claims the first waiter that may take it before it
creates the task, and leases for that waiter right after the commit, on the same
thread. That spares the hops from the thread to the event loop and back to another
thread (about a millisecond), and the lease's answer is ready before the create's.
The claimed waiter keeps its place: a sweep that reaches it stops there and runs again
once the hand-off is settled, so the line is still served in order.

Work made ready by another gateway (PostgreSQL's LISTEN/NOTIFY) is handed over the same
way: the store's listener thread claims the first waiter and leases for it there, before
the dispatcher is woken (:meth:`QueueService.subscribe_store`), sparing the hops to the
event loop and to a pool thread. When that lease finds nothing (the task went to another
gateway's worker, or is of a type the waiter does not take) the waiter keeps its place
and the dispatcher's sweep, woken right after, serves the line as for any other signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence

from starlette.concurrency import run_in_threadpool

from loops.gateway.feed import EventFeed
from loops.queue.tasks import LeasedTask, TaskSpec
from loops.services.queue import CreateResult, QueueService

logger = logging.getLogger("loops.gateway")

#: how often the waiting line is swept when nothing announced work
FALLBACK_POLL_S = 1.0


@dataclasses.dataclass(eq=False, slots=True)
class _Waiter:
    """One lease request in the waiting line.

    ``serving`` is set while a lease for it is under way (by the sweep, or by a create
    handing its task over); it and the future's state change under the leaser's lock
    whenever a thread might be looking.
    """

    lease_now: Callable[[], list[LeasedTask]]
    worker: str
    types: frozenset[str] | None
    future: asyncio.Future[list[LeasedTask]]
    serving: bool = False
    expired: bool = False
    gone: bool = False
    #: a sweep stopped at this waiter while a create handed work to it
    held_sweep: bool = False

    def takes(self, task_type: str) -> bool:
        """Whether a task of ``task_type`` may be leased for this request."""
        return self.types is None or task_type in self.types


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
        #: guards the line and the waiters' ``serving`` against creating threads
        self._claims = threading.Lock()
        self._dispatcher: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()
        #: ends the subscription to the store's notifications (made by the first wait)
        self._unsubscribe_store: Callable[[], None] | None = None

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

        def lease_now() -> list[LeasedTask]:
            return self.service.lease(worker=worker, ttl_ms=ttl_ms, limit=limit, types=types)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_ms / 1000
        work = self.feed.work
        generation = work.generation
        leased = await run_in_threadpool(lease_now)  # also validates the request
        if leased or wait_ms <= 0 or work.closed:
            return leased
        wanted = None if types is None else frozenset(types)
        waiter = _Waiter(lease_now, worker, wanted, loop.create_future())
        with self._claims:
            self._line.append(waiter)
        self._ensure_dispatcher()
        if work.generation != generation:
            work.bump()  # work arrived between the attempt and joining the line
        try:
            with self.feed.demand(notified=self.service.store.supports_notify):
                return await self._await(waiter, deadline - loop.time(), disconnected)
        finally:
            with self._claims, contextlib.suppress(ValueError):
                self._line.remove(waiter)

    def create_and_offer(
        self, spec: TaskSpec, *, parent_id: int | str | None = None
    ) -> CreateResult:
        """Create a task (a child of ``parent_id``, if given) and hand it to a waiter.

        Runs on a worker thread, as every store call does. When a lease request waits
        for work of the task's type, the first such waiter is claimed before the
        create and leased for right after its commit, on this thread; the waiter's
        answer is passed to the event loop. A lease that fails there is that waiter's
        answer, not the creator's; a create that fails gives the waiter back its place.

        Args:
            spec: the task.
            parent_id: create a child of this task (:meth:`QueueService.create_child`).

        Returns:
            What the service's create returned.
        """
        waiter = None if spec.run_after is not None else self._claim(spec.type)
        if parent_id is None:
            create = functools.partial(self.service.create_task, spec)
        else:
            create = functools.partial(self.service.create_child, parent_id, spec)
        if waiter is None:
            return create()
        created = None
        try:
            created = create()
        finally:
            self._hand_over(waiter, lease=created is not None and created.created)
        return created

    def _offer_notified(self) -> None:
        """Another process made work ready: lease for the first waiter on this thread
        (the store's listener thread); the dispatcher's sweep is woken after."""
        with self._claims:
            waiter = next((w for w in self._line if not w.future.done()), None)
            if waiter is None or waiter.serving:  # a lease for it is under way already:
                return  # the line goes on after it, in order (not from here)
            waiter.serving = True
        self._hand_over(waiter, lease=True)

    def _hand_over(self, waiter: _Waiter, *, lease: bool) -> None:
        """Lease for a claimed waiter on this thread (when ``lease``) and pass the answer
        to the event loop, which settles the hand-off (:meth:`_handed`)."""
        leased: list[LeasedTask] = []
        error: Exception | None = None
        try:
            if lease:
                try:
                    leased = waiter.lease_now()
                except Exception as exc:  # the waiter's answer (e.g. the worker stopped)
                    error = exc
        finally:
            with contextlib.suppress(RuntimeError):  # the loop closed: the lease expires
                waiter.future.get_loop().call_soon_threadsafe(self._handed, waiter, leased, error)

    def _claim(self, task_type: str) -> _Waiter | None:
        """The first waiter that may take a task of ``task_type``, marked as served."""
        with self._claims:
            for waiter in self._line:
                if not waiter.serving and not waiter.future.done() and waiter.takes(task_type):
                    waiter.serving = True
                    return waiter
        return None

    def _handed(self, waiter: _Waiter, leased: list[LeasedTask], error: Exception | None) -> None:
        """Settle a hand-off on the event loop: answer the waiter or give it its place back."""
        with self._claims:  # answered before another create may claim it again
            waiter.serving = False
            answered = waiter.gone or waiter.future.done()  # it left, or the gateway stops
            if not answered and error is not None:
                waiter.future.set_exception(error)
            elif not answered and (leased or waiter.expired):
                waiter.future.set_result(leased)
        if answered and leased:
            release = asyncio.ensure_future(self._release(leased))
            self._releases.add(release)
            release.add_done_callback(self._releases.discard)
        if waiter.held_sweep:  # let the sweep that stopped here go on
            waiter.held_sweep = False
            self.feed.work.bump()

    async def _await(
        self,
        waiter: _Waiter,
        timeout_s: float,
        disconnected: Callable[[], Awaitable[None]] | None,
    ) -> list[LeasedTask]:
        # the request awaits its future itself (no asyncio.wait around it): an answer
        # set by a hand-off resumes it in the next loop iteration, before the create's
        loop = waiter.future.get_loop()
        timer = loop.call_later(max(timeout_s, 0), self._give_up, waiter, False)
        gone = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        if gone is not None:
            gone.add_done_callback(lambda _: self._give_up(waiter, True))
        try:
            leased = await waiter.future
        finally:
            timer.cancel()
            left = gone is not None and gone.done() and not gone.cancelled()
            if gone is not None:
                gone.cancel()
        if left and leased:  # granted just as its client left
            await self._release(leased)
            return []
        return leased

    def _give_up(self, waiter: _Waiter, left: bool) -> None:
        """The wait is over (time is up, or the client left): answer now, unless an
        attempt under way for a waiter whose time is up is to answer it."""
        with self._claims:
            if waiter.future.done():
                return
            if waiter.serving and not left:
                waiter.expired = True  # the attempt under way answers, even empty
                return
            waiter.gone = left  # whoever leases for it now gives back what it gets
            waiter.future.set_result([])

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
        with self._claims:
            for waiter in self._line:
                if waiter.worker == worker and not waiter.serving and not waiter.future.done():
                    waiter.future.set_result([])

    async def stop(self) -> None:
        """Answer every waiter (empty) and stop the dispatcher."""
        if self._unsubscribe_store is not None:
            self._unsubscribe_store()
            self._unsubscribe_store = None
        self._answer_all()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
            self._dispatcher = None

    def _ensure_dispatcher(self) -> None:
        if self._unsubscribe_store is None and self.service.store.supports_notify:
            self._unsubscribe_store = self.service.subscribe_store(self._offer_notified)
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
        self._answer_all()

    def _answer_all(self) -> None:
        """Answer every waiting request (empty); a hand-off under way gives its lease back."""
        with self._claims:
            for waiter in self._line:
                if not waiter.future.done():
                    waiter.future.set_result([])

    async def _sweep(self) -> None:
        """Offer ready work to the waiters, longest waiting first."""
        for waiter in list(self._line):
            with self._claims:
                if waiter.future.done():
                    continue
                if waiter.serving:  # a create is handing it work: it keeps its place
                    waiter.held_sweep = True
                    return
                waiter.serving = True
            try:
                leased = await run_in_threadpool(waiter.lease_now)
            except Exception as exc:  # e.g. the store is down: that request answers it
                with self._claims:
                    waiter.serving = False
                    if not waiter.gone and not waiter.future.done():
                        waiter.future.set_exception(exc)
                continue
            with self._claims:  # answered before a create may claim it
                waiter.serving = False
                answered = waiter.gone or waiter.future.done()  # it left, or the gateway stops
                settled = not answered and bool(leased or waiter.expired)
                if settled:
                    waiter.future.set_result(leased)
            if answered:
                await self._release(leased)
                continue
            if settled:
                continue
            if waiter.types is None:
                return  # nothing is ready for anyone
