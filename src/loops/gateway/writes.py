"""The threads the create and the batch completion write on: one when the store writes
one at a time, a pool of the gateway's own otherwise.

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
(bench/RESULTS.md, branch ``gwthru``); the create lane (:mod:`loops.gateway.lane`)
writes there too. Other stores (PostgreSQL, whose transactions run
side by side) write on a pool of threads as large as the store's connection pool: asyncio's
``run_in_executor`` costs less than starlette's ``run_in_threadpool`` (anyio's thread
hop, with its cancel scope, capacity limiter and context copying): the gateway's CPU per
``POST /tasks`` on PostgreSQL fell by ~150 µs (bench/RESULTS.md, branch ``gwcreate``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WriteLane:
    """Runs blocking store writes off the event loop: on one thread of its own when the
    store writes serially (``serial``), else on a pool of ``threads`` threads."""

    def __init__(self, *, serial: bool, threads: int = 1) -> None:
        """Run writes on a thread of their own (``serial``) or on a pool.

        Args:
            serial: whether the store runs its writes one at a time anyway.
            threads: how many writes may run at once when not ``serial`` (the store's
                connections: more would wait for one).
        """
        self.serial = serial
        self.threads = 1 if serial else max(threads, 1)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    async def run(self, write: Callable[[], T]) -> T:
        """Run ``write()`` and return what it returns (or raise what it raises)."""
        if self._pool is None:  # made on first use: an app may serve without a lifespan
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.threads, thread_name_prefix="loops-writes"
            )
        return await asyncio.get_running_loop().run_in_executor(self._pool, write)

    def close(self) -> None:
        """Wait for the writes under way, if any, and end the threads (a later write
        starts new ones)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
