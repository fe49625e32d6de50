"""The ``loop`` console script as a real process on a temp database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

LOOP = Path(sys.executable).with_name("loop")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "LOOPS_"))}
    clean["QUEUE_DB_PATH"] = str(tmp_path / "queue.sqlite")
    return clean


def loop(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOOP), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_readme_flow(env: dict[str, str], tmp_path: Path) -> None:
    migrate = loop(env, tmp_path, "db:migrate")
    assert migrate.returncode == 0 and "Applied 0001_init" in migrate.stdout
    created = loop(env, tmp_path, "tasks:create", "--prompt", "Check outstanding tasks",
                   "--priority", "2", "--json")  # fmt: skip
    assert created.returncode == 0, created.stderr
    task = json.loads(created.stdout)
    status = json.loads(loop(env, tmp_path, "status", "--json").stdout)
    assert status["counts"]["queued"] == 1
    bad = loop(env, tmp_path, "tasks:get", "999")
    assert bad.returncode == 1
    assert bad.stderr.strip() == "error: no task with id 999"
    assert (
        json.loads(loop(env, tmp_path, "tasks:get", str(task["id"]), "--json").stdout)["id"]
        == (task["id"])
    )


def test_events_tail_follow_streams_new_events(env: dict[str, str], tmp_path: Path) -> None:
    assert loop(env, tmp_path, "db:migrate").returncode == 0
    with subprocess.Popen(
        [str(LOOP), "events:tail", "--follow", "--json", "--interval-ms", "20"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as follower:  # fmt: skip
        try:
            time.sleep(0.3)
            assert loop(env, tmp_path, "tasks:create", "--prompt", "late").returncode == 0
            assert follower.stdout is not None
            event = json.loads(follower.stdout.readline())
            assert event["type"] == "task.created" and event["task_id"] == 1
        finally:
            follower.terminate()
            follower.wait(timeout=10)
