"""Repository locks: one holder at a time per repository, across tasks and processes.

Two locks per repository: ``land`` (landing a node's work on its parent branch) and
``worktrees`` (adding and removing worktrees and node branches: git reads every
worktree's metadata while it adds one, and fails on one half-written by a concurrent
``git worktree add``). An :class:`asyncio.Lock` per repository and name orders the
holders of one event loop without polling; an exclusive ``flock`` on
``<common-dir>/loops/<name>.lock`` orders them across processes. The file lock is taken
with ``LOCK_NB`` and retried with a short sleep, so waiting never blocks the event loop
and a cancelled waiter leaves nothing behind. The kernel releases a ``flock`` when its
process dies, so a crash never leaves the lock held. When both are needed, ``land`` is
taken first.
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

#: per event loop, per (repository's shared git dir, lock name)
_LOCKS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[Path, str], asyncio.Lock]
] = weakref.WeakKeyDictionary()

#: how long to sleep between tries of a file lock held by another process
_POLL_S = (0.002, 0.005, 0.01, 0.02, 0.05)


def _task_lock(common_dir: Path, name: str) -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    per_loop = _LOCKS.setdefault(loop, {})
    return per_loop.setdefault((common_dir, name), asyncio.Lock())


def lock_path(common_dir: Path, name: str = "land") -> Path:
    """The lock file of a repository's lock ``name``."""
    return layout.loops_git_dir(common_dir) / f"{name}.lock"


def landing_lock(common_dir: Path) -> contextlib.AbstractAsyncContextManager[None]:
    """The repository's landing lock (see :func:`repo_lock`)."""
    return repo_lock(common_dir, "land")


def worktrees_lock(common_dir: Path) -> contextlib.AbstractAsyncContextManager[None]:
    """The repository's lock on adding and removing worktrees (see :func:`repo_lock`)."""
    return repo_lock(common_dir, "worktrees")


@contextlib.asynccontextmanager
async def repo_lock(common_dir: Path, name: str) -> AsyncIterator[None]:
    """Hold the repository's lock ``name`` for the body of the ``async with``.

    Args:
        common_dir: the repository's shared git directory (identifies the repository).
        name: which lock (``land`` or ``worktrees``).
    """
    key = common_dir.resolve()
    async with _task_lock(key, name):
        path = lock_path(key, name)
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
