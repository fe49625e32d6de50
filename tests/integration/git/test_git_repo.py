"""Repo: running git, reading history and refusing states git refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from git_helpers import commit, git, write

from loops import errors
from loops.git.repo import Repo, RepoState, is_repo


async def test_open_outside_a_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(errors.NotARepository, match="not inside a git working tree"):
        await Repo.open(tmp_path)
    assert await is_repo(tmp_path) is False


async def test_missing_git_executable_is_a_clear_error(make_repo) -> None:
    root = make_repo()
    with pytest.raises(errors.GitNotFound, match="not found: install git"):
        await Repo.open(root, git="git-that-does-not-exist")
    assert await is_repo(root, git="git-that-does-not-exist") is False


async def test_open_from_a_subdirectory_finds_the_top(make_repo) -> None:
    root = make_repo(commits=1)
    (root / "sub").mkdir()
    repo = await Repo.open(root / "sub")
    assert repo.root == root.resolve()
    assert repo.common_dir == (root / ".git").resolve()
    assert await is_repo(root / "sub")


async def test_log_since_has_subjects_bodies_trailers_and_files(make_repo) -> None:
    root = make_repo(commits=1)
    repo = await Repo.open(root)
    start = await repo.head()
    commit(
        root,
        "feat: parser\n\nParse the header first.\n\nWhy: speed.\n\n"
        "Loops-Run-Id: r1\nLoops-Node: a/b\n",
        {"src/parser.py": "x = 1\n", "notes dir/with space.txt": "n\n"},
    )
    git(root, "mv", "file0.txt", "renamed.txt")
    git(root, "commit", "--quiet", "-m", "chore: rename")
    log = await repo.log(start)
    assert [c.subject for c in log] == ["chore: rename", "feat: parser"]
    feat = log[1]
    assert feat.body == "Parse the header first.\n\nWhy: speed."
    assert feat.trailer("loops-run-id") == "r1"
    assert feat.trailer("Loops-Node") == "a/b"
    assert {(f.status, f.path) for f in feat.files} == {
        ("A", "src/parser.py"),
        ("A", "notes dir/with space.txt"),
    }
    rename = log[0].files[0]
    assert (rename.status, rename.old_path, rename.path) == ("R", "file0.txt", "renamed.txt")
    assert log[0].parents == (feat.sha,)


async def test_empty_repository_has_no_head_and_no_log(make_repo) -> None:
    repo = await Repo.open(make_repo())
    assert await repo.head() is None
    assert await repo.log() == ()
    assert await repo.current_branch() == "main"


async def test_status_and_diff_see_the_agents_changes(make_repo) -> None:
    root = make_repo(commits=1)
    repo = await Repo.open(root)
    start = await repo.head()
    assert not await repo.is_dirty()
    write(root, "file0.txt", "changed\n")
    write(root, "new.txt", "new\n")
    status = {e.path: e for e in await repo.status()}
    assert set(status) == {"file0.txt", "new.txt"}
    assert status["new.txt"].untracked
    assert "+changed" in await repo.diff(start)


async def test_detached_head_is_refused_with_a_hint(make_repo) -> None:
    root = make_repo(commits=2)
    git(root, "checkout", "--quiet", "--detach", "HEAD~1")
    repo = await Repo.open(root)
    with pytest.raises(errors.RepositoryStateError, match=r"HEAD is detached.*git switch -c"):
        await repo.require_branch(operation="commit a milestone")


async def test_mid_rebase_is_refused_with_a_hint(make_repo) -> None:
    root = make_repo(commits=1)
    commit(root, "main change", {"f.txt": "main\n"})
    git(root, "checkout", "--quiet", "-b", "topic", "HEAD~1")
    commit(root, "topic change", {"f.txt": "topic\n"})
    rebase = git_fails(root, "rebase", "main")
    assert rebase != 0
    repo = await Repo.open(root)
    assert repo.state() is RepoState.REBASING
    with pytest.raises(errors.RepositoryStateError, match=r"is rebasing.*git rebase --abort"):
        await repo.require_branch(operation="commit a milestone")


async def test_a_failing_command_names_argv_and_git_message(make_repo) -> None:
    repo = await Repo.open(make_repo(commits=1))
    expected = r"`git rev-parse --verify nope` failed"
    with pytest.raises(errors.GitCommandFailed, match=expected) as info:
        await repo.run("rev-parse", "--verify", "nope")
    assert info.value.argv[:2] == ("git", "rev-parse")


def git_fails(cwd: Path, *args: str) -> int:
    import subprocess

    return subprocess.run(["git", *args], cwd=cwd, capture_output=True).returncode
