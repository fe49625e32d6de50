"""kill -9 of a worker at random seeded points of a 6-node loop run: it always finishes.

A ``type=loop`` task runs a 6-node dag (a -> b, c -> d -> e -> f) whose nodes each run
a mock-engine agent turn; three of them write a milestone commit. Workers (``loop
worker --local`` processes) are killed with SIGKILL when the run has written a seeded
random number of marker lines, until one finishes the task. Then:

- the task is done;
- every node's body ran exactly once after its last checkpoint: the marker files the
  node bodies write name the run attempt; no body started in an attempt later than
  the one recorded in the node's checkpoint, and that attempt ended it exactly once;
- no milestone commit was made twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loops import config
from loops.queue.tasks import TaskStatus
from loops.services.queue import QueueService, task_spec

LOOP = str(Path(sys.executable).parent / "loop")
NODES = ("a", "b", "c", "d", "e", "f")
COMMITTING = ("a", "d", "f")

LOOP_FILE = """
import asyncio
import os
from pathlib import Path

from loops import agent_job, dag, fn_job

MARKERS = Path(os.environ["DURABLE_MARKERS"])


def node(name, commit):
    agent = agent_job(f"work on {name}", name="agent", commit=commit)

    async def body(ctx):
        attempt = ctx.run.checkpoints.attempt
        with (MARKERS / f"{name}.log").open("a") as out:
            out.write(f"start {attempt}\\n")
        outcome = await agent(ctx.child("agent"))
        await asyncio.sleep(0.01)
        with (MARKERS / f"{name}.log").open("a") as out:
            out.write(f"end {attempt}\\n")
        return outcome

    return fn_job(body, name=name)


job = dag(
    name="ship",
    nodes={
        "a": node("a", True),
        "b": {"job": node("b", False), "needs": ["a"]},
        "c": {"job": node("c", False), "needs": ["a"]},
        "d": {"job": node("d", True), "needs": ["b", "c"]},
        "e": {"job": node("e", False), "needs": ["d"]},
        "f": {"job": node("f", True), "needs": ["e"]},
    },
)
"""

MOCK_SCRIPT = '{"default": {"text": "did it", "edits": {"work.txt": "work"}, "delay_s": 0.05}}'


def wait_until(predicate: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


class Trial:
    """One seeded trial: its own repository, queue database and marker folder."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.repo = root / "repo"
        self.markers = root / "markers"
        self.markers.mkdir(parents=True)
        self.repo.mkdir()
        git(self.repo, "init", "-q", "-b", "main")
        git(self.repo, "config", "user.email", "t@example.com")
        git(self.repo, "config", "user.name", "Test")
        (self.repo / "README").write_text("x\n")
        git(self.repo, "add", "README")
        git(self.repo, "commit", "-qm", "init")
        (root / "ship.loop.py").write_text(LOOP_FILE)
        (root / "mock.json").write_text(MOCK_SCRIPT)
        self.env = {
            **os.environ,
            "QUEUE_DB_PATH": str(root / "queue.sqlite"),
            "WORKER_LEASE_TTL_MS": "400",
            "DURABLE_MARKERS": str(self.markers),
        }
        self.env.pop("LOOPS_CONFIG", None)
        self.service = QueueService.open(config.load_settings(env=self.env, cwd=root))
        spec = task_spec(
            {
                "prompt": str(root / "ship.loop.py"),
                "type": "loop",
                "cwd": str(self.repo),
                "max_attempts": 50,
            }
        )
        self.task_id = self.service.create_task(spec).task.id
        self.kills = 0

    def worker(self) -> subprocess.Popen[bytes]:
        argv = [LOOP, "worker", "--local", "--max-tasks", "1", "--provider", "mock",
                "--mock-script", str(self.root / "mock.json")]  # fmt: skip
        with (self.root / "worker.log").open("ab") as log:
            return subprocess.Popen(argv, env=self.env, cwd=self.root, stdout=log, stderr=log)

    def marker_lines(self) -> int:
        return sum(len(p.read_text().splitlines()) for p in self.markers.glob("*.log"))

    def _ended(self, proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
        return lambda: proc.poll() is not None or self.finished()

    def finished(self) -> bool:
        return self.status().value in ("done", "failed", "blocked")

    def status(self) -> TaskStatus:
        return self.service.get_task(self.task_id).status

    def _reached(self, target: int, proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
        return lambda: self.marker_lines() >= target or proc.poll() is not None

    def run(self, max_kills: int) -> None:
        for _ in range(self.rng.randint(1, max_kills)):
            target = self.marker_lines() + self.rng.randint(1, 6)
            proc = self.worker()
            try:
                wait_until(self._reached(target, proc))
                time.sleep(self.rng.uniform(0, 0.06))
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            self.kills += 1
            if self.status() is TaskStatus.DONE:
                return
        # the last worker runs the task to its end; one whose attempt ended in a retry
        # (e.g. git still locked by a killed worker's orphaned git process) exits after
        # its one task, so another takes the task over, as a fleet would
        deadline = time.monotonic() + 90
        while self.status().value not in ("done", "failed", "blocked"):
            assert time.monotonic() < deadline, "the task did not finish"
            proc = self.worker()
            try:
                wait_until(self._ended(proc), 90)
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()

    def check(self) -> bool:
        """Check the invariants; whether the run resumed with nodes restored."""
        task = self.service.get_task(self.task_id)
        assert task.status is TaskStatus.DONE, (task.status, task.error)
        saved = self.service.get_state("run.checkpoint", task_id=self.task_id)
        for name in NODES:
            record = saved["jobs"][f"ship/{name}"]
            assert record["outcome"]["status"] == "pass"
            attempt = record["attempt"]
            lines = (self.markers / f"{name}.log").read_text().split("\n")
            starts = [int(x.split()[1]) for x in lines if x.startswith("start")]
            ends = [int(x.split()[1]) for x in lines if x.startswith("end")]
            assert max(starts) == attempt, (name, lines, attempt)  # nothing ran after it
            assert ends.count(attempt) == 1, (name, lines, attempt)
        log = git(self.repo, "log", "--format=%(trailers:key=Loops-Node,valueonly)")
        nodes = sorted(line for line in log.split() if line)
        assert nodes == sorted(f"ship/{n}/agent" for n in COMMITTING)
        earlier = [r for r in saved["jobs"].values() if r["attempt"] < saved["run"]["attempt"]]
        events = self.service.list_events(task_id=self.task_id, limit=1000)
        resumed = [e for e in events if e.type == "run.resumed"]
        if earlier:  # the last attempt restored what earlier ones finished, and said so
            assert resumed
            assert resumed[-1].data["attempt"] == saved["run"]["attempt"]
        return bool(earlier)

    def close(self) -> None:
        self.service.close()


def _trials(tmp_path: Path, seeds: range, max_kills: int) -> None:
    resumed = 0
    for seed in seeds:
        trial = Trial(tmp_path / f"seed-{seed}", seed)
        try:
            trial.run(max_kills)
            resumed += trial.check()
        finally:
            trial.close()
    assert resumed, "no trial resumed a run with restored nodes: the kills missed the run"


def test_killed_workers_resume_the_run_where_it_stopped(tmp_path: Path) -> None:
    _trials(tmp_path, range(6), max_kills=2)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_thirty_seeded_kill_trials(tmp_path: Path) -> None:
    _trials(tmp_path, range(100, 130), max_kills=4)
