"""Worker-side git under the run's sandbox: the repository's own config runs no program free.

A sandboxed worker runs git itself in a task's work tree (the diff artifact, grounding,
snapshots, milestone commits, worktree landings), and git obeys the repository's
``.git/config`` and ``.git/hooks`` (``core.fsmonitor``, hooks, filter, diff and merge
drivers), which the sandboxed agent can write. So while a worker runs a task it sets a
*git sandbox* for it (:func:`confined`), and :func:`~loops.git.repo.run_git`, the one
git subprocess boundary, runs every git command inside it: the check sandbox's floor
(the file system read-only, homes hidden, a private ``/tmp``, the network cut off, a
small environment) with only the repository writable: its work tree, its git directory
and its common directory, found by reading the ``.git`` entry (never by running git)
when the task starts, before its agent runs. A hook or driver the agent planted runs as
confined as the agent itself.

The user's global git config is hidden with the homes, so the commit identity is read
from it outside, once per task (``git config --global``, run in ``/``, which reads no
repository's config), and passed in the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from loops.engines.sandbox import CHECK_ENV_KEEP, Sandbox

#: the environment git keeps inside its sandbox: the check's, git's own settings from
#: :func:`~loops.git.repo.git_env`, a snapshot's temporary index and the identity
GIT_ENV_KEEP: tuple[str, ...] = (
    *CHECK_ENV_KEEP, "LC_ALL", "GIT_TERMINAL_PROMPT", "GIT_INDEX_FILE",
    "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
)  # fmt: skip

#: the identity variables read from the user's global config, and the key of each
_IDENTITY: tuple[tuple[str, str], ...] = (
    ("GIT_AUTHOR_NAME", "user.name"),
    ("GIT_AUTHOR_EMAIL", "user.email"),
    ("GIT_COMMITTER_NAME", "user.name"),
    ("GIT_COMMITTER_EMAIL", "user.email"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class GitSandbox:
    """The sandbox worker-side git runs in for one task.

    Attributes:
        sandbox: the confinement (writable: the repository's folders only).
        identity: ``GIT_AUTHOR_*``/``GIT_COMMITTER_*`` values from the global config.
    """

    sandbox: Sandbox
    identity: Mapping[str, str]


_CURRENT: contextvars.ContextVar[GitSandbox | None] = contextvars.ContextVar(
    "loops_git_sandbox", default=None
)


@contextlib.asynccontextmanager
async def confined(sandbox: Sandbox | None, *, cwd: Path, git: str = "git") -> AsyncIterator[None]:
    """Run every git command of this context inside ``sandbox``'s floor (``None``: as is).

    The repository writable inside is the one containing ``cwd`` now; git started in
    another directory (an agent-rewritten ``.git`` file) can write nothing.
    """
    if sandbox is None:
        yield
        return
    box = dataclasses.replace(
        sandbox, network=False, env_keep=GIT_ENV_KEEP, writable=repository_folders(cwd)
    )
    token = _CURRENT.set(GitSandbox(sandbox=box, identity=await _global_identity(git)))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def wrap(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], writable: Sequence[Path] = ()
) -> tuple[list[str], dict[str, str]]:
    """``argv`` and ``env`` as the current git sandbox runs them (unchanged without one).

    ``writable`` adds folders git must write besides the repository (a temporary index).

    Raises:
        SandboxUnavailable: bwrap is missing or cannot start here.
    """
    current = _CURRENT.get()
    if current is None or shutil.which(argv[0]) is None:
        # no sandbox, or no git to run: the caller's exec reports the missing git
        return list(argv), dict(env)
    box = current.sandbox
    if writable:
        box = dataclasses.replace(box, writable=(*box.writable, *writable))
    kept = box.filter_env({**current.identity, **env})
    return box.wrap(argv, cwd=cwd), kept


def repository_folders(cwd: Path) -> tuple[Path, ...]:
    """The work tree, git dir and common dir of the repository containing ``cwd``.

    Found by reading the nearest ``.git`` entry (a folder, or a ``gitdir:`` file and
    its ``commondir``), never by running git; empty outside a repository.
    """
    here = Path(cwd).resolve()
    for folder in (here, *here.parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return (folder, dot_git.resolve())
        if dot_git.is_file():
            git_dir = _gitdir_of(dot_git)
            if git_dir is None:
                return (folder,)
            common = _common_dir_of(git_dir)
            return tuple(dict.fromkeys((folder, git_dir, common)))
    return ()


def _gitdir_of(dot_git: Path) -> Path | None:
    try:
        text = dot_git.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("gitdir:"):
            target = Path(line[len("gitdir:") :].strip())
            return (dot_git.parent / target).resolve()
    return None


def _common_dir_of(git_dir: Path) -> Path:
    try:
        text = (git_dir / "commondir").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return git_dir
    return (git_dir / text).resolve() if text else git_dir


async def _global_identity(git: str) -> dict[str, str]:
    """The ``GIT_AUTHOR_*``/``GIT_COMMITTER_*`` the user's global config sets."""
    values: dict[str, str] = {}
    for key in ("user.name", "user.email"):
        try:
            proc = await asyncio.create_subprocess_exec(
                git, "config", "--global", "--get", key, cwd="/",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        except OSError:
            return {}
        out, _ = await proc.communicate()
        value = out.decode("utf-8", "replace").strip()
        if proc.returncode == 0 and value:
            values[key] = value
    return {var: values[key] for var, key in _IDENTITY if key in values}
