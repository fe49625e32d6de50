"""dag(durable=True): nodes run as child tasks on real worker processes over one SQLite queue.

Workers are ``loop worker --local`` processes; node bodies write marker lines (the
node, the checkpoint attempt of the child that ran them) so the tests can count what
ran where. The mock engine plays every agent turn.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from loops import config
from loops.cli.main import cli
from loops.queue.tasks import Task, TaskStatus
from loops.services.queue import QueueService, task_spec

LOOP = str(Path(sys.executable).parent / "loop")
NODES = ("a", "b", "c", "d", "e", "f")

SIX_NODES = """
import asyncio
import os
from pathlib import Path

from loops import agent_job, dag, fn_job

MARKERS = Path(__file__).parent / "markers"


def node(name):
    agent = agent_job(f"work on {name}", name="agent")

    async def body(ctx):
        attempt = ctx.run.checkpoints.attempt if ctx.run.checkpoints else 0
        with (MARKERS / f"{name}.log").open("a") as out:
            out.write(f"start {attempt} {os.getpid()}\\n")
        outcome = await agent(ctx.child("agent"))
        await asyncio.sleep(0.01)
        with (MARKERS / f"{name}.log").open("a") as out:
            out.write(f"end {attempt} {os.getpid()}\\n")
        return outcome

    return fn_job(body, name=name)


job = dag(
    name="ship",
    durable=True,
    nodes={
        "a": node("a"),
        "b": {"job": node("b"), "needs": ["a"]},
        "c": {"job": node("c"), "needs": ["a"]},
        "d": {"job": node("d"), "needs": ["b", "c"]},
        "e": {"job": node("e"), "needs": ["d"]},
        "f": {"job": node("f"), "needs": ["e"]},
    },
)
"""

KICKBACK = """
from pathlib import Path

from loops import dag, fn_job, gate_job, predicate

ROOT = Path(__file__).parent


def build(ctx):
    with (ROOT / "build.log").open("a") as out:
        out.write(f"build review={ctx.last_review is not None}\\n")


def reviewed(ctx, last):
    runs = ROOT / "review.log"
    seen = runs.read_text().count("x") if runs.exists() else 0
    runs.write_text("x" * (seen + 1))
    return seen >= 1  # the first review fails and sends the work back to build


job = dag(
    name="ship",
    durable=True,
    max_kickbacks=1,
    nodes={
        "build": fn_job(build, name="build"),
        "review": {
            "job": gate_job("review", predicate(reviewed), kickback_to="build"),
            "needs": ["build"],
        },
    },
)
"""

TWO_LINES = """
import asyncio
from pathlib import Path

from loops import dag, fn_job

ROOT = Path(__file__).parent


def node(name, wait_for=None):
    async def body(ctx):
        while wait_for is not None and not (ROOT / wait_for).exists():
            await asyncio.sleep(0.02)  # the test lets it go once b is done
        with (ROOT / "order.log").open("a") as out:
            out.write(f"{name}\\n")

    return fn_job(body, name=name)


job = dag(
    name="pipe",
    durable=True,
    nodes={
        "a": node("a"),
        "b": {"job": node("b"), "needs": ["a"]},
        "c": node("c", wait_for="release-c"),
        "d": {"job": node("d"), "needs": ["c"]},
    },
)
"""

KICKBACK_WITH_A_SIBLING = """
from pathlib import Path

from loops import dag, fn_job, gate_job, predicate

ROOT = Path(__file__).parent


def build(ctx):
    with (ROOT / "build.log").open("a") as out:
        out.write(f"build review={ctx.last_review is not None}\\n")


def docs(ctx):
    with (ROOT / "docs.log").open("a") as out:
        out.write(f"docs review={ctx.last_review is not None}\\n")


def reviewed(ctx, last):
    runs = ROOT / "review.log"
    seen = runs.read_text().count("x") if runs.exists() else 0
    runs.write_text("x" * (seen + 1))
    return seen >= 1


job = dag(
    name="ship",
    durable=True,
    max_kickbacks=1,
    nodes={
        "build": fn_job(build, name="build"),
        "docs": {"job": fn_job(docs, name="docs"), "needs": ["build"]},
        "review": {
            "job": gate_job("review", predicate(reviewed), kickback_to="build"),
            "needs": ["build"],
        },
    },
)
"""

WHEN = """
from loops import dag, fn_job, predicate


def work(ctx):
    return None


job = dag(
    name="ship",
    durable=True,
    nodes={
        "build": fn_job(work, name="build"),
        "docs": {
            "job": fn_job(work, name="docs"),
            "needs": ["build"],
            "when": predicate(lambda ctx, last: last is None, name="no build outcome"),
        },
    },
)
"""

MOCK_SCRIPT = '{"default": {"text": "did it", "delay_s": 0.05}}'


def wait_until(predicate: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


class Fleet:
    """A queue database, a loop file, one loop task, and worker processes on them."""

    def __init__(self, root: Path, loop_file: str, **env: str) -> None:
        self.root = root
        (root / "markers").mkdir(parents=True)
        (root / "ship.loop.py").write_text(loop_file)
        (root / "mock.json").write_text(MOCK_SCRIPT)
        self.env = {
            **os.environ,
            "QUEUE_DB_PATH": str(root / "queue.sqlite"),
            "WORKER_LEASE_TTL_MS": "400",
            "WORKER_POLL_MS": "50",
            "QUEUE_MAX_CHILDREN_PER_TASK": "20",
            "QUEUE_MAX_ATTEMPTS": "50",
            **env,
        }
        self.env.pop("LOOPS_CONFIG", None)
        self.service = QueueService.open(config.load_settings(env=self.env, cwd=root))
        spec = task_spec({"prompt": str(root / "ship.loop.py"), "type": "loop", "cwd": str(root)})
        self.task_id = self.service.create_task(spec).task.id
        self.procs: list[subprocess.Popen[bytes]] = []

    def worker(self) -> subprocess.Popen[bytes]:
        argv = [LOOP, "worker", "--local", "--provider", "mock",
                "--mock-script", str(self.root / "mock.json")]  # fmt: skip
        with (self.root / "worker.log").open("ab") as log:
            proc = subprocess.Popen(argv, env=self.env, cwd=self.root, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def parent(self) -> Task:
        return self.service.get_task(self.task_id)

    def finished(self) -> bool:
        return not self.parent().status.is_active

    def children(self) -> list[Task]:
        return self.service.list_children(self.task_id, limit=1000)

    def lines(self, node: str) -> list[str]:
        path = self.root / "markers" / f"{node}.log"
        return path.read_text().splitlines() if path.exists() else []

    def marker_lines(self) -> int:
        return sum(len(self.lines(n)) for n in NODES)

    def events(self, task_id: int) -> list[Any]:
        return self.service.list_events(task_id=task_id, limit=10_000)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.service.close()


@pytest.fixture
def fleet_factory(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(name: str, loop_file: str, **env: str) -> Fleet:
        fleet = Fleet(tmp_path / name, loop_file, **env)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.close()


def check_six_nodes(fleet: Fleet) -> None:
    """The parent is done, every node ran on its own child task, each body ran once
    after that child's last checkpoint."""
    parent = fleet.parent()
    assert parent.status is TaskStatus.DONE, (parent.status, parent.error)
    assert parent.result == "6 nodes: 6 passed"
    children = {c.title.split()[2]: c for c in fleet.children()}
    assert sorted(children) == [f"ship/{n}" for n in NODES]  # one child per node, no repeat
    for name in NODES:
        child = children[f"ship/{name}"]
        assert child.type == "loop-node" and child.status is TaskStatus.DONE
        assert json.loads(child.result or "")["outcome"]["status"] == "pass"
        saved = fleet.service.get_state("run.checkpoint", task_id=child.id)
        attempt = saved["jobs"][f"ship/{name}"]["attempt"]
        lines = fleet.lines(name)
        starts = [int(x.split()[1]) for x in lines if x.startswith("start")]
        ends = [int(x.split()[1]) for x in lines if x.startswith("end")]
        assert max(starts) == attempt, (name, lines, attempt)  # nothing ran after it
        assert ends.count(attempt) == 1, (name, lines, attempt)
    dispatched = [e for e in fleet.events(fleet.task_id) if e.type == "node.dispatched"]
    assert {e.data["task_id"] for e in dispatched} == {c.id for c in children.values()}
    assert any(e.type == "run.resumed" for e in fleet.events(fleet.task_id))


def test_six_nodes_run_as_child_tasks_on_two_workers(
    fleet_factory: Callable[..., Fleet],
) -> None:
    fleet = fleet_factory("fleet", SIX_NODES)
    fleet.worker()
    fleet.worker()
    wait_until(fleet.finished, 45)
    check_six_nodes(fleet)
    for name in NODES:  # no kill: every body ran exactly once
        assert [x.split()[0] for x in fleet.lines(name)] == ["start", "end"]
    # the parent waited between waves without holding a worker
    kinds = [e.type for e in fleet.events(fleet.task_id)]
    assert kinds.count("task.waiting_children") >= 4  # a, then b+c, d, e, f
    parent = fleet.parent()
    assert parent.attempts <= 1  # waiting turns gave their attempt back


def test_a_worker_killed_mid_node_does_not_stop_the_run(
    fleet_factory: Callable[..., Fleet],
) -> None:
    expired = 0
    for seed in range(3):
        rng = random.Random(seed)
        fleet = fleet_factory(f"seed-{seed}", SIX_NODES)
        steady = fleet.worker()
        for _ in range(rng.randint(1, 2)):
            target = fleet.marker_lines() + rng.randint(1, 5)
            victim = fleet.worker()
            wait_until(lambda: fleet.marker_lines() >= target or fleet.finished(), 45)  # noqa: B023
            time.sleep(rng.uniform(0, 0.05))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
        fleet.worker()
        wait_until(fleet.finished, 60)
        assert steady.poll() is None
        check_six_nodes(fleet)
        tasks = [fleet.task_id, *(c.id for c in fleet.children())]
        expired += sum(e.type == "task.lease_expired" for t in tasks for e in fleet.events(t))
    assert expired, "no kill landed while a worker held a task: the test proved nothing"


def test_a_kickback_requeues_the_target_node_as_a_new_child(
    fleet_factory: Callable[..., Fleet],
) -> None:
    fleet = fleet_factory("kick", KICKBACK)
    fleet.worker()
    wait_until(fleet.finished, 45)
    parent = fleet.parent()
    assert parent.status is TaskStatus.DONE, parent.error
    titles = sorted(c.title for c in fleet.children())
    assert titles == [
        f"dag node ship/build (attempt 1) of task {fleet.task_id}",
        f"dag node ship/build (attempt 2) of task {fleet.task_id}",
        f"dag node ship/review (attempt 1) of task {fleet.task_id}",
        f"dag node ship/review (attempt 2) of task {fleet.task_id}",
    ]
    # the second build ran with the review that sent it back
    assert (fleet.root / "build.log").read_text().split("\n")[:2] == [
        "build review=False",
        "build review=True",
    ]
    saved = fleet.service.get_state("run.checkpoint", task_id=fleet.task_id)
    assert saved["extra"]["dag:ship"]["kickbacks"] == 1
    routed = [e for e in fleet.events(fleet.task_id) if e.type == "revision.routed"]
    assert [e.data["accepted"] for e in routed] == [True]


def test_a_refused_kickback_settles_the_node_with_the_reason(
    fleet_factory: Callable[..., Fleet],
) -> None:
    never = KICKBACK.replace("return seen >= 1", "return False")
    assert never != KICKBACK
    fleet = fleet_factory("refuse", never)
    fleet.worker()
    wait_until(fleet.finished, 45)
    parent = fleet.parent()
    assert parent.status is TaskStatus.FAILED
    assert "(kickback refused: dag 'ship' allows max_kickbacks=1 and used 1)" in str(parent.error)
    assert len(fleet.children()) == 4  # build and review twice: the second kickback is refused
    routed = [e for e in fleet.events(fleet.task_id) if e.type == "revision.routed"]
    assert [e.data["accepted"] for e in routed] == [True, False]


def test_a_node_whose_when_is_not_met_is_skipped_without_a_child(
    fleet_factory: Callable[..., Fleet],
) -> None:
    fleet = fleet_factory("when", WHEN)
    fleet.worker()
    wait_until(fleet.finished, 45)
    parent = fleet.parent()
    assert parent.status is TaskStatus.DONE, parent.error
    assert parent.result == "2 nodes: 1 passed, 1 skipped"
    assert [c.title for c in fleet.children()] == [
        f"dag node ship/build (attempt 1) of task {fleet.task_id}"
    ]
    # the condition saw build's outcome as `last`, so it returned False
    skipped = [e.data for e in fleet.events(fleet.task_id) if e.type == "node.skipped"]
    assert skipped == [
        {**skipped[0], "node": "docs", "reason": "when not met: no build outcome returned False"}
    ]


def test_a_node_runs_once_its_needs_are_met_not_when_its_wave_ends(
    fleet_factory: Callable[..., Fleet],
) -> None:
    """a -> b and c -> d: b only needs a, so it is dispatched and finishes while c is
    still running (c cannot finish before the test lets it, after b is done)."""
    fleet = fleet_factory("lines", TWO_LINES)
    fleet.worker()
    fleet.worker()

    def child(node: str) -> Task | None:
        found = [c for c in fleet.children() if c.title.split()[2] == f"pipe/{node}"]
        return found[0] if found else None

    b = wait_until(lambda: (t := child("b")) is not None and t.status is TaskStatus.DONE and t)
    c = child("c")
    assert c is not None and c.status.is_active  # still waiting for release-c
    assert child("d") is None  # d needs c
    (fleet.root / "release-c").write_text("")
    wait_until(fleet.finished, 45)
    parent = fleet.parent()
    assert parent.status is TaskStatus.DONE, (parent.status, parent.error)
    assert parent.result == "4 nodes: 4 passed"
    assert (fleet.root / "order.log").read_text().split() == ["a", "b", "c", "d"]

    def first(task_id: int, kind: str, **data: Any) -> int:
        return min(
            e.id
            for e in fleet.events(task_id)
            if e.type == kind and all(e.data.get(k) == v for k, v in data.items())
        )

    c_done = first(c.id, "task.completed")
    assert first(fleet.task_id, "node.dispatched", node="b") < c_done
    assert first(b.id, "task.completed") < c_done
    assert first(fleet.task_id, "node.dispatched", node="d") > c_done
    # each finished child woke the parent, even while others were still running
    woken = [e for e in fleet.events(fleet.task_id) if e.type == "task.requeued"]
    assert any("finished" in e.data["reason"] for e in woken)


# -- without workers: one process, the CLI ------------------------------------------------


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUEUE_DB_PATH", str(tmp_path / "queue.sqlite"))
    monkeypatch.delenv("LOOPS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "markers").mkdir()
    return tmp_path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_without_a_queue_the_nodes_run_in_process_and_say_so(here: Path) -> None:
    (here / "ship.loop.py").write_text(SIX_NODES)
    code, out = invoke("run", "ship.loop.py", "--engine", "mock", "--json")
    assert code == 0, out
    events = [json.loads(line) for line in out.splitlines()]
    (note,) = [e for e in events if e["type"] == "dag.in_process"]
    assert "nodes run in this process" in note["reason"]
    assert not [e for e in events if e["type"] == "node.dispatched"]


def test_a_dag_with_more_nodes_than_the_children_limit_blocks_naming_the_setting(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_MAX_CHILDREN_PER_TASK", "2")
    (here / "wide.loop.py").write_text(
        "from loops import dag, fn_job\n"
        "job = dag(name='wide', durable=True, nodes={n: fn_job(lambda ctx: None, name=n) "
        "for n in 'xyz'})\n"
    )
    code, out = invoke("tasks:create", "--type", "loop", "--loop-file", "wide.loop.py")
    assert code == 0, out
    code, out = invoke("run-job", "1", "--provider", "mock")
    assert code == 1
    code, out = invoke("tasks:get", "1", "--json")
    task = json.loads(out)
    assert task["status"] == "blocked"
    assert "durable dag node wide/z cannot run as a child task of task 1" in task["error"]
    assert "QUEUE_MAX_CHILDREN_PER_TASK=2" in task["error"]
    assert "durable=False" in task["error"]


def test_a_child_failed_for_good_wakes_the_dag_which_fails_its_node_naming_it(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_MAX_ATTEMPTS", "1")
    (here / "bad.loop.py").write_text(
        "from loops import dag, fn_job\n"
        "def boom(ctx):\n"
        "    raise RuntimeError('disk full')\n"
        "job = dag(name='bad', durable=True, nodes={'a': fn_job(boom, name='a')})\n"
    )
    invoke("tasks:create", "--type", "loop", "--loop-file", "bad.loop.py")
    code, out = invoke("run-job", "1", "--provider", "mock")  # dispatches node a: waits
    code, out = invoke("tasks:get", "1", "--json")
    assert json.loads(out)["status"] == "waiting_children"
    code, out = invoke("run-job", "2", "--provider", "mock")  # node a errs: no retries left
    assert code == 1
    code, out = invoke("tasks:get", "1", "--json")
    assert json.loads(out)["status"] == "queued"  # woken: its dag decides, not the queue
    code, out = invoke("run-job", "1", "--provider", "mock")
    code, out = invoke("tasks:get", "1", "--json")
    parent = json.loads(out)
    assert parent["status"] == "failed"  # the node's error, the parent out of attempts
    assert (
        "node a error: child task 2 (dag node bad/a (attempt 1) of task 1) ended failed"
        in (parent["error"])
    )
    assert "disk full" in parent["error"]


def run_queued(service: QueueService, *, skip: str | None = None) -> list[str]:
    """Run queued tasks one at a time (``run-job``, lowest id first) until none is left
    but those whose title holds ``skip``; the titles run, in order."""
    ran = []
    while True:
        queued = [
            t
            for t in service.list_tasks(status="queued", limit=100)
            if skip is None or skip not in t.title
        ]
        if not queued:
            return ran
        task = min(queued, key=lambda t: t.id)
        invoke("run-job", str(task.id), "--provider", "mock")
        ran.append(task.title)


def test_a_kickback_cancels_a_sibling_still_running_an_older_attempt(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review kicks back to build while docs (which also needs build) has not run: the
    dag cancels docs' child (its attempt is stale) and runs docs again after the new
    build, as a new attempt, with the kickback's review."""
    monkeypatch.setenv("QUEUE_MAX_CHILDREN_PER_TASK", "6")
    (here / "ship.loop.py").write_text(KICKBACK_WITH_A_SIBLING)
    invoke("tasks:create", "--type", "loop", "--loop-file", "ship.loop.py")
    service = QueueService.open(config.load_settings(env=dict(os.environ), cwd=here))
    try:
        run_queued(service, skip="ship/docs")  # build, review (kicks back), build again
        kids = {c.title: c for c in service.list_children(1, limit=100)}
        old_docs = kids["dag node ship/docs (attempt 1) of task 1"]
        assert old_docs.status is TaskStatus.CANCELLED
        assert "a kickback re-runs this node as a new attempt" in (old_docs.error or "")
        run_queued(service)
        parent = service.get_task(1)
        assert parent.status is TaskStatus.DONE, parent.error
        assert parent.result == "3 nodes: 3 passed"
        titles = sorted(c.title for c in service.list_children(1, limit=100))
        assert titles == sorted(
            f"dag node ship/{node} (attempt {n}) of task 1"
            for node in ("build", "docs", "review")
            for n in (1, 2)
        )
        assert (here / "docs.log").read_text().split("\n")[:1] == ["docs review=True"]
        # each attempt is recorded once: the kickback's re-run is the second
        twice = {n: [1, 2] for n in ("build", "docs", "review")}
        assert node_events(service, 1, "node.dispatched") == twice
        assert node_events(service, 1, "node.started") == {n: [None] * 2 for n in twice}
        assert (here / "build.log").read_text().split("\n")[:2] == [
            "build review=False",
            "build review=True",
        ]
    finally:
        service.close()


def node_events(service: QueueService, task_id: int, kind: str) -> dict[str, list[Any]]:
    """The parent's ``kind`` events by node: the attempt each names (or ``None``)."""
    found: dict[str, list[Any]] = {}
    for event in service.list_events(task_id=task_id, limit=10_000):
        if event.type == kind:
            found.setdefault(event.data["node"], []).append(event.data.get("attempt"))
    return found


def test_each_node_attempt_is_recorded_once_however_often_the_dag_wakes(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent wakes once per finished child and re-runs the dag each time; a node
    already dispatched, or finished, is not announced again (six nodes, not six squared)."""
    monkeypatch.setenv("QUEUE_MAX_CHILDREN_PER_TASK", "6")
    (here / "ship.loop.py").write_text(SIX_NODES)
    invoke("tasks:create", "--type", "loop", "--loop-file", "ship.loop.py")
    service = QueueService.open(config.load_settings(env=dict(os.environ), cwd=here))
    try:
        run_queued(service)
        parent = service.get_task(1)
        assert parent.status is TaskStatus.DONE, parent.error
        turns = [e for e in service.list_events(task_id=1, limit=10_000) if e.type == "run.resumed"]
        assert len(turns) >= 4  # woken after a, b, c, d and e at least
        once = {n: [None] for n in NODES}
        assert node_events(service, 1, "node.started") == once
        assert node_events(service, 1, "node.dispatched") == {n: [1] for n in NODES}
        assert node_events(service, 1, "node.finished") == once
        assert node_events(service, 1, "job.restored") == {}
    finally:
        service.close()


COUNTED_WHEN = """
from pathlib import Path

from loops import dag, fn_job, predicate

ROOT = Path(__file__).parent


def work(ctx):
    return None


def asked(node, answer):
    def check(ctx, last):
        with (ROOT / "when.log").open("a") as out:
            out.write(f"{node}\\n")
        return answer

    return predicate(check, name=f"{node} wanted")


job = dag(
    name="ship",
    durable=True,
    nodes={
        "a": fn_job(work, name="a"),
        "b": {"job": fn_job(work, name="b"), "needs": ["a"], "when": asked("b", True)},
        "c": {"job": fn_job(work, name="c"), "needs": ["a"]},
        "d": {"job": fn_job(work, name="d"), "needs": ["a"], "when": asked("d", False)},
        "e": {"job": fn_job(work, name="e"), "needs": ["b", "c", "d"]},
    },
)
"""


def test_a_nodes_when_is_asked_once_not_on_every_wake(here: Path) -> None:
    """b's ``when`` let it run and d's skipped it: later turns keep those answers (a
    judge asked again could cost money, or change its mind about a running node)."""
    (here / "ship.loop.py").write_text(COUNTED_WHEN)
    invoke("tasks:create", "--type", "loop", "--loop-file", "ship.loop.py")
    service = QueueService.open(config.load_settings(env=dict(os.environ), cwd=here))
    try:
        run_queued(service)
        parent = service.get_task(1)
        assert parent.status is TaskStatus.DONE, parent.error
        assert parent.result == "5 nodes: 4 passed, 1 skipped"
        assert sorted((here / "when.log").read_text().split()) == ["b", "d"]
        assert list(node_events(service, 1, "node.skipped")) == ["d"]
        assert node_events(service, 1, "node.skipped")["d"] == [None]
    finally:
        service.close()
