"""Read-only views of a git work tree: the files git tracks or would, tree snapshots, diffs.

A snapshot is the id of a git tree object holding the work tree's state at that
moment (tracked and untracked files, ignored ones left out), written through a
temporary index so the user's index, branch and stash are never touched.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from loops import errors
from loops.git.repo import git_env, run_git


async def _git(cwd: Path, *args: str, index: Path | None = None) -> tuple[int, str]:
    """Run git through :func:`~loops.git.repo.run_git` (the one, sandboxed, boundary).

    ``index`` is a temporary index file to use instead of the repository's.
    """
    env = git_env()
    if index is not None:
        env["GIT_INDEX_FILE"] = str(index)
    writable = () if index is None else (index.parent,)
    try:
        result = await run_git(args, cwd=cwd, env=env, check=False, writable=writable)
    except (errors.GitNotFound, errors.NotARepository):
        return 127, ""
    return result.returncode, result.stdout


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
        code, _ = await _git(cwd, "add", "-A", ".", index=temp_index)
        if code != 0:
            return None
        code, tree = await _git(cwd, "write-tree", index=temp_index)
    return tree.strip() if code == 0 else None


async def diff_trees(cwd: Path, before: str, after: str) -> str:
    """``git diff --stat --patch`` between two snapshots ('' when identical)."""
    code, out = await _git(cwd, "diff", "--stat", "--patch", "--no-color", before, after)
    return out if code == 0 else ""
