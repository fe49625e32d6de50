"""What changed in the queue, as the gateway learns it: wake-ups for waiting requests.

Two sources tell the gateway that something changed:

- **in process**: the :class:`~loops.services.queue.QueueService` calls its listeners
  when this process created or requeued work (and, on a store that ``supports_notify``
  such as PostgreSQL, when any process did), so a waiting lease wakes at once;
- **other processes** (a CLI or another gateway writing the same database): the
  :class:`EventFeed` tails the event log with a cheap indexed probe (``id > head``)
  every :data:`PROBE_INTERVAL_S` while anyone waits, and wakes lease waiters when work
  events appear and stream readers on any event. Where the store's notifications
  already wake lease waiters for every process's work (PostgreSQL), waiting leases
  alone need the probe only for what no notification announces (a retry's delay), so
  it then runs every :data:`NOTIFIED_PROBE_INTERVAL_S`: the fast probe cost a query
  every 2 ms on the database and CPU beside the wake-up it duplicated.

The feed sleeps (no probing) while nobody waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator

from loops import errors
from loops.queue.events import Event
from loops.services.queue import QueueService

logger = logging.getLogger("loops.gateway")

#: how often the event log is probed for other processes' changes while anyone waits
PROBE_INTERVAL_S = 0.002
#: the probe's period while only lease waiters wait on a store that notifies of work
NOTIFIED_PROBE_INTERVAL_S = 0.25
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
    """Tails the queue's events and wakes lease waiters and stream readers.

    The probe runs on its own thread (so a per-thread store connection is reused and a
    probe costs one short read transaction, no event-loop round trip); it hands what
    it finds to the event loop, which owns the signals.
    """

    def __init__(
        self, service: QueueService, *, probe_interval_s: float = PROBE_INTERVAL_S
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
        self._fast_demand = 0
        self._stream_demand = 0
        self._wanted = threading.Event()
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._work: Signal | None = None
        self._events: Signal | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._closing = False

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
        await self._stop_thread()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._loop = asyncio.get_running_loop()
        self._work = Signal()
        self._events = Signal()
        if self._closing:
            self.close_waiters()
            return
        # the service also relays the store's LISTEN/NOTIFY wake-ups (PostgreSQL)
        self._unsubscribe = self.service.subscribe(self._on_local_work)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._probe_loop, args=(self._loop,), name="loops-event-feed", daemon=True
        )
        self._thread.start()

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
        await self._stop_thread()

    async def _stop_thread(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wanted.set()
        self._kick.set()
        await asyncio.to_thread(thread.join, PROBE_ERROR_BACKOFF_S * 5)

    @contextlib.contextmanager
    def demand(self, *, notified: bool = False, stream: bool = False) -> Iterator[None]:
        """Keep the feed probing while the ``with`` block waits.

        Args:
            notified: the waiter is also woken by the store's notifications (a lease
                on a store that ``supports_notify``), so a slow probe serves it.
            stream: the waiter follows the event log (an event stream), so this
                process's own changes make the probe look at once. A lease waiter is
                woken by them directly and needs no such look.
        """
        fast = not notified
        self._demand += 1
        self._fast_demand += fast
        self._stream_demand += stream
        self._wanted.set()
        self._kick.set()  # a probe sleeping its slow period takes up the fast one now
        try:
            yield
        finally:
            self._demand -= 1
            self._fast_demand -= fast
            self._stream_demand -= stream
            if self._demand == 0:
                self._wanted.clear()

    def _probe_period_s(self) -> float:
        if self._fast_demand > 0:
            return self.probe_interval_s
        return max(self.probe_interval_s, NOTIFIED_PROBE_INTERVAL_S)

    def _on_local_work(self) -> None:
        # runs on whichever thread changed the queue (or the store's listener thread)
        if self._stream_demand > 0:
            self._kick.set()  # the probe looks now, so streams see this process's events too
        self._post(self._local_work)

    def _post(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(callback)

    def _local_work(self) -> None:
        if self._work is not None and not self._work.closed:
            self._work.bump()

    async def latest_id(self) -> int:
        """The id of the newest event in the store (0 when there is none)."""
        latest = await asyncio.to_thread(self.service.list_events, limit=1)
        return latest[-1].id if latest else 0

    # -- the probe thread -------------------------------------------------------------

    def _probe_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        head: int | None = None  # None: resume from the newest event
        while not self._stopping.is_set():
            if self._demand == 0:
                head = None
                self._wanted.wait()
                continue
            try:
                if head is None:
                    latest = self.service.list_events(limit=1)
                    head = latest[-1].id if latest else 0
                    # changes made while nobody watched are not replayed: let waiters look
                    self._post(functools.partial(self._resumed, head))
                    continue
                found = self.service.list_events(after_id=head, limit=PROBE_BATCH)
            except errors.LoopsError as exc:
                logger.warning("event feed: cannot read events: %s", exc.message)
                self._stopping.wait(PROBE_ERROR_BACKOFF_S)
                continue
            except Exception:  # the feed's loop must outlive any one failure
                logger.exception("event feed: unexpected error reading events")
                self._stopping.wait(PROBE_ERROR_BACKOFF_S)
                continue
            if found:
                head = found[-1].id
                self._post(functools.partial(self._seen, found))
                if len(found) == PROBE_BATCH:
                    continue
            self._kick.wait(self._probe_period_s())
            self._kick.clear()

    # -- on the event loop ------------------------------------------------------------

    def _resumed(self, head: int) -> None:
        self.head = head
        if self._work is not None and not self._work.closed:
            self.work.bump()
            self.events.bump()

    def _seen(self, found: list[Event]) -> None:
        if self._work is None or self._work.closed:
            return
        self.head = found[-1].id
        self.events.bump()
        if any(e.type in WORK_EVENT_TYPES for e in found):
            self.work.bump()
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
