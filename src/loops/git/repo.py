"""A small async wrapper over the real ``git`` executable, run with argv lists.

Every git call in loops goes through :meth:`Repo.run`, which translates git's failures
into :mod:`loops.errors` once: a missing executable is :class:`~loops.errors.GitNotFound`,
a directory outside any repository :class:`~loops.errors.NotARepository`, a missing
identity :class:`~loops.errors.GitIdentityMissing`, anything else
:class:`~loops.errors.GitCommandFailed` with the argv and git's own message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from loops import errors
from loops.git import commits, sandboxed

#: environment variables that would point git at another repository than ours
_REDIRECTING_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX")

_IDENTITY_HINTS = ("Please tell me who you are", "unable to auto-detect email address")


@dataclasses.dataclass(frozen=True, slots=True)
class GitResult:
    """What one git command did.

    Attributes:
        argv: the full command line.
        returncode: the exit status.
        stdout: standard output (decoded as UTF-8, undecodable bytes escaped).
        stderr: standard error, likewise.
    """

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class RepoState(enum.Enum):
    """An operation git has in progress in a working tree."""

    CLEAN = "clean"
    """No operation in progress."""
    MERGING = "merging"
    """A merge stopped for conflicts (``MERGE_HEAD`` exists)."""
    REBASING = "rebasing"
    """A rebase is in progress."""
    CHERRY_PICKING = "cherry-picking"
    """A cherry-pick stopped (``CHERRY_PICK_HEAD`` exists)."""
    REVERTING = "reverting"
    """A revert stopped (``REVERT_HEAD`` exists)."""
    BISECTING = "bisecting"
    """A bisect is in progress."""


#: marker files in the git dir, checked in this order
_STATE_MARKERS: tuple[tuple[str, RepoState], ...] = (
    ("rebase-merge", RepoState.REBASING),
    ("rebase-apply", RepoState.REBASING),
    ("MERGE_HEAD", RepoState.MERGING),
    ("CHERRY_PICK_HEAD", RepoState.CHERRY_PICKING),
    ("REVERT_HEAD", RepoState.REVERTING),
    ("BISECT_LOG", RepoState.BISECTING),
)


@dataclasses.dataclass(frozen=True, slots=True)
class StatusEntry:
    """One line of ``git status --porcelain``: a path and its two status letters."""

    index: str
    worktree: str
    path: str

    @property
    def untracked(self) -> bool:
        """Whether git does not track the path yet."""
        return self.index == "?"


def git_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment git runs in: the caller's, minus redirections, never prompting.

    Args:
        base: the environment to start from; the process environment by default.

    Returns:
        A new mapping with ``GIT_DIR`` and friends removed, prompts disabled and
        messages in English (so the few git messages we match on are stable).
    """
    # os.environ is read here, not in config: this is the subprocess boundary
    env = dict(os.environ if base is None else base)
    for key in _REDIRECTING_ENV:
        env.pop(key, None)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    return env


async def run_git(
    args: Sequence[str],
    *,
    cwd: Path,
    git: str = "git",
    env: Mapping[str, str] | None = None,
    check: bool = True,
    stdin: str | None = None,
    writable: Sequence[Path] = (),
) -> GitResult:
    """Run ``git ARGS`` in ``cwd`` and return what it did.

    Inside a worker's task this runs under the task's git sandbox
    (:mod:`loops.git.sandboxed`): the one place worker-side git is confined.

    Args:
        args: the arguments after ``git`` (an argv list, never a shell string).
        cwd: the directory to run in.
        git: the git executable.
        env: the environment (see :func:`git_env`); built from the process one if omitted.
        check: raise on a non-zero exit.
        stdin: text fed to git's standard input.
        writable: folders git must write besides the repository, under a git sandbox.

    Returns:
        The command's result.

    Raises:
        GitNotFound: the executable does not exist.
        NotARepository: git says ``cwd`` is not in a repository.
        GitIdentityMissing: a commit needs a user name and email that are not set.
        GitCommandFailed: any other non-zero exit, when ``check`` is true.
        SandboxUnavailable: under a git sandbox, bwrap cannot start.
    """
    argv = (git, *args)
    if not cwd.is_dir():
        raise errors.NotARepository(f"{cwd} does not exist")
    command, run_env = sandboxed.wrap(
        argv, cwd=cwd, env=git_env() if env is None else env, writable=writable
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            cwd=cwd,
            env=run_env,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise errors.GitNotFound(
            f"git executable {git!r} not found: install git 2.38 or newer"
        ) from exc
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    result = GitResult(
        argv=argv,
        returncode=proc.returncode if proc.returncode is not None else -1,
        stdout=out.decode("utf-8", "surrogateescape"),
        stderr=err.decode("utf-8", "surrogateescape"),
    )
    if check and result.returncode != 0:
        raise failure(result, cwd=cwd)
    return result


def failure(result: GitResult, *, cwd: Path) -> errors.GitError:
    """The most specific error for a failed git command."""
    stderr = result.stderr.strip()
    if "not a git repository" in stderr:
        return errors.NotARepository(f"{cwd} is not inside a git repository: run `git init`")
    if any(hint in stderr for hint in _IDENTITY_HINTS):
        return errors.GitIdentityMissing()
    first = next((line for line in stderr.splitlines() if line.strip()), "no message")
    command = " ".join(result.argv[1:4])
    return errors.GitCommandFailed(
        f"`git {command}` failed (exit {result.returncode}): {first}",
        argv=result.argv,
        returncode=result.returncode,
        stderr=stderr,
    )


class Repo:
    """One git working tree: its top-level directory and its git directories.

    Build it with :meth:`open`, which checks that the path is inside a working tree.

    Attributes:
        root: the working tree's top-level directory.
        git_dir: this working tree's git directory (``.git``, or
            ``.git/worktrees/<name>`` for a linked worktree).
        common_dir: the git directory shared by all worktrees of the repository.
        git: the git executable.
    """

    __slots__ = ("_env", "common_dir", "git", "git_dir", "root")

    def __init__(
        self,
        root: Path,
        *,
        git_dir: Path,
        common_dir: Path,
        git: str = "git",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.git_dir = git_dir
        self.common_dir = common_dir
        self.git = git
        self._env = git_env(env) if env is not None else git_env()

    def __repr__(self) -> str:
        return f"Repo({str(self.root)!r})"

    @classmethod
    async def open(
        cls, path: Path | str, *, git: str = "git", env: Mapping[str, str] | None = None
    ) -> Repo:
        """Open the working tree that contains ``path``.

        Raises:
            GitNotFound: git is not installed.
            NotARepository: ``path`` is not inside a git working tree.
        """
        where = Path(path).resolve()
        result = await run_git(
            ["rev-parse", "--show-toplevel", "--absolute-git-dir", "--git-common-dir"],
            cwd=where,
            git=git,
            env=git_env(env) if env is not None else None,
            check=False,
        )
        lines = result.stdout.splitlines()
        if result.returncode != 0 or len(lines) != 3:
            said = next((ln for ln in result.stderr.splitlines() if ln.strip()), "")
            raise errors.NotARepository(
                f"{where} is not inside a git working tree ({said or 'no work tree'}): "
                "run `git init` there or pass a repository"
            )
        top, git_dir, common = (Path(line) for line in lines)
        common = common if common.is_absolute() else (where / common)
        return cls(top, git_dir=git_dir, common_dir=common.resolve(), git=git, env=env)

    async def run(
        self,
        *args: str,
        check: bool = True,
        stdin: str | None = None,
        cwd: Path | None = None,
    ) -> GitResult:
        """Run ``git ARGS`` in this working tree (see :func:`run_git`)."""
        return await run_git(
            args, cwd=cwd or self.root, git=self.git, env=self._env, check=check, stdin=stdin
        )

    async def head(self) -> str | None:
        """The commit id HEAD points at, or ``None`` before the first commit."""
        result = await self.run("rev-parse", "--verify", "-q", "HEAD^{commit}", check=False)
        return result.stdout.strip() or None

    async def current_branch(self) -> str | None:
        """The checked-out branch's short name, or ``None`` on a detached HEAD."""
        result = await self.run("symbolic-ref", "-q", "--short", "HEAD", check=False)
        return result.stdout.strip() or None

    def state(self) -> RepoState:
        """The operation git has in progress in this working tree, if any."""
        for marker, state in _STATE_MARKERS:
            if (self.git_dir / marker).exists():
                return state
        return RepoState.CLEAN

    async def require_branch(self, *, operation: str) -> str:
        """The checked-out branch, after checking git is in a state that allows ``operation``.

        Raises:
            RepositoryStateError: a rebase, merge, cherry-pick, revert or bisect is in
                progress, or HEAD is detached.
        """
        state = self.state()
        if state is not RepoState.CLEAN:
            raise errors.RepositoryStateError(
                f"cannot {operation}: {self.root} is {state.value}; "
                f"finish or abort it first (e.g. `git {_abort_hint(state)}`)"
            )
        branch = await self.current_branch()
        if branch is None:
            raise errors.RepositoryStateError(
                f"cannot {operation}: HEAD is detached in {self.root}; "
                "check out a branch first (`git switch -c <name>`)"
            )
        return branch

    async def status(self) -> tuple[StatusEntry, ...]:
        """The working tree's changes (untracked files included, ignored ones not)."""
        result = await self.run("status", "--porcelain=v1", "-z", "--untracked-files=all")
        entries: list[StatusEntry] = []
        parts = result.stdout.split("\0")
        i = 0
        while i < len(parts):
            item = parts[i]
            i += 1
            if len(item) < 4:
                continue
            entries.append(StatusEntry(index=item[0], worktree=item[1], path=item[3:]))
            if item[0] in "RC":
                i += 1  # the rename's source path follows
        return tuple(entries)

    async def is_dirty(self) -> bool:
        """Whether the working tree has any change, untracked files included."""
        return bool(await self.status())

    async def diff(self, since: str | None, *, paths: Sequence[str] = ()) -> str:
        """The patch from ``since`` (or the empty tree) to the working tree, untracked excluded."""
        base = since or await self.empty_tree()
        result = await self.run("diff", "--no-color", "--no-ext-diff", base, "--", *paths)
        return result.stdout

    async def empty_tree(self) -> str:
        """The id of the empty tree in this repository's object format."""
        result = await self.run("hash-object", "-t", "tree", "--stdin", stdin="")
        return result.stdout.strip()

    async def log(
        self,
        since: str | None = None,
        *,
        until: str = "HEAD",
        limit: int | None = None,
        grep: str | None = None,
        first_parent: bool = False,
    ) -> tuple[commits.Commit, ...]:
        """The commits reachable from ``until`` but not from ``since``, newest first.

        Args:
            since: the exclusive lower bound (e.g. the commit a run started at); all
                history when ``None``.
            until: the inclusive upper bound.
            limit: at most this many commits.
            grep: only commits whose message contains this fixed string.
            first_parent: follow only first parents (a branch's own history).

        Returns:
            The parsed commits; empty before the first commit.
        """
        args = ["log", "-z", "--name-status", "--no-color", f"--format={commits.LOG_FORMAT}"]
        if limit is not None:
            args.append(f"--max-count={max(limit, 0)}")
        if grep is not None:
            args += ["--fixed-strings", f"--grep={grep}"]
        if first_parent:
            args.append("--first-parent")
        args.append(f"{since}..{until}" if since else until)
        args.append("--")
        result = await self.run(*args, check=False)
        if result.returncode != 0:
            if until == "HEAD" and await self.head() is None:
                return ()  # no commits yet
            raise failure(result, cwd=self.root)
        return commits.parse_log(result.stdout)


def _abort_hint(state: RepoState) -> str:
    return {
        RepoState.REBASING: "rebase --abort",
        RepoState.MERGING: "merge --abort",
        RepoState.CHERRY_PICKING: "cherry-pick --abort",
        RepoState.REVERTING: "revert --abort",
        RepoState.BISECTING: "bisect reset",
    }.get(state, "status")


async def is_repo(path: Path | str, *, git: str = "git") -> bool:
    """Whether ``path`` is inside a git working tree (``False`` if git is missing)."""
    where = Path(path)
    if not where.is_dir():
        return False
    try:
        result = await run_git(
            ["rev-parse", "--is-inside-work-tree"], cwd=where, git=git, check=False
        )
    except errors.GitNotFound:
        return False
    return result.returncode == 0 and result.stdout.strip() == "true"
