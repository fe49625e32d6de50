"""`loop worktrees:prune` through the installed entry point, as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LOOP = Path(sys.executable).parent / "loop"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def test_prune_removes_a_crashed_runs_leftovers_and_reports_json(tmp_path: Path) -> None:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    root = tmp_path / "repo"
    root.mkdir()
    for args in (
        ["init", "--quiet", "--initial-branch=main"],
        ["config", "user.name", "T"],
        ["config", "user.email", "t@example.com"],
        ["commit", "--quiet", "--allow-empty", "-m", "first"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True, env=env)
    leftover = root / ".git" / "loops" / "worktrees" / "dead-run" / "node"
    leftover.parent.mkdir(parents=True)
    (leftover.parent / "owner.json").write_text(
        json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename})
    )
    subprocess.run(
        ["git", "worktree", "add", "--quiet", "-b", "loops/node/dead-run/node", str(leftover)],
        cwd=root, check=True, env=env,
    )  # fmt: skip

    done = subprocess.run(
        [str(LOOP), "worktrees:prune", "--cwd", str(root), "--json"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["worktrees"] == [str(leftover)]
    assert report["branches"] == ["loops/node/dead-run/node"]
    assert not leftover.exists()
    assert git(root, "branch", "--list", "loops/*") == ""

    outside = subprocess.run(
        [str(LOOP), "worktrees:prune", "--cwd", str(tmp_path)], capture_output=True, text=True
    )
    assert outside.returncode == 1
    assert outside.stderr.startswith("error: ") and "Traceback" not in outside.stderr
