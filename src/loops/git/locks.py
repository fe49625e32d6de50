"""The landing lock: one landing at a time per repository, across tasks and processes.

An :class:`asyncio.Lock` per repository orders the landings of one event loop without
polling; an exclusive ``flock`` on ``<common-dir>/loops/land.lock`` orders them across
processes. The file lock is taken with ``LOCK_NB`` and retried with a short sleep, so
waiting never blocks the event loop and a cancelled waiter leaves nothing behind. The
kernel releases a ``flock`` when its process dies, so a crash never leaves the lock held.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

from loops.git import layout

#: per event loop, per repository (shared git dir) lock
_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Path, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)

#: how long to sleep between tries of a file lock held by another process
_POLL_S = (0.002, 0.005, 0.01, 0.02, 0.05)


def _task_lock(common_dir: Path) -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    per_loop = _LOCKS.setdefault(loop, {})
    return per_loop.setdefault(common_dir, asyncio.Lock())


def lock_path(common_dir: Path) -> Path:
    """The lock file of a repository."""
    return layout.loops_git_dir(common_dir) / "land.lock"


@contextlib.asynccontextmanager
async def landing_lock(common_dir: Path) -> AsyncIterator[None]:
    """Hold the repository's landing lock for the body of the ``async with``.

    Args:
        common_dir: the repository's shared git directory (identifies the repository).
    """
    key = common_dir.resolve()
    async with _task_lock(key):
        path = lock_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            attempt = 0
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(_POLL_S[min(attempt, len(_POLL_S) - 1)])
                    attempt += 1
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
