"""``loop worker`` as a real process, with a fake agent CLI: crashes, shutdown, cancel.

Each test runs twice: the worker leasing through a real ``loop gateway`` process, and
leasing straight from the SQLite file (``--local``). The test reads and writes the same
file through the queue service, as another process would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loops import config, errors
from loops.queue.tasks import Task, TaskStatus
from loops.services.queue import QueueService, task_spec

LOOP = str(Path(sys.executable).parent / "loop")
FAKE_AGENT = str(Path(__file__).parents[1] / "fakes" / "mode_agent.py")


def wait_until(predicate: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Queue:
    """One database for a test module, served by a ``loop gateway`` process when ``via``
    is "gateway" (started once: it takes seconds to import its web stack)."""

    def __init__(self, root: Path, via: str) -> None:
        self.via = via
        self.root = root
        self.env = {
            **os.environ,
            "QUEUE_DB_PATH": str(root / "queue.sqlite"),
            "WORKER_LEASE_TTL_MS": "900",
            "WORKER_SHUTDOWN_GRACE_MS": "300",
        }
        self.env.pop("LOOPS_CONFIG", None)
        self.service = QueueService.open(config.load_settings(env=self.env, cwd=root))
        self.gateway: subprocess.Popen[bytes] | None = None
        if via == "gateway":
            self.start_gateway()

    def start_gateway(self) -> None:
        port = free_port()
        self.env["WORKER_API_BASE_URL"] = url = f"http://127.0.0.1:{port}"
        with (self.root / "gateway.log").open("wb") as log:
            self.gateway = subprocess.Popen(
                [LOOP, "gateway", "--port", str(port)],
                cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout_s=30)

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.terminate()
            self.gateway.wait(10)
        self.service.close()


class Env:
    """One test's workers, agents and working directory over the module's queue."""

    def __init__(self, queue: Queue, tmp_path: Path) -> None:
        self.queue = queue
        self.via = queue.via
        self.service = queue.service
        self.root = tmp_path
        self.agents = tmp_path / "agents"
        self.agents.mkdir()
        self.work = tmp_path / "work"
        self.work.mkdir()
        self.env = {**queue.env, "FAKE_AGENT_DIR": str(self.agents)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.created: list[Task] = []

    def create(self, prompt: str, **fields: Any) -> Task:
        data = {"prompt": prompt, "provider": "command", "cwd": str(self.work), **fields}
        task = self.service.create_task(task_spec(data)).task
        self.created.append(task)
        return task

    def worker(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        where = ["--local"] if self.via == "local" else []
        argv = [LOOP, "worker", *where, "--provider", "command",
                "--agent-command", f"{sys.executable} {FAKE_AGENT}", *args]  # fmt: skip
        with (self.root / f"worker{len(self.procs)}.log").open("wb") as log:
            proc = subprocess.Popen(
                argv, cwd=self.root, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    def agent_pid(self, task: Task) -> int:
        pid_file = self.agents / f"{task.id}.pid"
        return int(wait_until(lambda: pid_file.exists() and pid_file.read_text()))

    def prompts(self, task: Task) -> list[str]:
        path = self.agents / f"{task.id}.prompts"
        return [p for p in path.read_text().split("\n=====\n") if p] if path.exists() else []

    def events(self, task: Task) -> list[str]:
        return [e.type for e in self.service.list_events(task_id=task.id, limit=10_000)]

    def status(self, task: Task) -> TaskStatus:
        return self.service.get_task(task.id).status

    def logs(self) -> str:
        logs = [*sorted(self.root.glob("*.log")), self.queue.root / "gateway.log"]
        return "\n".join(p.read_text() for p in logs if p.exists())

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for pid_file in self.agents.glob("*.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        for task in self.created:  # leave nothing for the next test's worker to lease
            with contextlib.suppress(errors.InvalidTransition):
                self.service.cancel(task.id)


@pytest.fixture(scope="module", params=["gateway", "local"])
def queue(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Queue]:
    q = Queue(tmp_path_factory.mktemp(f"queue-{request.param}"), request.param)
    yield q
    q.close()


@pytest.fixture
def env(queue: Queue, tmp_path: Path) -> Iterator[Env]:
    e = Env(queue, tmp_path)
    yield e
    e.close()


def test_a_task_runs_to_done_with_steps_and_artifacts(env: Env) -> None:
    task = env.create("say hi MODE=quick")
    proc = env.worker("--max-tasks", "1")
    assert proc.wait(timeout=30) == 0, env.logs()
    final = env.service.get_task(task.id)
    assert final.status is TaskStatus.DONE, final.error
    assert [s.name for s in env.service.list_steps(task.id)] == ["work"]
    kinds = {a.kind.value for a in env.service.list_artifacts(task_id=task.id)}
    assert {"transcript", "final_message"} <= kinds
    assert "LOOP_TASK_ID" not in env.prompts(task)[0]  # env, not prompt text


def test_kill_9_mid_task_is_re_leased_after_the_ttl_and_finished_once(env: Env) -> None:
    (env.work / "check.py").write_text(
        "import pathlib, sys\nsys.exit(0 if pathlib.Path('value.txt').exists() else 1)\n"
    )
    task = env.create("fix it MODE=sleep-once", check=f"{sys.executable} check.py")
    first = env.worker()
    agent = env.agent_pid(task)
    wait_until(lambda: env.status(task) is TaskStatus.RUNNING)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    os.killpg(agent, signal.SIGKILL)  # the orphaned agent of the dead worker
    (env.agents / f"{task.id}.pid").unlink()
    second = env.worker("--max-tasks", "1")
    assert second.wait(timeout=30) == 0, env.logs()
    final = env.service.get_task(task.id)
    assert final.status is TaskStatus.DONE, final.error
    assert final.attempts == 2
    events = env.events(task)
    assert events.count("task.completed") == 1
    assert "task.lease_expired" in events
    prompts = env.prompts(task)
    assert len(prompts) == 2
    assert "interrupted and is resumed" in prompts[1]


def test_sigterm_kills_the_agent_and_releases_the_lease_without_an_attempt(env: Env) -> None:
    task = env.create("long work MODE=sleep")
    proc = env.worker()
    agent = env.agent_pid(task)
    wait_until(lambda: env.status(task) is TaskStatus.RUNNING)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, env.logs()
    wait_until(lambda: not alive(agent), timeout_s=5)
    final = env.service.get_task(task.id)
    assert final.status is TaskStatus.QUEUED
    assert final.attempts == 0
    assert "task.released" in env.events(task)
    assert "task.completed" not in env.events(task)


def test_cancel_is_seen_on_the_next_heartbeat_and_kills_the_agent(env: Env) -> None:
    task = env.create("long work MODE=sleep")
    proc = env.worker()
    agent = env.agent_pid(task)
    wait_until(lambda: env.status(task) is TaskStatus.RUNNING)
    env.service.cancel(task.id, reason="changed my mind")
    wait_until(lambda: not alive(agent), timeout_s=5)
    assert proc.poll() is None  # the worker goes on
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    final = env.service.get_task(task.id)
    assert final.status is TaskStatus.CANCELLED
    assert "task.completed" not in env.events(task)
    assert "cancelled; stopping the agent" in env.logs()


def test_a_rate_limited_turn_waits_and_runs_again_without_an_attempt(env: Env) -> None:
    task = env.create("busy API MODE=ratelimit-once")
    proc = env.worker("--max-tasks", "1")
    assert proc.wait(timeout=60) == 0, env.logs()
    final = env.service.get_task(task.id)
    assert final.status is TaskStatus.DONE, final.error
    assert final.attempts == 1
    assert len(env.prompts(task)) == 2  # the same turn, run again after the wait
    waits = [
        e for e in env.service.list_events(task_id=task.id, limit=1000)
        if e.type == "engine.rate_limit_wait"
    ]  # fmt: skip
    assert waits and waits[0].data["wait_s"] == 1.0


def test_a_stale_token_complete_is_refused_and_changes_nothing(env: Env) -> None:
    task = env.create("never run MODE=quick")
    leased = env.service.lease_task(task.id, worker="w", ttl_ms=60_000)
    stale = leased.lease.token + "x"
    if env.via == "gateway":  # the REST answer: 409 lease_conflict
        url = env.env["WORKER_API_BASE_URL"]
        answer = httpx.post(
            f"{url}/tasks/{task.id}/complete", json={"lease_token": stale, "status": "done"}
        )
        assert answer.status_code == 409
        assert answer.json()["error"]["code"] == "lease_conflict"
    else:
        with pytest.raises(errors.LeaseConflict):
            env.service.complete(task.id, lease_token=stale, status="done")
    after = env.service.get_task(task.id)
    assert after.status is TaskStatus.LEASED and after.result is None
    assert "task.completed" not in env.events(task)


def test_an_agent_printing_a_megabyte_and_more_still_completes(env: Env) -> None:
    # 1.5 MB of output (lines with spaces: long runs of word characters are slow to
    # redact): the completion once carried the whole last message, over the gateway's
    # 1 MiB body limit, and the worker met a 413 or a reset (ReadError) and never completed
    task = env.create("print a lot")
    emit = "for i in range(1500): print('line', str(i).rjust(8), 'word ' * 197)"
    loud = f'{sys.executable} -c "{emit}"'
    where = ["--local"] if env.via == "local" else []
    argv = [LOOP, "worker", *where, "--provider", "command", "--agent-command", loud,
            "--max-tasks", "1"]  # fmt: skip
    with (env.root / "worker-loud.log").open("wb") as log:
        proc = subprocess.Popen(
            argv, cwd=env.root, env={**env.env, "WORKER_LEASE_TTL_MS": "20000"},
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    env.procs.append(proc)
    assert proc.wait(timeout=25) == 0, env.logs()
    final = env.service.get_task(task.id)
    assert final.status is TaskStatus.DONE, final.error
    kinds = {a.kind.value for a in env.service.list_artifacts(task_id=task.id)}
    assert {"transcript", "final_message"} <= kinds


def test_an_agent_creates_a_child_of_its_task_with_the_loop_cli(env: Env) -> None:
    # the agent runs plain `loop tasks:create-child` (no parent id: LOOP_TASK_ID, no
    # database: through LOOP_API_BASE_URL when the worker leases from a gateway); the
    # worker's PATH lacks the venv, so `loop` is found only because the worker adds it
    task = env.create("split the work")
    make_child = (
        "import subprocess; subprocess.run(['loop', 'tasks:create-child', '--prompt', "
        "'the sub-task', '--title', 'child'], check=True); print('made a child')"
    )
    where = ["--local"] if env.via == "local" else []
    argv = [LOOP, "worker", *where, "--provider", "command", "--agent-command",
            f'{sys.executable} -c "{make_child}"', "--max-tasks", "1"]  # fmt: skip
    worker_env = {**env.env, "PATH": "/usr/bin:/bin"}
    if env.via == "gateway":  # the worker's host has no queue database of its own
        worker_env["QUEUE_DB_PATH"] = str(env.root / "not-the-queue.sqlite")
    with (env.root / "worker-child.log").open("wb") as log:
        proc = subprocess.Popen(
            argv, cwd=env.root, env=worker_env, stdout=log, stderr=subprocess.STDOUT
        )
    env.procs.append(proc)
    assert proc.wait(timeout=30) == 0, env.logs()
    (child,) = env.service.list_children(task.id)
    env.created.append(child)
    assert (child.title, child.prompt, child.parent_id) == ("child", "the sub-task", task.id)
    assert env.status(task) is TaskStatus.WAITING_CHILDREN
    assert not (env.root / "not-the-queue.sqlite").exists()


GATED_LOOP = """
from pathlib import Path

from loops import dag, fn_job, human_gate

LOG = Path(__file__).with_suffix(".log")


def step(name):
    def fn(ctx):
        with LOG.open("a") as out:
            out.write(name + "\\n")
    return fn_job(fn, name=name)


job = dag(
    name="ship",
    nodes={
        "build": step("build"),
        "signoff": {"job": human_gate("signoff", "Ship it?"), "needs": ["build"]},
        "deploy": {"job": step("deploy"), "needs": ["signoff"]},
    },
)
"""


def test_a_gated_loop_task_waits_then_goes_on_as_answered(env: Env) -> None:
    for name in ("yes", "no"):
        (env.work / f"{name}.loop.py").write_text(GATED_LOOP)
    approved = env.create("yes.loop.py", type="loop")
    rejected = env.create("no.loop.py", type="loop")
    env.worker()
    for task in (approved, rejected):
        wait_until(lambda t=task: env.status(t) is TaskStatus.WAITING_APPROVAL, timeout_s=30)
    waiting = env.service.get_task(approved.id)
    assert waiting.lease_expires_at is None
    assert f"loop approve task-{approved.id}-1 PATH" in (waiting.error or "")

    def answer(task: Task, *args: str) -> str:
        argv = [LOOP, "approve", f"task-{task.id}-1", "ship/signoff", "--by", "erin", *args]
        done = subprocess.run(argv, env=env.env, cwd=env.root, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert f"task {approved.id} is queued" in answer(approved)
    answer(rejected, "--reject", "--reason", "not on a Friday")
    wait_until(lambda: env.status(approved) is TaskStatus.DONE, timeout_s=30)
    wait_until(lambda: env.status(rejected) is TaskStatus.FAILED, timeout_s=30)
    assert (env.work / "yes.loop.log").read_text().split() == ["build", "deploy"]
    assert (env.work / "no.loop.log").read_text().split() == ["build"]
    error = env.service.get_task(rejected.id).error or ""
    assert "rejected by erin: not on a Friday" in error
    kinds = env.events(approved)
    assert kinds.count("task.waiting_approval") == 1
    assert kinds.index("task.waiting_approval") < kinds.index("task.approval_answered")
    assert kinds[-1] == "task.completed"


def lease_waiters(env: Env) -> int:
    text = httpx.get(f"{env.env['WORKER_API_BASE_URL']}/metrics", timeout=5).text
    values = [
        line.split()[-1] for line in text.splitlines() if line.startswith("loops_lease_waiters")
    ]
    return int(float(values[0])) if values else 0


@pytest.mark.parametrize("queue", ["gateway"], indirect=True)  # the long poll is HTTP's
def test_a_lease_answering_the_poll_of_a_stopping_worker_goes_back_at_once(env: Env) -> None:
    """SIGTERM while the worker's long poll is answered with a fresh task: the worker
    cancels the poll without reading the lease, so the task must not wait out the TTL
    (60 s here) of a lease nobody works on; the stop gives it back, attempt uncharged."""
    for _ in range(3):
        proc = env.worker(WORKER_LEASE_TTL_MS="60000")
        wait_until(lambda: lease_waiters(env) == 1)
        proc.send_signal(signal.SIGSTOP)  # the poll's answer waits, unread, in its socket
        try:
            # a large answer takes the worker many reads: it sees the stop first
            task = env.create("never run MODE=quick " + "x" * 900_000)
            wait_until(lambda t=task: env.status(t) is TaskStatus.LEASED)  # to the frozen worker
            proc.send_signal(signal.SIGTERM)
        finally:
            proc.send_signal(signal.SIGCONT)
        assert proc.wait(timeout=15) == 0, env.logs()
        wait_until(lambda t=task: env.status(t) is TaskStatus.QUEUED, timeout_s=10)
        final = env.service.get_task(task.id)
        assert final.attempts == 0
        assert "task.released" in env.events(task)
        env.service.cancel(task.id)  # not for the next round's worker
