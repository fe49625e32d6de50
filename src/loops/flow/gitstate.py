"""Read-only views of a git work tree: the files git tracks or would, tree snapshots, diffs.

A snapshot is the id of a git tree object holding the work tree's state at that
moment (tracked and untracked files, ignored ones left out), written through a
temporary index so the user's index, branch and stash are never touched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path


async def _git(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            "-C",
            str(cwd),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
        )
    except FileNotFoundError:
        return 127, ""
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode("utf-8", errors="surrogateescape")


async def listed_files(cwd: Path) -> list[str] | None:
    """Files under ``cwd`` that git tracks or would track, relative; ``None`` outside git."""
    code, out = await _git(cwd, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if code != 0:
        return None
    return [p for p in out.split("\0") if p]


async def snapshot_tree(cwd: Path) -> str | None:
    """A git tree id of the work tree's current state, or ``None`` outside git."""
    code, index = await _git(cwd, "rev-parse", "--path-format=absolute", "--git-path", "index")
    if code != 0:
        return None
    with tempfile.TemporaryDirectory(prefix="loops-snap-") as tmp:
        temp_index = Path(tmp) / "index"
        real = Path(index.strip())
        if real.is_file():  # start from the real index so unchanged files are not rehashed
            shutil.copyfile(real, temp_index)
        env = {"GIT_INDEX_FILE": str(temp_index)}
        code, _ = await _git(cwd, "add", "-A", ".", env=env)
        if code != 0:
            return None
        code, tree = await _git(cwd, "write-tree", env=env)
    return tree.strip() if code == 0 else None


async def diff_trees(cwd: Path, before: str, after: str) -> str:
    """``git diff --stat --patch`` between two snapshots ('' when identical)."""
    code, out = await _git(cwd, "diff", "--stat", "--patch", "--no-color", before, after)
    return out if code == 0 else ""
