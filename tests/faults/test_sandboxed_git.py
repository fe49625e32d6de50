"""``loop worker --sandbox bwrap`` runs its own git in the task's sandbox too.

The worker runs git in the task's work tree (the diff artifact, grounding, snapshots,
milestone commits), and git obeys the repository's ``.git/config`` and hooks, which the
sandboxed agent can write. Here the agent plants a ``core.fsmonitor`` command, a
``pre-commit`` and a ``post-commit`` hook and a ``.gitattributes`` clean filter, each
creating a marker outside the workspace; the worker then makes its diff artifact and a
milestone commit, and no marker is ever created.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from fleet import Fleet, wait_until

if shutil.which("bwrap") is None:
    if os.environ.get("LOOPS_REQUIRE_BWRAP") == "1":
        raise RuntimeError("bwrap is not installed and LOOPS_REQUIRE_BWRAP=1")
    pytest.skip("bwrap is not installed: apt-get install bubblewrap", allow_module_level=True)

pytestmark = pytest.mark.timeout(90)

#: the planting agent lives in the repository (an agent's own installation stays visible)
PLANTER = Path(__file__).with_name("git_planter.py")

#: a loop file whose one agent turn (the planter) ends in a milestone commit
COMMIT_LOOP = """
from loops import agent_job

job = agent_job("plant", commit={"subject": "planted milestone"})
"""


def _git(work: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(work), *args], check=True, capture_output=True, text=True
    )
    return done.stdout


def test_a_sandboxed_workers_own_git_runs_no_program_the_agent_planted(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    markers = Path("/nonexistent")
    try:
        # outside the workspace and not hidden: only an unconfined git could write here
        markers = Path(tempfile.mkdtemp(prefix="loops-gitsandbox-", dir="/var/tmp"))
        _git(fleet.work, "init", "-q")
        _git(fleet.work, "config", "user.name", "Loops Test")
        _git(fleet.work, "config", "user.email", "test@loops.invalid")
        (fleet.work / "notes.txt").write_text("first\n")
        _git(fleet.work, "add", "notes.txt")
        _git(fleet.work, "commit", "-q", "-m", "start")
        trusted = tmp_path / "loops"
        trusted.mkdir()
        (trusted / "commit.loop.py").write_text(COMMIT_LOOP)
        fleet.start_gateway()
        agent = f"{sys.executable} {PLANTER} {markers}"
        sandbox = ("--sandbox", "bwrap", "--loop-dir", str(trusted))
        fleet.start_worker(*sandbox, agent=agent, concurrency=1)
        task = fleet.create(str(trusted / "commit.loop.py"), type="loop")
        wait_until(lambda: fleet.status(task) in ("done", "failed", "blocked"), timeout_s=60)
        assert fleet.status(task) == "done", fleet.logs()
        # the agent did plant everything, and the worker did run git over it
        assert _git(fleet.work, "config", "core.fsmonitor").strip()
        assert (fleet.work / ".git" / "hooks" / "post-commit").exists()
        assert "planted milestone" in _git(fleet.work, "log", "-1", "--format=%s")
        with sqlite3.connect(fleet.db) as conn:
            kinds = {row[0] for row in conn.execute(
                "SELECT kind FROM artifacts WHERE task_id = ?", (task,)
            )}  # fmt: skip
        assert "diff" in kinds, kinds
        assert sorted(p.name for p in markers.iterdir()) == []
    finally:
        fleet.close()
        shutil.rmtree(markers, ignore_errors=True)
