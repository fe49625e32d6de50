"""The thread the batch completion route writes on, when the store writes one at a time.

On a store whose writes queue on one lock (:attr:`~loops.store.base.Store.serial_writes`:
SQLite, one writer per database file; the memory store, one lock), completions sent by
several workers at once gain nothing from running on several threads: they wait for
each other anyway. Spread over threads they also cost more CPU: each thread has its own
SQLite connection, whose page cache is stale whenever another connection wrote, and a
completion that finds the lock held by another thread is decided twice (on a WAL read
while it waits, then checked under the lock, :meth:`SqliteStore._completions`), which
pays off between processes, never between threads sharing one interpreter lock. So on
such a store the batch completion route runs on one thread, its connection kept warm:
the gateway's CPU per no-op task drained by 4 workers fell from ~121 to ~103 µs
(bench/RESULTS.md, branch ``gwthru``). Other stores (PostgreSQL, whose transactions run
side by side) keep starlette's thread pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")


class WriteLane:
    """Runs blocking store writes off the event loop: on one thread of its own when the
    store writes serially (``serial``), else in starlette's thread pool."""

    def __init__(self, *, serial: bool) -> None:
        """Run writes on a thread of their own (``serial``) or in the pool.

        Args:
            serial: whether the store runs its writes one at a time anyway.
        """
        self.serial = serial
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None

    async def run(self, write: Callable[[], T]) -> T:
        """Run ``write()`` and return what it returns (or raise what it raises)."""
        if not self.serial:
            return await run_in_threadpool(write)
        if self._thread is None:  # made on first use: an app may serve without a lifespan
            self._thread = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="loops-writes"
            )
        return await asyncio.get_running_loop().run_in_executor(self._thread, write)

    def close(self) -> None:
        """Wait for the write under way, if any, and end the thread (a later write
        starts a new one)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=True)
