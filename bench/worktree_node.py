"""Time to create, land and remove one isolated worktree node, against plain git commands.

Run:  .venv/bin/python bench/worktree_node.py [--files 10000] [--runs 9]

Set-up: a repository of ``--files`` files (100 folders of 100 small files), one commit.
Each measured node makes a worktree from ``main``, writes one new file, and brings it
back as a merge commit on ``main``, then the worktree and its branch are removed.

* ``loops``: ``Worktrees.create`` + write + ``Worktrees.land`` (commit of the node's
  work, in-memory ``merge-tree``, ``commit-tree``, fast-forward of ``main``'s working
  tree, under the landing lock) + ``Worktrees.remove``.
* ``git``: the plain commands doing the same, each one process:
  ``git worktree add -b B PATH main``, write, ``git -C PATH add -A``,
  ``git -C PATH commit -m ...``, ``git merge --no-ff -m ... B``,
  ``git worktree remove --force PATH``, ``git branch -D B``.

The two are interleaved run by run (git, loops, git, loops, ...) so drift in the
machine's load hits both alike. Figures: median with min-max, the ratio of medians, and
the median of the per-pair ratios (each loops run over the git run just before it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loops.git.repo import Repo
from loops.git.worktrees import Worktrees


def sh(cwd: Path, *args: str) -> None:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"git {' '.join(args)} failed: {done.stderr.strip()}")


def make_repo(root: Path, files: int) -> None:
    root.mkdir()
    sh(root, "init", "--quiet", "--initial-branch=main")
    sh(root, "config", "user.name", "Bench")
    sh(root, "config", "user.email", "bench@example.com")
    sh(root, "config", "gc.auto", "0")  # no background gc racing the timings
    per_dir = 100
    for i in range(files):
        folder = root / f"pkg{i // per_dir:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"mod{i % per_dir:03d}.py").write_text(f"VALUE = {i}\n" * 5)
    sh(root, "add", "--all")
    sh(root, "commit", "--quiet", "-m", "initial")
    sh(root, "gc", "--quiet")  # pack the 10,000 blobs: as a long-lived repository would be


def plain(root: Path, work: Path, n: int) -> float:
    branch, path = f"plain/{n}", work / f"plain-{n}"
    started = time.perf_counter()
    sh(root, "worktree", "add", "--quiet", "-b", branch, str(path), "main")
    (path / f"plain_{n}.txt").write_text(f"node {n}\n")
    sh(path, "add", "--all")
    sh(path, "commit", "--quiet", "-m", f"work {n}")
    sh(root, "merge", "--quiet", "--no-ff", "-m", f"land {n}", branch)
    sh(root, "worktree", "remove", "--force", str(path))
    sh(root, "branch", "-D", "--quiet", branch)
    return time.perf_counter() - started


async def ours(repo: Repo, n: int) -> float:
    worktrees = Worktrees(repo, run_id=f"bench-{n}")
    started = time.perf_counter()
    node = await worktrees.create("node")
    (node.path / f"loops_{n}.txt").write_text(f"node {n}\n")
    landing = await worktrees.land(node, summary=f"node {n}")
    await worktrees.remove(node)
    elapsed = time.perf_counter() - started
    worktrees.close()
    assert landing.commit is not None
    return elapsed


def describe(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):.1f} ms ({min(ms):.1f}-{max(ms):.1f})"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    os.environ["GIT_CONFIG_GLOBAL"] = os.devnull
    os.environ["GIT_CONFIG_NOSYSTEM"] = "1"
    with tempfile.TemporaryDirectory(prefix="loops-bench-") as tmp:
        root = Path(tmp) / "repo"
        work = Path(tmp) / "plain-worktrees"
        work.mkdir()
        make_repo(root, args.files)
        repo = await Repo.open(root)
        plain(root, work, -1)  # warm the page cache for both
        await ours(repo, -1)
        git_times: list[float] = []
        loops_times: list[float] = []
        for n in range(args.runs):
            git_times.append(plain(root, work, n))
            loops_times.append(await ours(repo, n))
        ratio = statistics.median(loops_times) / statistics.median(git_times)
        # each loops run is paired with the git run just before it: drift hits both
        paired = [ours_s / git_s for ours_s, git_s in zip(loops_times, git_times, strict=True)]
        git_version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout
        print(f"{git_version.strip()}, Python {sys.version.split()[0]}, {args.files} files")
        print(f"plain git commands : {describe(git_times)}")
        print(f"loops worktrees    : {describe(loops_times)}")
        print(f"ratio (medians)    : {ratio:.2f}x")
        print(
            f"paired ratios      : median {statistics.median(paired):.2f}x "
            f"({min(paired):.2f}-{max(paired):.2f})"
        )


if __name__ == "__main__":
    asyncio.run(main())
