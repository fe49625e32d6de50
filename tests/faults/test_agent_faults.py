"""Agents that hang, ignore SIGTERM, flood their output or die mid-stream.

One ``loop worker`` process (through a real gateway) runs a misbehaving agent CLI
(``bad_agent.py``). Whatever the agent does, the worker keeps heartbeating and running
other tasks, keeps the output it stores bounded, and kills the agent's whole process
group (children included, SIGKILL after the grace when SIGTERM is ignored).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet import Fleet, wait_until

pytestmark = pytest.mark.timeout(120)

BAD_AGENT = f"{sys.executable} {Path(__file__).with_name('bad_agent.py')}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    f = Fleet(tmp_path_factory.mktemp("agent-faults"), lease_ttl_ms=2000)
    agents = f.root / "agents"
    agents.mkdir()
    f.env["FAKE_AGENT_DIR"] = str(agents)
    f.start_gateway()
    f.start_worker(agent=BAD_AGENT, concurrency=3)
    yield f
    for pids in agents.glob("*.pids"):
        for pid in pids.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    f.close()


def pids_of(fleet: Fleet, task_id: int) -> list[int]:
    path = fleet.root / "agents" / f"{task_id}.pids"
    wait_until(lambda: path.exists() and path.read_text().endswith("\n"))
    return [int(p) for p in path.read_text().split()]


def test_hanging_and_sigterm_ignoring_agents_leave_the_worker_responsive(fleet: Fleet) -> None:
    hung = fleet.create("MODE=hang", max_attempts=1)
    stubborn = fleet.create("MODE=stubborn", max_attempts=1)
    hung_pids, stubborn_pids = pids_of(fleet, hung), pids_of(fleet, stubborn)
    assert all(alive(p) for p in hung_pids + stubborn_pids)
    # both slots hang, the third still serves: the worker is not blocked on them
    quick = fleet.create("MODE=quick")
    wait_until(lambda: fleet.status(quick) == "done", timeout_s=30)
    for task in (hung, stubborn):
        assert fleet.http.post(f"/tasks/{task}/cancel").status_code == 200
    # the group is killed on the next heartbeat; SIGKILL follows an ignored SIGTERM
    wait_until(lambda: not any(alive(p) for p in hung_pids + stubborn_pids), timeout_s=30)
    assert fleet.status(hung) == fleet.status(stubborn) == "cancelled"
    assert fleet.workers[0].poll() is None
    again = fleet.create("MODE=quick")
    wait_until(lambda: fleet.status(again) == "done", timeout_s=30)


def test_a_100_mb_flood_is_bounded_in_the_timeline_the_transcript_and_memory(
    fleet: Fleet,
) -> None:
    task = fleet.create("MODE=flood", max_attempts=1)
    wait_until(lambda: fleet.status(task) in ("done", "failed"), timeout_s=90)
    assert fleet.status(task) == "done"
    with contextlib.closing(sqlite3.connect(fleet.db)) as conn:
        stored = conn.execute(
            "SELECT coalesce(sum(length(data)), 0) FROM events WHERE task_id = ?", (task,)
        ).fetchone()[0]
        kinds = {r[0] for r in conn.execute("SELECT type FROM events WHERE task_id=?", (task,))}
        artifacts = dict(
            conn.execute("SELECT name, size FROM artifacts WHERE task_id = ?", (task,)).fetchall()
        )
    assert stored < 8 * 1024 * 1024, f"{stored} bytes of events for one task"
    assert "output.truncated" in kinds
    assert artifacts["transcript.jsonl"] < 8 * 1024 * 1024
    assert artifacts.get("final_message.md", 0) <= 2 * 1024 * 1024
    status = Path(f"/proc/{fleet.workers[0].pid}/status").read_text()
    peak_kib = int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
    )
    assert peak_kib < 400 * 1024, f"worker peaked at {peak_kib} KiB for a 100 MB flood"


def test_an_agent_dying_mid_stream_fails_the_task_with_its_exit_status(fleet: Fleet) -> None:
    task = fleet.create("MODE=midstream", max_attempts=1)
    wait_until(lambda: fleet.status(task) in ("failed", "blocked", "done"), timeout_s=30)
    assert fleet.status(task) == "failed"
    error = fleet.http.get(f"/tasks/{task}").json()["error"]
    assert "status 3" in error or "exit 3" in error or "code 3" in error, error
    assert fleet.workers[0].poll() is None
