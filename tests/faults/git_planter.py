"""An agent for ``test_sandboxed_git``: plants git config and hooks that run a program.

Run (sandboxed) in a git work tree, it points ``core.fsmonitor``, a ``pre-commit`` and a
``post-commit`` hook and a ``.gitattributes`` clean filter at commands that create a
marker file in the folder ``argv[1]`` (outside its workspace), then changes a tracked
file, so that the worker's own git (the diff artifact, the milestone commit) has work
to do. None of these commands may ever run outside the sandbox.
"""

from __future__ import annotations

import pathlib
import shlex
import subprocess
import sys

sys.stdin.read()
markers = pathlib.Path(sys.argv[1])
git_dir = pathlib.Path(".git")


def touch(name: str) -> str:
    return f"touch {shlex.quote(str(markers / name))}"


def git(*args: str) -> None:
    subprocess.run(["git", *args], check=True)


# git appends arguments: sh takes them as $0.., the command ignores them
git("config", "core.fsmonitor", f"sh -c {shlex.quote(touch('fsmonitor'))}")
git("config", "filter.planted.clean", f"sh -c {shlex.quote(touch('filter') + '; cat')}")
pathlib.Path(".gitattributes").write_text("*.txt filter=planted\n")
for hook in ("pre-commit", "post-commit"):
    path = git_dir / "hooks" / hook
    path.write_text(f"#!/bin/sh\n{touch(hook)}\nexit 0\n")
    path.chmod(0o755)
pathlib.Path("notes.txt").write_text("changed by the agent\n")
print("planted")
