"""What changed in the queue, as the gateway learns it: wake-ups for waiting requests.

Two sources tell the gateway that something changed:

- **in process**: the :class:`~loops.services.queue.QueueService` calls its listeners
  when this process created or requeued work, so a waiting lease wakes at once;
- **other processes** (a CLI or another gateway writing the same database): the
  :class:`EventFeed` tails the event log with a cheap indexed probe (``id > head``)
  every :data:`PROBE_INTERVAL_S` while anyone waits, and wakes lease waiters when work
  events appear and stream readers on any event. A store that ``supports_notify``
  (PostgreSQL's LISTEN/NOTIFY) also wakes lease waiters directly.

The feed sleeps (no probing) while nobody waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from loops import errors
from loops.queue.events import Event
from loops.services.queue import QueueService

logger = logging.getLogger("loops.gateway")

#: how often the event log is probed for other processes' changes while anyone waits
PROBE_INTERVAL_S = 0.002
#: how long to back off after the store failed a probe
PROBE_ERROR_BACKOFF_S = 1.0
#: events read per probe
PROBE_BATCH = 1_000
#: event types after which a task may be ready to lease
WORK_EVENT_TYPES: frozenset[str] = frozenset(
    {
        "task.created",
        "task.requeued",
        "task.lease_expired",
        "task.released",
        "responsibility.dispatched",
    }
)
#: an event type that makes a task ready after ``data.delay_ms``
RETRY_EVENT_TYPE = "task.retry_scheduled"


class Signal:
    """A generation counter that async waiters can wait on (event-loop thread only)."""

    def __init__(self) -> None:
        self.generation = 0
        self.closed = False
        self._changed = asyncio.Event()

    def bump(self) -> None:
        """Record a change and wake every waiter."""
        self.generation += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """Wake every waiter for good (the gateway is stopping)."""
        self.closed = True
        self._changed.set()

    async def wait(self, *, since: int, timeout_s: float) -> bool:
        """Wait until the generation differs from ``since``, or ``timeout_s`` passed.

        Returns:
            Whether a change (or close) happened.
        """
        if self.generation != since or self.closed:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True


class EventFeed:
    """Tails the queue's events and wakes lease waiters and stream readers."""

    def __init__(
        self,
        service: QueueService,
        *,
        probe_interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        """Watch ``service``; :meth:`start` must be called on the event loop.

        Args:
            service: the queue.
            probe_interval_s: probe period while anyone waits.
        """
        self.service = service
        self.probe_interval_s = probe_interval_s
        self.head = 0
        self._demand = 0
        self._wanted: asyncio.Event | None = None
        self._kick: asyncio.Event | None = None
        self._work: Signal | None = None
        self._events: Signal | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._closing = False
        self._executor: ThreadPoolExecutor | None = None

    @property
    def work(self) -> Signal:
        """Bumped when a task may have become ready to lease."""
        assert self._work is not None, "EventFeed.start() was not called"
        return self._work

    @property
    def events(self) -> Signal:
        """Bumped when new events were written."""
        assert self._events is not None, "EventFeed.start() was not called"
        return self._events

    @property
    def waiting(self) -> int:
        """How many requests wait on the feed now."""
        return self._demand

    async def ensure_started(self) -> None:
        """Start on the running loop unless already running there (apps served without
        a lifespan, such as an ``httpx.ASGITransport``, start on first use)."""
        if self._work is None or self._loop is not asyncio.get_running_loop():
            await self.start()

    async def start(self) -> None:
        """Start tailing (on the running event loop) and listen to in-process changes."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._executor is None:
            # one thread, so a per-thread store connection is reused by every probe
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loops-feed")
        self._loop = asyncio.get_running_loop()
        self._wanted = asyncio.Event()
        self._kick = asyncio.Event()
        self._work = Signal()
        self._events = Signal()
        if self._closing:
            self.close_waiters()
            return
        unsubscribers = [self.service.subscribe(self._on_local_work)]
        listen = getattr(self.service.store, "listen", None)
        if self.service.store.supports_notify and callable(listen):
            # PostgreSQL LISTEN/NOTIFY: other processes' work wakes waiters at once
            unsubscribers.append(listen(self._on_local_work))

        def unsubscribe_all() -> None:
            for unsubscribe in unsubscribers:
                unsubscribe()

        self._unsubscribe = unsubscribe_all
        self._task = asyncio.create_task(self._run(), name="loops-event-feed")

    def close_waiters(self) -> None:
        """Wake every waiter for good (lease waits answer 204, streams end)."""
        self._closing = True
        if self._work is not None:
            self._work.close()
        if self._events is not None:
            self._events.close()

    async def stop(self) -> None:
        """Wake every waiter for good and stop tailing."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.close_waiters()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    @contextlib.contextmanager
    def demand(self) -> Iterator[None]:
        """Keep the feed probing while the ``with`` block waits."""
        self._demand += 1
        if self._wanted is not None:
            self._wanted.set()
        try:
            yield
        finally:
            self._demand -= 1
            if self._demand == 0 and self._wanted is not None:
                self._wanted.clear()

    def _on_local_work(self) -> None:
        # runs on whichever thread changed the queue
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._local_work)

    def _local_work(self) -> None:
        if self._work is not None and not self._work.closed:
            self._work.bump()
        if self._kick is not None:
            self._kick.set()

    async def latest_id(self) -> int:
        """The id of the newest event in the store (0 when there is none)."""
        loop = asyncio.get_running_loop()
        latest = await loop.run_in_executor(
            self._executor, lambda: self.service.list_events(limit=1)
        )
        return latest[-1].id if latest else 0

    async def _run(self) -> None:
        assert self._wanted is not None and self._kick is not None
        loop = asyncio.get_running_loop()
        while True:
            if self._demand == 0:
                await self._wanted.wait()
                self.head = await self._safe_latest()
                # changes made while nobody watched are not replayed: let waiters look
                self.work.bump()
                self.events.bump()
            try:
                found = await loop.run_in_executor(
                    self._executor,
                    lambda: self.service.list_events(after_id=self.head, limit=PROBE_BATCH),
                )
            except errors.LoopsError as exc:
                logger.warning("event feed: cannot read events: %s", exc.message)
                await asyncio.sleep(PROBE_ERROR_BACKOFF_S)
                continue
            except Exception:  # the feed's loop must outlive any one failure
                logger.exception("event feed: unexpected error reading events")
                await asyncio.sleep(PROBE_ERROR_BACKOFF_S)
                continue
            if found:
                self._seen(found)
                if len(found) == PROBE_BATCH:
                    continue
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.probe_interval_s):
                    await self._kick.wait()

    async def _safe_latest(self) -> int:
        try:
            return await self.latest_id()
        except errors.LoopsError as exc:
            logger.warning("event feed: cannot read events: %s", exc.message)
            return self.head
        except Exception:  # the feed's loop must outlive any one failure
            logger.exception("event feed: unexpected error reading events")
            return self.head

    def _seen(self, found: list[Event]) -> None:
        self.head = found[-1].id
        self.events.bump()
        if any(e.type in WORK_EVENT_TYPES for e in found):
            self.work.bump()
        assert self._loop is not None
        for event in found:
            if event.type == RETRY_EVENT_TYPE:
                delay_ms = event.data.get("delay_ms")
                if isinstance(delay_ms, int | float) and delay_ms >= 0:
                    self._wake_later(delay_ms / 1000)

    def _wake_later(self, delay_s: float) -> None:
        assert self._loop is not None

        def fire() -> None:
            self._timers.discard(timer)
            if not self.work.closed:
                self.work.bump()

        # a hair late, so the task's run_after has surely passed when leasing
        timer = self._loop.call_later(delay_s + 0.001, fire)
        self._timers.add(timer)
