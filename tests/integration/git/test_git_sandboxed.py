"""Worker-side git under a git sandbox (:mod:`loops.git.sandboxed`), with real git and bwrap.

Inside :func:`~loops.git.sandboxed.confined` every git command runs under bubblewrap
with only the repository writable: the hooks and drivers a repository names run there
too, and can write nothing outside it, while git's own work (status, diffs, snapshots,
commits, worktree landings) goes on as before.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from git_helpers import git, write

from loops import errors
from loops.engines.sandbox import Sandbox
from loops.flow import gitstate
from loops.git import sandboxed, worktrees
from loops.git.repo import Repo

if shutil.which("bwrap") is None:
    if os.environ.get("LOOPS_REQUIRE_BWRAP") == "1":
        raise RuntimeError("bwrap is not installed and LOOPS_REQUIRE_BWRAP=1")
    pytest.skip("bwrap is not installed: apt-get install bubblewrap", allow_module_level=True)


@pytest.fixture
def markers() -> Iterator[Path]:
    """A folder outside every repository and not hidden: only unconfined git writes it."""
    folder = Path(tempfile.mkdtemp(prefix="loops-gitsandbox-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def plant(root: Path, markers: Path) -> None:
    """Point core.fsmonitor, two commit hooks and a clean filter at marker commands."""

    def touch(name: str) -> str:
        return f"touch {shlex.quote(str(markers / name))}"

    # git appends arguments: sh takes them as $0.., the command ignores them
    git(root, "config", "core.fsmonitor", f"sh -c {shlex.quote(touch('fsmonitor'))}")
    git(root, "config", "filter.planted.clean", f"sh -c {shlex.quote(touch('filter') + '; cat')}")
    write(root, ".gitattributes", "*.txt filter=planted\n")
    for hook in ("pre-commit", "post-commit"):
        path = write(root / ".git" / "hooks", hook, f"#!/bin/sh\n{touch(hook)}\nexit 0\n")
        path.chmod(0o755)


async def test_planted_config_and_hooks_run_confined_while_git_works(make_repo, markers) -> None:
    root = make_repo(commits=1)
    plant(root, markers)
    write(root, "file0.txt", "changed\n")
    async with sandboxed.confined(Sandbox(), cwd=root):
        repo = await Repo.open(root)
        assert {entry.path for entry in await repo.status()} == {"file0.txt", ".gitattributes"}
        assert "+changed" in await repo.diff("HEAD")
        before = await gitstate.snapshot_tree(root)  # a temporary index outside the repo
        write(root, "file1.txt", "new\n")
        after = await gitstate.snapshot_tree(root)
        assert before and after and before != after
        assert "file1.txt" in await gitstate.diff_trees(root, before, after)
        await repo.run("add", "--all")
        await repo.run("commit", "--quiet", "-m", "sandboxed commit")
    assert git(root, "log", "-1", "--format=%s").strip() == "sandboxed commit"
    assert sorted(p.name for p in markers.iterdir()) == []
    # the same repository without the sandbox runs every planted command: the test can fail
    write(root, "file0.txt", "again\n")
    repo = await Repo.open(root)
    await repo.status()
    await repo.run("commit", "--quiet", "-am", "unconfined commit")
    assert {"fsmonitor", "filter", "pre-commit", "post-commit"} <= {
        p.name for p in markers.iterdir()
    }


async def test_an_isolated_node_lands_under_the_sandbox(make_repo, markers) -> None:
    root = make_repo(commits=1)
    async with sandboxed.confined(Sandbox(), cwd=root):
        wts = worktrees.Worktrees(await Repo.open(root), run_id="run-1")

        async def work(node: worktrees.NodeWorktree) -> bool:
            write(node.path, "src/node.py", "landed = True\n")
            return True

        result = await worktrees.run_isolated(
            wts, node_path="ship/node", work=work, passed=bool, summary=lambda _: "done"
        )
        wts.close()
    assert result.passed and result.landing and result.landing.changed
    assert (root / "src/node.py").read_text() == "landed = True\n"
    assert git(root, "status", "--porcelain") == ""


def test_the_writable_folders_are_read_from_the_dot_git_entry(make_repo, tmp_path) -> None:
    root = make_repo(commits=1)
    (root / "sub").mkdir()
    linked = tmp_path / "linked"
    git(root, "worktree", "add", "--quiet", "-b", "side", str(linked))
    common = (root / ".git").resolve()
    assert sandboxed.repository_folders(root / "sub") == (root.resolve(), common)
    assert sandboxed.repository_folders(linked) == (
        linked.resolve(), common / "worktrees" / "linked", common,
    )  # fmt: skip
    outside = tmp_path / "plain"
    outside.mkdir()
    assert sandboxed.repository_folders(outside) == ()


async def test_a_dot_git_file_rewritten_later_points_git_at_nothing_writable(
    make_repo, markers
) -> None:
    root = make_repo(commits=1)
    other = markers / "other"  # visible inside the sandbox (not under the private /tmp)
    other.mkdir()
    git(other, "init", "--quiet")
    write(other, "a.txt", "a\n")
    git(other, "add", "a.txt")
    git(other, "-c", "user.name=T", "-c", "user.email=t@e", "commit", "--quiet", "-m", "a")
    head = git(other, "rev-parse", "HEAD").strip()
    async with sandboxed.confined(Sandbox(), cwd=root):
        # the agent swaps its .git for a file naming another repository of the user's
        shutil.rmtree(root / ".git")
        (root / ".git").write_text(f"gitdir: {other / '.git'}\n")
        write(root, "file0.txt", "hijack\n")
        repo = await Repo.open(root)
        added = await repo.run("add", "--all", check=False)
        done = await repo.run("commit", "--quiet", "-m", "hijack", check=False)
    assert added.returncode != 0 and "Read-only file system" in added.stderr
    assert done.returncode != 0
    assert git(other, "rev-parse", "HEAD").strip() == head
    assert git(other, "status", "--porcelain") == ""


async def test_the_global_identity_reaches_a_commit_made_in_the_sandbox(
    tmp_path, monkeypatch
) -> None:
    # the global config lives in the (hidden) home: only its identity is passed in
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n\tname = Global Person\n\temail = global@loops.invalid\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "--quiet")
    write(root, "a.txt", "a\n")
    async with sandboxed.confined(Sandbox(), cwd=root):
        repo = await Repo.open(root)
        await repo.run("add", "--all")
        await repo.run("commit", "--quiet", "-m", "identity")
    author = git(root, "log", "-1", "--format=%an <%ae> / %cn <%ce>").strip()
    assert author == ("Global Person <global@loops.invalid> / Global Person <global@loops.invalid>")


async def test_a_missing_git_is_still_git_not_found_under_the_sandbox(make_repo) -> None:
    root = make_repo(commits=1)
    async with sandboxed.confined(Sandbox(), cwd=root):
        with pytest.raises(errors.GitNotFound, match="not found"):
            await Repo.open(root, git="no-such-git-here")
