"""``unchanged(globs)``: the protected files (e.g. the tests) were not touched.

An agent must not pass a gate by editing the tests. When a run starts, the condition
hashes every file matching its globs; each check hashes them again and fails on any
file changed, added or deleted since. In a git work tree, files git ignores (caches,
build outputs) are left out; elsewhere every matching file counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from loops import errors
from loops.flow import gitstate, globs
from loops.flow.conditions import Condition
from loops.flow.context import Context
from loops.flow.outcome import Outcome, Verdict

Snapshot = Mapping[str, str]


def walk_files(cwd: Path) -> list[str]:
    """Every file under ``cwd`` (``.git`` left out), relative POSIX paths."""
    found: list[str] = []
    for root, dirs, files in os.walk(cwd):
        dirs[:] = [d for d in dirs if d != ".git"]
        rel_root = Path(root).relative_to(cwd)
        found.extend((rel_root / f).as_posix() for f in files)
    return found


def _hash_files(cwd: Path, paths: Sequence[str]) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for rel in paths:
        try:
            hashes[rel] = hashlib.sha256((cwd / rel).read_bytes()).hexdigest()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            continue  # listed by git but gone from the work tree: absent
    return hashes


async def snapshot(cwd: Path, patterns: Sequence[globs.Pattern]) -> dict[str, str]:
    """Hash every file under ``cwd`` matched by ``patterns`` (git-ignored files excluded).

    Returns:
        Relative POSIX path -> sha256 of the content.
    """
    listed = await gitstate.listed_files(cwd)
    if listed is None:
        listed = await asyncio.to_thread(walk_files, cwd)
    chosen = sorted(p for p in listed if globs.matches(patterns, p))
    return await asyncio.to_thread(_hash_files, cwd, chosen)


def differences(before: Snapshot, after: Snapshot) -> tuple[list[str], list[str], list[str]]:
    """Files changed, added and deleted between two snapshots, each sorted."""
    changed = sorted(p for p in before.keys() & after.keys() if before[p] != after[p])
    added = sorted(after.keys() - before.keys())
    deleted = sorted(before.keys() - after.keys())
    return changed, added, deleted


def _listing(label: str, paths: list[str]) -> str:
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    return f"{label} {shown}"


class Unchanged(Condition):
    """Met when no file matching the globs changed, appeared or vanished since the run began."""

    kind: ClassVar[str] = "unchanged"

    def __init__(self, patterns: Sequence[str], name: str | None = None) -> None:
        if isinstance(patterns, str):
            patterns = [patterns]
        if not patterns:
            raise errors.ConstructionError("unchanged() needs at least one glob, e.g. 'tests/**'")
        self.globs = tuple(patterns)
        self.patterns = globs.compile_patterns(self.globs)
        self.name = name or f"unchanged({', '.join(self.globs)})"

    def fields(self) -> dict[str, Any]:
        """The globs."""
        return {"globs": list(self.globs)}

    async def prepare(self, ctx: Context) -> None:
        """Take the baseline at the start of the run."""
        ctx.run.memo[id(self)] = await snapshot(ctx.cwd, self.patterns)

    async def check(self, ctx: Context, last: Outcome | None) -> Verdict:
        """Compare the matching files with the baseline."""
        baseline: Snapshot | None = ctx.run.memo.get(id(self))
        if baseline is None:  # fail closed: without a baseline nothing can be compared
            return Verdict(
                False,
                f"{self.name} has no baseline: it compares with the start of a run, so it "
                "must be part of the job passed to loops.run / loop run",
            )
        current = await snapshot(ctx.cwd, self.patterns)
        changed, added, deleted = differences(baseline, current)
        if not (changed or added or deleted):
            return Verdict(True, f"{len(current)} protected files unchanged since the run began")
        parts = [
            _listing(label, paths)
            for label, paths in (("changed", changed), ("added", added), ("deleted", deleted))
            if paths
        ]
        return Verdict(
            False, "protected files were modified since the run began: " + "; ".join(parts)
        )


def unchanged(*patterns: str | Sequence[str], name: str | None = None) -> Condition:
    """Met when files matching the gitignore-style ``patterns`` are as they were at run start.

    Accepts ``unchanged("tests/**")``, ``unchanged("tests/**", "conftest.py")`` or
    ``unchanged(["tests/**"])``.
    """
    flat: list[str] = []
    for item in patterns:
        if isinstance(item, str):
            flat.append(item)
        else:
            flat.extend(item)
    return Unchanged(flat, name)
