"""Real temporary git repositories for the git layer's tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from git_helpers import git, write


@pytest.fixture(autouse=True)
def _isolated_git_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # the developer's global config (signing, hooks, default branch) must not leak in
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(key, raising=False)
    yield


RepoFactory = Callable[..., Path]


@pytest.fixture
def make_repo(tmp_path: Path) -> RepoFactory:
    """Factory: a fresh repository on branch ``main`` with an identity set per repo."""
    counter = iter(range(1000))

    def factory(*, commits: int = 0, name: str | None = None) -> Path:
        path = tmp_path / (name or f"repo{next(counter)}")
        path.mkdir()
        git(path, "init", "--quiet", "--initial-branch=main")
        git(path, "config", "user.name", "Test Author")
        git(path, "config", "user.email", "test@example.com")
        for i in range(commits):
            write(path, f"file{i}.txt", f"content {i}\n")
            git(path, "add", "--all")
            git(path, "commit", "--quiet", "-m", f"commit {i}")
        return path

    return factory
