"""Helpers for the git tests: synchronous set-up of real repositories."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    """Run git synchronously in ``cwd`` (test set-up only) and return stdout."""
    result = subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, capture_output=True, text=True, check=True
    )
    return result.stdout


def write(root: Path, rel: str, text: str) -> Path:
    """Write ``text`` to ``root/rel``, creating folders."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def commit(root: Path, message: str, files: dict[str, str]) -> str:
    """Write ``files``, commit them with ``message``, return the new commit id."""
    for rel, text in files.items():
        write(root, rel, text)
    git(root, "add", "--all")
    git(root, "commit", "--quiet", "--cleanup=whitespace", "--file=-", stdin=message)
    return git(root, "rev-parse", "HEAD").strip()
