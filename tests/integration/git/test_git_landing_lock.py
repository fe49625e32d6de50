"""Landings are serialized: across tasks of one process and across processes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from git_helpers import git

from loops.git import locks

LANDING_PROCESS = """
import asyncio, sys
from pathlib import Path
from loops.git.repo import Repo
from loops.git.worktrees import Worktrees

async def main(root, n):
    wts = Worktrees(await Repo.open(root), run_id=f"proc-{n}")
    for k in range(2):
        node = await wts.create(f"node{k}")
        Path(node.path, f"p{n}_{k}.txt").write_text(f"{n} {k}\\n")
        await wts.land(node)
        await wts.remove(node)
    wts.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_three_processes_landing_at_once_all_land(make_repo) -> None:
    root = make_repo(commits=1)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            LANDING_PROCESS,
            str(root),
            str(n),
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(3)
    ]
    results = await asyncio.gather(*(p.communicate() for p in procs))
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
    for n in range(3):
        for k in range(2):
            assert (root / f"p{n}_{k}.txt").read_text() == f"{n} {k}\n"
    merges = git(root, "log", "--first-parent", "--merges", "--format=%s", "main").splitlines()
    assert len(merges) == 6
    assert git(root, "status", "--porcelain") == ""


async def test_the_lock_admits_one_holder_at_a_time(tmp_path: Path) -> None:
    inside = 0
    most = 0
    order: list[str] = []

    async def hold(name: str) -> None:
        nonlocal inside, most
        async with locks.landing_lock(tmp_path):
            inside += 1
            most = max(most, inside)
            order.append(f"{name}+")
            await asyncio.sleep(0.01)
            order.append(f"{name}-")
            inside -= 1

    await asyncio.gather(*(hold(n) for n in "abcd"))
    assert most == 1
    assert all(order[i][0] == order[i + 1][0] for i in range(0, 8, 2))
    assert locks.lock_path(tmp_path).exists()


async def test_a_cancelled_waiter_leaves_the_lock_usable(tmp_path: Path) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with locks.landing_lock(tmp_path):
            entered.set()
            await release.wait()

    first = asyncio.ensure_future(holder())
    await entered.wait()
    waiter = asyncio.ensure_future(holder())
    await asyncio.sleep(0.02)
    waiter.cancel()
    release.set()
    await first
    async with asyncio.timeout(5):
        async with locks.landing_lock(tmp_path):
            pass
    assert waiter.cancelled()
