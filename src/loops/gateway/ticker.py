"""The gateway's own tick: due responsibilities dispatched without a cron job.

A running gateway ticks by itself (what ``loop tick`` and ``POST /tick`` do): it
sleeps until the earliest enabled responsibility is due, or at most
``tick_interval_ms`` (so expired leases nobody leases over are reclaimed and
responsibilities added to ``loops.toml`` are picked up), then ticks in the thread
pool. Several gateways may tick the same database: a responsibility is dispatched
once per due time by the store (an advisory lock on PostgreSQL, the write lock on
SQLite). A tick that did nothing writes no ``tick`` event, so an idle gateway does not
fill the event log; a store that is away is logged and tried again after the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from starlette.concurrency import run_in_threadpool

from loops import errors
from loops.services.queue import QueueService

logger = logging.getLogger("loops.gateway.tick")

#: never tick more often than this, whatever the due times say
MIN_WAIT_S = 0.05
#: how often a responsibility that is due but held back (its last task still active)
#: is looked at again
HELD_POLL_S = 5.0


class Ticker:
    """Ticks ``service`` in the background of the gateway (see the module docstring)."""

    def __init__(self, service: QueueService, *, interval_ms: int) -> None:
        """Tick ``service`` at least every ``interval_ms`` (> 0) and when work is due."""
        if interval_ms <= 0:
            raise errors.ConfigError(
                f"tick interval {interval_ms} ms must be > 0 (0 turns the ticker off)"
            )
        self.service = service
        self.interval_s = interval_ms / 1000
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start ticking (the first tick comes at once: a new responsibility is due)."""
        self._task = asyncio.create_task(self._run(), name="loops-ticker")

    async def stop(self) -> None:
        """Stop ticking; a tick in progress finishes in its thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                wait_s = await run_in_threadpool(self._tick)
            except errors.StoreError as exc:
                logger.warning("tick failed, trying again in %gs: %s", self.interval_s, exc)
                wait_s = self.interval_s
            await asyncio.sleep(wait_s)

    def _tick(self) -> float:
        """Tick once; the seconds until the next tick is needed."""
        self.service.tick(record_idle=False)
        self.ticks += 1
        return self._wait_s(self.service.now())

    def _wait_s(self, now: dt.datetime) -> float:
        due = [r.next_due_at for r in self.service.list_responsibilities() if r.enabled]
        if not due:
            return self.interval_s
        until = (min(due) - now).total_seconds()
        if until <= 0:  # due, yet not dispatched: its previous task is still active
            return min(self.interval_s, HELD_POLL_S)
        return max(MIN_WAIT_S, min(self.interval_s, until))
