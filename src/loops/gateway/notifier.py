"""The gateway's background webhook sender (``[[notify]]`` in ``loops.toml``).

It tails the event log (one indexed query every :data:`POLL_INTERVAL_S`, starting at
the events written after the gateway started), turns the events receivers asked for
into notifications (:mod:`loops.notifications`) and posts each in its own task, with
retries and exponential backoff. Nothing here is on a request's path: a slow or dead
receiver never delays the queue. A notification that still fails after its last
attempt is recorded as a ``notify.failed`` event (url, kind, event id, attempts,
error), so the failure shows on the dashboard's event stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool

from loops import errors, notifications
from loops.notifications import NotifyTarget
from loops.queue.events import Event
from loops.services.queue import QueueService

logger = logging.getLogger("loops.gateway.notify")

#: seconds between looks at the event log
POLL_INTERVAL_S = 1.0
#: events read per look
PAGE = 500
#: attempts per notification and receiver
MAX_ATTEMPTS = 5
#: first retry delay (doubled each time, capped by MAX_BACKOFF_S)
BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
#: seconds a receiver gets to answer
TIMEOUT_S = 10.0
#: deliveries in flight at once (the rest wait their turn, in memory)
MAX_IN_FLIGHT = 32
#: the event type that records a notification given up on
FAILED_EVENT = "notify.failed"


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 425, 429)


class Notifier:
    """Follows the event log and posts notifications to the receivers that want them."""

    def __init__(
        self,
        service: QueueService,
        targets: Sequence[NotifyTarget],
        *,
        poll_interval_s: float = POLL_INTERVAL_S,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_s: float = BACKOFF_S,
        timeout_s: float = TIMEOUT_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Prepare (nothing runs until :meth:`start`).

        Raises:
            ConfigError: a receiver's ``secret_env`` names a variable that is not set.
        """
        notifications.require_secrets(targets)
        self.service = service
        self.targets = tuple(targets)
        self.poll_interval_s = poll_interval_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        #: notifications delivered and given up on (for tests and metrics)
        self.delivered = 0
        self.failed = 0

    async def start(self) -> None:
        """Start following the events written from now on."""
        latest = await run_in_threadpool(self.service.list_events, limit=1)
        cursor = latest[-1].id if latest else 0
        self._client = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False)
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._task = asyncio.create_task(self._run(cursor), name="loops-notifier")

    async def stop(self) -> None:
        """Stop following and drop deliveries still in flight."""
        tasks = [t for t in (self._task, *self._deliveries) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def idle(self) -> None:
        """Wait until no delivery is in flight (tests)."""
        while self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def _run(self, cursor: int) -> None:
        while True:
            try:
                page = await run_in_threadpool(
                    self.service.list_events, after_id=cursor, limit=PAGE
                )
            except errors.StoreError as exc:
                logger.warning("notifications: cannot read events (%s); retrying", exc)
                await self._sleep(max(self.poll_interval_s, 1.0))
                continue
            for event in page:
                cursor = event.id
                await self._dispatch(event)
            if len(page) < PAGE:
                await self._sleep(self.poll_interval_s)

    async def _dispatch(self, event: Event) -> None:
        kind = notifications.kind_of(event.type, event.data)
        if kind is None:
            return
        targets = [t for t in self.targets if t.wants(kind)]
        if not targets:
            return
        task: dict[str, Any] | None = None
        if event.task_id is not None:
            with contextlib.suppress(errors.LoopsError):
                found = await run_in_threadpool(self.service.get_task, event.task_id)
                task = found.to_dict()
        body = notifications.payload(kind, event=event.to_dict(), task=task)
        for target in targets:
            delivery = asyncio.create_task(self._deliver(target, kind, event, body))
            self._deliveries.add(delivery)
            delivery.add_done_callback(self._deliveries.discard)

    async def _deliver(self, target: NotifyTarget, kind: str, event: Event, body: bytes) -> None:
        assert self._client is not None and self._slots is not None
        headers = {
            "Content-Type": "application/json",
            notifications.EVENT_HEADER: kind,
            notifications.DELIVERY_HEADER: str(event.id),
        }
        if target.secret:
            headers[notifications.SIGNATURE_HEADER] = notifications.signature(target.secret, body)
        problem = ""
        attempt = 0
        async with self._slots:
            for attempt in range(1, self.max_attempts + 1):
                try:
                    response = await self._client.post(target.url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                else:
                    if response.is_success:
                        self.delivered += 1
                        return
                    problem = f"HTTP {response.status_code}"
                    if not _retryable(response.status_code):
                        break
                if attempt < self.max_attempts:
                    await self._sleep(min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
        logger.warning(
            "notification %s of event %s to %s failed: %s", kind, event.id, target.url, problem
        )
        with contextlib.suppress(errors.LoopsError):
            await run_in_threadpool(
                self.service.append_event,
                FAILED_EVENT,
                task_id=event.task_id,
                data={
                    "url": target.url,
                    "kind": kind,
                    "event_id": event.id,
                    "attempts": attempt,
                    "error": problem,
                },
            )
        self.failed += 1  # counted once recorded, so a reader sees the event
