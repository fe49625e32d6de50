"""Worktree isolation: parallel writers in their own worktrees, landing only on pass.

Each isolated node gets its own branch (``loops/node/<run>/<node>``) and worktree
(under ``<common-dir>/loops/worktrees/<run>/``) from the parent branch's current
commit. When the node passes, its work lands on the parent branch as **one merge
commit** (``--no-ff``), never a fast-forward: every node's landing is then one commit
on the parent's first-parent history that names the node and run, can be reverted as
a whole (``git revert -m 1``), and looks the same whether or not a sibling landed
first (with fast-forwards only the first of several parallel nodes could land that
way, the rest needing merge commits anyway).

The merge is computed in memory (``git merge-tree --write-tree``), so a conflict
touches nothing: the node fails with the conflicting files named, its work is kept on
``loops/conflict/<run>/<node>``, and the parent branch, its working tree and the other
worktrees are as they were. A clean merge is committed with ``git commit-tree`` and
the parent branch advanced to it by a fast-forward of its own working tree (or a
compare-and-swap ``update-ref`` when it is not checked out). Landings are serialized
by :func:`loops.git.locks.landing_lock`. Worktrees are removed after landing or
failure; :func:`prune` removes what a crashed run left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Generic, Literal, TypeVar

from loops import errors
from loops.git import layout, locks
from loops.git import repo as repo_mod
from loops.git.repo import Repo

LandMode = Literal["merge", "branch"]
LAND_MODES: tuple[LandMode, ...] = ("merge", "branch")

_OWNER_FILE = "owner.json"

#: this process's nodes not yet removed, per run folder
_ACTIVE: dict[Path, int] = {}

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class NodeWorktree:
    """One isolated node's worktree.

    Attributes:
        run_id: the run the node belongs to.
        node_path: the node's path in the loop tree.
        path: the worktree's directory (the node's working directory).
        branch: the node's own branch.
        base: the parent branch's commit the worktree started from.
        target: the parent branch the work lands on.
    """

    run_id: str
    node_path: str
    path: Path
    branch: str
    base: str
    target: str


@dataclasses.dataclass(frozen=True, slots=True)
class Landing:
    """How a passing node's work came back.

    Attributes:
        node_path: the node.
        mode: ``"merge"`` (landed on the parent branch) or ``"branch"`` (left for review).
        commit: the merge commit, or the review branch's summary commit; ``None`` when
            the node changed nothing (then nothing is merged).
        branch: the parent branch (merge) or the review branch (branch).
    """

    node_path: str
    mode: LandMode
    commit: str | None
    branch: str

    @property
    def changed(self) -> bool:
        """Whether the node had any work to land."""
        return self.commit is not None


@dataclasses.dataclass(frozen=True, slots=True)
class IsolatedResult(Generic[T]):
    """The result of :func:`run_isolated`.

    Attributes:
        value: what the work returned.
        passed: the verdict of ``passed(value)``.
        landing: how the work came back, when it passed and did not conflict.
        conflict: the conflict that failed the node, when landing conflicted.
    """

    value: T
    passed: bool
    landing: Landing | None = None
    conflict: errors.MergeConflict | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PruneReport:
    """What :func:`prune` found and removed.

    Attributes:
        worktrees: the leftover worktree directories removed.
        branches: the leftover node branches deleted.
        live_runs: runs skipped because their process is still alive.
    """

    worktrees: tuple[Path, ...]
    branches: tuple[str, ...]
    live_runs: tuple[str, ...]


def _check_mode(mode: str) -> LandMode:
    if mode not in LAND_MODES:
        raise errors.InputError(f"land= must be 'merge' or 'branch', not {mode!r}")
    return mode


def _message(subject: str, summary: str, trailers: Sequence[tuple[str, str]]) -> str:
    parts = [" ".join(subject.split())]
    if summary.strip():
        parts.append(summary.strip())
    if trailers:
        parts.append("\n".join(f"{k}: {' '.join(v.split())}" for k, v in trailers))
    return "\n\n".join(parts) + "\n"


def _node_trailers(node: NodeWorktree) -> list[tuple[str, str]]:
    return [("Loops-Run-Id", node.run_id), ("Loops-Node", node.node_path)]


class Worktrees:
    """The isolated worktrees of one run in one repository.

    Args:
        repo: the parent working tree (its checked-out branch is the landing target).
        run_id: the run; names the branches and folders.
        clock: seconds since the epoch, for the owner record.
    """

    def __init__(self, repo: Repo, *, run_id: str, clock: Callable[[], float] = time.time) -> None:
        self.repo = repo
        self.run_id = run_id
        self.run_dir = layout.worktrees_dir(repo.common_dir) / layout.slug(run_id)
        self._clock = clock

    def _write_owner(self) -> None:
        owner = self.run_dir / _OWNER_FILE
        if owner.exists():
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self._clock(),
            "repo": str(self.repo.root),
        }
        tmp = owner.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        tmp.replace(owner)

    async def _target(self) -> tuple[str, str]:
        """The parent branch and its commit, refusing states git would refuse."""
        state = self.repo.state()
        if state.value != "clean":
            await self.repo.require_branch(operation="isolate a node")  # raises with a hint
        result = await self.repo.run(
            "rev-parse", "HEAD^{commit}", "--symbolic-full-name", "HEAD", check=False
        )
        lines = result.stdout.split()
        if result.returncode != 0 or len(lines) != 2:
            raise errors.RepositoryStateError(
                f"cannot isolate a node: {self.repo.root} has no commit yet; "
                "commit once first (worktrees start from the parent's current commit)"
            )
        sha, ref = lines
        if not ref.startswith("refs/heads/"):
            raise errors.RepositoryStateError(
                f"cannot isolate a node: HEAD is detached in {self.repo.root}; "
                "check out a branch first (`git switch -c <name>`)"
            )
        return ref[len("refs/heads/") :], sha

    async def create(self, node_path: str) -> NodeWorktree:
        """Create the node's branch and worktree from the parent branch's current commit."""
        target, base = await self._target()
        # counted before the owner record is written, with no await in between, so a
        # sibling's remove() never closes the run folder under this node
        _ACTIVE[self.run_dir] = _ACTIVE.get(self.run_dir, 0) + 1
        self._write_owner()
        path = self.run_dir / layout.slug(node_path)
        branch = layout.node_branch(self.run_id, node_path)
        try:
            async with locks.worktrees_lock(self.repo.common_dir):
                if path.exists():  # a leftover of an earlier attempt of this run
                    await self.repo.run(
                        "worktree", "remove", "--force", "--force", str(path), check=False
                    )
                    shutil.rmtree(path, ignore_errors=True)
                    await self.repo.run("worktree", "prune", check=False)
                # metadata only under the lock; the checkout itself runs in parallel
                await self.repo.run(
                    "worktree", "add", "--quiet", "--no-checkout", "-B", branch, str(path), base
                )
            await self.repo.run("reset", "--hard", "--quiet", cwd=path)
        except BaseException:
            self._release()
            raise
        return NodeWorktree(
            run_id=self.run_id,
            node_path=node_path,
            path=path,
            branch=branch,
            base=base,
            target=target,
        )

    async def _commit_pending(self, node: NodeWorktree, subject: str, *, allow_empty: bool) -> None:
        layout.ignore_scratch(self.repo.common_dir)
        await self.repo.run("add", "--all", "--", ".", cwd=node.path)
        args = ["commit", "--quiet", "--cleanup=whitespace", "--file=-"]
        if allow_empty:
            args.append("--allow-empty")
        message = _message(subject, "", _node_trailers(node))
        result = await self.repo.run(*args, cwd=node.path, stdin=message, check=False)
        if result.returncode != 0 and "nothing to commit" not in result.stdout:
            raise repo_mod.failure(result, cwd=node.path)

    async def land(
        self,
        node: NodeWorktree,
        *,
        mode: LandMode = "merge",
        summary: str = "",
        subject: str | None = None,
        trailers: Sequence[tuple[str, str]] = (),
    ) -> Landing:
        """Bring a passing node's work back.

        Uncommitted work in the worktree is committed first (scratch notes excluded).
        With ``mode="merge"`` the work lands on the parent branch as one merge
        commit; with ``mode="branch"`` a summary commit is added and the work is left
        on ``loops/review/<run>/<node>``, and nothing is merged.

        Raises:
            MergeConflict: the work conflicts with the parent branch; carries the
                files. Nothing was changed; the work is kept on a conflict branch.
            RepositoryStateError: the parent working tree is mid-merge/rebase, or has
                uncommitted changes in files the landing would overwrite.
        """
        mode = _check_mode(mode)
        all_trailers = [*_node_trailers(node), *trailers]
        if mode == "branch":
            return await self._leave_on_branch(node, summary, subject, all_trailers)
        await self._commit_pending(node, f"loops: work of {node.node_path}", allow_empty=False)
        message = _message(
            subject or f"loops: land {node.node_path} (run {node.run_id})", summary, all_trailers
        )
        async with locks.landing_lock(self.repo.common_dir):
            tip, target_tip = await self._tips(node.branch, node.target)
            if tip == node.base:
                return Landing(node_path=node.node_path, mode=mode, commit=None, branch=node.target)
            tree = await self._merged_tree(node, target_tip, tip)
            made = await self.repo.run(
                "commit-tree", tree, "-p", target_tip, "-p", tip, "-F", "-", stdin=message
            )
            merge = made.stdout.strip()
            await self._advance(node.target, merge, expected=target_tip)
        return Landing(node_path=node.node_path, mode=mode, commit=merge, branch=node.target)

    async def _leave_on_branch(
        self,
        node: NodeWorktree,
        summary: str,
        subject: str | None,
        trailers: Sequence[tuple[str, str]],
    ) -> Landing:
        message = _message(
            subject or f"loops: {node.node_path} ready for review (run {node.run_id})",
            summary,
            trailers,
        )
        layout.ignore_scratch(self.repo.common_dir)
        await self.repo.run("add", "--all", "--", ".", cwd=node.path)
        await self.repo.run(
            "commit", "--quiet", "--allow-empty", "--cleanup=whitespace", "--file=-",
            cwd=node.path, stdin=message,
        )  # fmt: skip
        tip, _ = await self._tips(node.branch, node.target)
        review = layout.review_branch(node.run_id, node.node_path)
        await self.repo.run("update-ref", f"refs/heads/{review}", tip)
        return Landing(node_path=node.node_path, mode="branch", commit=tip, branch=review)

    async def _tips(self, branch: str, target: str) -> tuple[str, str]:
        result = await self.repo.run(
            "rev-parse",
            f"refs/heads/{branch}^{{commit}}",
            f"refs/heads/{target}^{{commit}}",
        )
        tip, target_tip = result.stdout.split()
        return tip, target_tip

    async def _merged_tree(self, node: NodeWorktree, target_tip: str, tip: str) -> str:
        result = await self.repo.run(
            "merge-tree", "--write-tree", "--name-only", "--no-messages", target_tip, tip,
            check=False,
        )  # fmt: skip
        lines = result.stdout.splitlines()
        if result.returncode == 0 and lines:
            return lines[0]
        if result.returncode == 1 and lines:
            files = tuple(dict.fromkeys(line for line in lines[1:] if line))
            kept = layout.conflict_branch(node.run_id, node.node_path)
            await self.repo.run("update-ref", f"refs/heads/{kept}", tip)
            raise errors.MergeConflict(
                f"node {node.node_path!r} conflicts with {node.target} in "
                f"{', '.join(files) or 'unknown files'}; nothing was merged, "
                f"its work is kept on branch {kept}",
                files=files,
            )
        raise repo_mod.failure(result, cwd=self.repo.root)

    async def _advance(self, target: str, commit: str, *, expected: str) -> None:
        """Move ``target`` to ``commit``; its working tree follows if it is checked out."""
        checked_out = await self._checkout_of(target)
        if checked_out is None:
            await self.repo.run("update-ref", f"refs/heads/{target}", commit, expected)
            return
        # a fast-forward checks every file before writing any: it applies whole or not at all
        result = await self.repo.run(
            "merge", "--ff-only", "--quiet", commit, cwd=checked_out, check=False
        )
        if result.returncode != 0:
            said = next(iter(result.stderr.strip().splitlines()), "git refused")
            if "overwritten" in result.stderr:
                raise errors.RepositoryStateError(
                    f"cannot land on {target}: its working tree {checked_out} has uncommitted "
                    f"changes the landing would overwrite ({said}); commit or stash them"
                )
            raise errors.RepositoryStateError(
                f"cannot land on {target}: it moved outside loops while landing ({said}); "
                "nothing was changed, run the node again"
            )

    async def _checkout_of(self, branch: str) -> Path | None:
        """The working tree that has ``branch`` checked out, if any."""
        if await self.repo.current_branch() == branch:
            return self.repo.root
        async with locks.worktrees_lock(self.repo.common_dir):
            result = await self.repo.run("worktree", "list", "--porcelain")
        path: Path | None = None
        for line in result.stdout.splitlines():
            if line.startswith("worktree "):
                path = Path(line[len("worktree ") :])
            elif line == f"branch refs/heads/{branch}":
                return path
        return None

    async def remove(self, node: NodeWorktree) -> None:
        """Remove the node's worktree and its temporary branch (review/conflict branches stay)."""
        try:
            async with locks.worktrees_lock(self.repo.common_dir):
                await self.repo.run(
                    "worktree", "remove", "--force", "--force", str(node.path), check=False
                )
                if node.path.exists():
                    shutil.rmtree(node.path, ignore_errors=True)
                    await self.repo.run("worktree", "prune", check=False)
                await self.repo.run("branch", "-D", "--quiet", node.branch, check=False)
        finally:
            self._release()

    def _release(self) -> None:
        left = _ACTIVE.get(self.run_dir, 1) - 1
        if left > 0:
            _ACTIVE[self.run_dir] = left
            return
        _ACTIVE.pop(self.run_dir, None)
        self.close()

    def close(self) -> None:
        """Forget the run: remove its folder once its worktrees are gone.

        Called by :meth:`remove` when this process has no node of the run left; safe
        to call again.
        """
        if _ACTIVE.get(self.run_dir):
            return
        owner = self.run_dir / _OWNER_FILE
        if not self.run_dir.is_dir():
            return
        if not [p for p in self.run_dir.iterdir() if p.name != _OWNER_FILE]:
            owner.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()


async def run_isolated(
    worktrees: Worktrees,
    *,
    node_path: str,
    work: Callable[[NodeWorktree], Awaitable[T]],
    passed: Callable[[T], bool],
    land: LandMode = "merge",
    summary: Callable[[T], str] = lambda _: "",
    trailers: Callable[[T], Sequence[tuple[str, str]]] = lambda _: (),
) -> IsolatedResult[T]:
    """Run ``work`` in a fresh worktree, land it if it passed, always remove the worktree.

    Args:
        worktrees: the run's worktrees.
        node_path: the node's path in the loop tree.
        work: the node's job, given its worktree (run it with ``cwd=node.path``).
        passed: whether the value means the node passed.
        land: ``"merge"`` onto the parent branch, or ``"branch"`` to leave for review.
        summary: the landing commit's body, from the value.
        trailers: extra trailers for the landing commit, from the value.

    Returns:
        The value, the verdict, and the landing or the conflict. A conflict is a
        result, not an exception: the caller fails the node with its message.
    """
    land = _check_mode(land)
    node = await worktrees.create(node_path)
    try:
        value = await work(node)
        if not passed(value):
            return IsolatedResult(value=value, passed=False)
        try:
            landing = await worktrees.land(
                node, mode=land, summary=summary(value), trailers=trailers(value)
            )
        except errors.MergeConflict as conflict:
            return IsolatedResult(value=value, passed=True, conflict=conflict)
        return IsolatedResult(value=value, passed=True, landing=landing)
    finally:
        await worktrees.remove(node)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: a run folder without an owner record younger than this may be being created
_OWNERLESS_GRACE_S = 60.0


def _owner_alive(run_dir: Path, *, host: str, alive: Callable[[int], bool], now_s: float) -> bool:
    try:
        owner = json.loads((run_dir / _OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        try:
            return now_s - run_dir.stat().st_mtime < _OWNERLESS_GRACE_S
        except OSError:
            return False
    if owner.get("host") != host:
        return True  # another machine's run: we cannot tell, so leave it
    pid = owner.get("pid")
    return isinstance(pid, int) and (pid == os.getpid() or alive(pid))


async def prune(
    repo: Repo,
    *,
    dry_run: bool = False,
    alive: Callable[[int], bool] = _alive,
    host: str | None = None,
    now_s: Callable[[], float] = time.time,
) -> PruneReport:
    """Remove the worktrees and node branches of runs whose process is gone.

    A run's folder under ``<common-dir>/loops/worktrees/`` holds an owner record
    (pid and host). When that process no longer exists on this host, its worktrees
    are removed, its ``loops/node/...`` branches deleted and git's worktree metadata
    pruned. Review and conflict branches are never touched.

    Args:
        repo: any working tree of the repository.
        dry_run: report what would be removed, change nothing.
        alive: whether a pid is a live process (a parameter for tests).
        host: this machine's name; the current host by default.
        now_s: the clock; a run folder with no owner record yet is left alone for a
            minute (its run may be creating it).

    Returns:
        What was (or would be) removed, and the live runs left alone.
    """
    here = host or socket.gethostname()
    root = layout.worktrees_dir(repo.common_dir)
    dead: list[Path] = []
    live: list[str] = []
    if root.is_dir():
        for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            if _owner_alive(run_dir, host=here, alive=alive, now_s=now_s()):
                live.append(run_dir.name)
            else:
                dead.append(run_dir)
    async with locks.worktrees_lock(repo.common_dir):
        return await _prune_locked(repo, dead, live, dry_run=dry_run)


async def _prune_locked(
    repo: Repo, dead: list[Path], live: list[str], *, dry_run: bool
) -> PruneReport:
    removed: list[Path] = []
    for run_dir in dead:
        for path in sorted(p for p in run_dir.iterdir() if p.is_dir()):
            removed.append(path)
            if not dry_run:
                await repo.run("worktree", "remove", "--force", "--force", str(path), check=False)
                shutil.rmtree(path, ignore_errors=True)
        if not dry_run:
            shutil.rmtree(run_dir, ignore_errors=True)
    if not dry_run:
        await repo.run("worktree", "prune")
    branches = await _dead_branches(repo, {d.name for d in dead}, live=set(live))
    if branches and not dry_run:
        await repo.run("branch", "-D", "--quiet", *branches, check=False)
    return PruneReport(worktrees=tuple(removed), branches=tuple(branches), live_runs=tuple(live))


async def _dead_branches(repo: Repo, dead: set[str], *, live: set[str]) -> list[str]:
    """Node branches of dead runs, and of runs with no folder left at all."""
    result = await repo.run(
        "for-each-ref", "--format=%(refname:short)", f"refs/heads/{layout.NODE_BRANCH_PREFIX}/"
    )
    found: list[str] = []
    for name in result.stdout.split():
        run = name[len(layout.NODE_BRANCH_PREFIX) + 1 :].split("/", 1)[0]
        if run in dead or run not in live:
            found.append(name)
    current = await repo.current_branch()
    return [b for b in found if b != current]
