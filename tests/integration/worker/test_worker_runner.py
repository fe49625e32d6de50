"""A prompt task run as a converge loop: the mock engine, the local client, a real check."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from loops.engines.mock import MockEngine, MockTurn
from loops.queue.tasks import Task, TaskStatus
from loops.services.queue import QueueService
from loops.worker.client import CHECKPOINT_KEY
from loops.worker.local import LocalQueueClient
from loops.worker.options import WorkerOptions
from loops.worker.runner import TaskRun
from loops.worker.worker import Worker

CHECK = f"{sys.executable} check.py"
CHECK_PY = (
    "import pathlib, sys\n"
    "ok = pathlib.Path('value.txt').exists() and pathlib.Path('value.txt').read_text() == 'ok'\n"
    "print('value is right' if ok else 'value.txt is wrong or missing')\n"
    "sys.exit(0 if ok else 1)\n"
)
VERDICT_MET = '{"met": true, "confidence": 0.95, "reason": "the value is right"}'


def judge_turn(text: str = VERDICT_MET) -> MockTurn:
    return MockTurn(text=text, match=r"^Question:")


async def run(task: Task, client: LocalQueueClient, options: WorkerOptions, engine: MockEngine):
    return await TaskRun(task, client=client, options=options, engine=engine).run()


def worker_prompts(engine: MockEngine) -> list[str]:
    return [r.prompt for r in engine.requests if not r.prompt.startswith("Question:")]


async def test_check_fails_then_passes_and_the_next_prompt_carries_the_verdict(
    tmp_path: Path, client: LocalQueueClient, options: WorkerOptions, make_task, service
) -> None:
    (tmp_path / "check.py").write_text(CHECK_PY)
    engine = MockEngine(
        [
            MockTurn(text="I looked around.\nSTEP[explore]: DONE idempotency=explore-1 note=read"),
            MockTurn(text="Fixed it.", edits={"value.txt": "ok"}),
        ]
    )
    task = make_task(check=CHECK, max_iterations=4)
    report = await run(task, client, options, engine)
    assert report.status == "done"
    assert report.iterations == 2
    assert "until met at iteration 2" in (report.result or "")
    prompts = worker_prompts(engine)
    assert len(prompts) == 2
    assert "Why the previous attempt did not pass" in prompts[1]
    assert "value.txt is wrong or missing" in prompts[1]
    assert "explore (idempotency=explore-1)" in prompts[1]
    assert [s.idempotency_key for s in service.list_steps(task.id)] == ["explore-1"]
    checkpoint = service.get_state(CHECKPOINT_KEY, task_id=task.id)
    assert checkpoint["iterations"] == 2 and checkpoint["session_id"]
    kinds = {a.kind.value for a in service.list_artifacts(task_id=task.id)}
    assert {"transcript", "final_message"} <= kinds
    types = [e.type for e in service.list_events(task_id=task.id, limit=1000)]
    assert "agent.text" in types and "verdict" in types and "run.finished" in types


async def test_the_judge_is_not_asked_while_the_check_fails(
    tmp_path: Path, client, options, make_task
) -> None:
    (tmp_path / "check.py").write_text(CHECK_PY)
    engine = MockEngine(
        [MockTurn(text="nothing yet"), MockTurn(text="fixed", edits={"value.txt": "ok"})],
        default=judge_turn(),
    )
    task = make_task(check=CHECK, success="value.txt says ok", max_iterations=3)
    report = await run(task, client, options, engine)
    assert report.status == "done"
    judges = [r for r in engine.requests if r.prompt.startswith("Question:")]
    assert len(judges) == 1  # asked only after the check passed
    assert "the value is right" in (report.result or "")


async def test_max_iterations_fails_with_the_last_verdict(
    tmp_path: Path, client, options, make_task
) -> None:
    (tmp_path / "check.py").write_text(CHECK_PY)
    engine = MockEngine(default=MockTurn(text="I did nothing useful"))
    task = make_task(check=CHECK, max_iterations=2)
    report = await run(task, client, options, engine)
    assert report.status == "failed"
    assert "max 2 iterations reached" in (report.error or "")
    assert "value.txt is wrong or missing" in (report.error or "") or "exited" in (
        report.error or ""
    )


async def test_an_unparsable_judge_answer_is_not_met(
    tmp_path: Path, client, options, make_task
) -> None:
    engine = MockEngine(default=MockTurn(text="looks fine to me"))
    task = make_task(success="it is done", max_iterations=2)
    report = await run(task, client, options, engine)
    assert report.status == "failed"
    assert "no JSON verdict" in (report.error or "")


async def test_no_check_and_no_success_is_one_plain_turn(client, options, make_task) -> None:
    engine = MockEngine([MockTurn(text="all done")])
    report = await run(make_task(), client, options, engine)
    assert report.status == "done"
    assert "one successful agent turn" in (report.result or "")
    assert len(engine.requests) == 1


async def test_agent_gets_task_id_and_queue_env(client, options, make_task) -> None:
    client = LocalQueueClient(client.service, agent_env={"QUEUE_DB_PATH": "/x/q.sqlite"})
    engine = MockEngine([MockTurn(text="ok")])
    task = make_task()
    await run(task, client, options, engine)
    env = engine.requests[0].env
    assert env["LOOP_TASK_ID"] == str(task.id)
    assert env["QUEUE_DB_PATH"] == "/x/q.sqlite"


async def test_resume_from_checkpoint_continues_the_session_and_counts(
    tmp_path: Path, client, options, make_task, service: QueueService
) -> None:
    (tmp_path / "check.py").write_text(CHECK_PY)
    task = make_task(check=CHECK, max_iterations=3)
    checkpoint = {"iterations": 2, "session_id": "sess-42", "last_verdict": "not met: red"}
    service.put_state(CHECKPOINT_KEY, checkpoint, task_id=task.id)
    engine = MockEngine([MockTurn(text="fixed", edits={"value.txt": "ok"})])
    report = await run(task, client, options, engine)
    assert report.status == "done"
    request = engine.requests[0]
    assert request.resume_session_id == "sess-42"
    assert "interrupted and is resumed" in request.prompt
    assert "not met: red" in request.prompt
    assert service.get_state(CHECKPOINT_KEY, task_id=task.id)["iterations"] == 3


async def test_a_task_out_of_iterations_after_resume_fails_without_a_turn(
    tmp_path: Path, client, options, make_task, service
) -> None:
    task = make_task(check=CHECK, max_iterations=2)
    service.put_state(CHECKPOINT_KEY, {"iterations": 2, "last_verdict": "no"}, task_id=task.id)
    engine = MockEngine()
    report = await run(task, client, options, engine)
    assert report.status == "failed"
    assert report.error == "max 2 iterations reached in earlier attempts; last gate verdict: no"
    assert engine.requests == []


async def test_rate_limit_waits_without_burning_an_attempt(client, options, make_task, service):
    engine = MockEngine(
        [MockTurn(error="rate_limit", retry_after_s=0.01), MockTurn(text="done after waiting")]
    )
    task = make_task()
    leased = (await client.lease(worker="w", ttl_ms=5_000, wait_ms=0))[0]
    seen: list[Any] = []

    async def handler(item):
        seen.append(item)
        return await TaskRun(item.task, client=client, options=options, engine=engine).run()

    worker = Worker(client, options, handler=handler)
    report = await worker.run_one(leased)
    assert report is not None and report.status == "done"
    final = service.get_task(task.id)
    assert final.status is TaskStatus.DONE and final.attempts == 1
    waits = [e for e in service.list_events(task_id=task.id, limit=500) if "rate_limit" in e.type]
    assert waits and waits[0].type == "engine.rate_limit_wait"


async def test_worker_loop_completes_tasks_concurrently(client, options, make_task, service):
    import dataclasses

    tasks = [make_task(prompt=f"task {i}") for i in range(6)]
    opts = dataclasses.replace(options, concurrency=3)
    worker = Worker(client, opts)
    stats = await worker.run(max_tasks=6)
    assert stats.completed == 6
    assert all(service.get_task(t.id).status is TaskStatus.DONE for t in tasks)
    transcript = [
        a for a in service.list_artifacts(task_id=tasks[0].id) if a.kind.value == "transcript"
    ]
    lines = service.read_artifact(transcript[0].id).decode().splitlines()
    assert json.loads(lines[-1])["type"] == "run.finished"


async def test_a_loop_task_runs_its_loop_file_on_the_task_provider(
    tmp_path: Path, client, options, make_task, service
) -> None:
    (tmp_path / "tend.loop.py").write_text(
        "from loops import agent_job, loop, predicate\n"
        "job = loop(name='tend', body=agent_job('tend the garden'),\n"
        "           until=predicate(lambda ctx, last: ctx.iteration >= 2, name='twice'), max=3)\n"
    )
    task = make_task(type="loop", prompt="tend.loop.py")
    report = await TaskRun(task, client=client, options=options).run()
    assert report.status == "done", report.error
    assert "until met at iteration 2" in (report.result or "")
    types = [e.type for e in service.list_events(task_id=task.id, limit=1000)]
    assert types.count("agent.finished") == 2 and "run.finished" in types


async def test_a_missing_loop_file_blocks_the_task(client, options, make_task) -> None:
    report = await TaskRun(make_task(type="loop", prompt="absent.loop.py"), client=client,
                           options=options).run()  # fmt: skip
    assert report.status == "blocked"
    assert "absent.loop.py" in (report.error or "")


async def test_a_lost_lease_stops_the_agent_and_completes_nothing(
    client, options, make_task, service
) -> None:
    import asyncio
    import dataclasses

    engine = MockEngine([MockTurn(text="slow", delay_s=5)])
    task = make_task()
    opts = dataclasses.replace(options, lease_ttl_ms=300, wait_ms=50)

    async def handler(item):
        return await TaskRun(item.task, client=client, options=opts, engine=engine).run()

    worker = Worker(client, opts, handler=handler)
    running = asyncio.ensure_future(worker.run())
    for _ in range(200):
        await asyncio.sleep(0.02)
        if service.get_task(task.id).status is TaskStatus.RUNNING:
            break
    held = service.get_task(task.id)
    service.release(task.id, lease_token=held.lease_token or "")  # someone else's now
    (other,) = service.lease(worker="other")
    for _ in range(100):
        await asyncio.sleep(0.02)
        if worker.stats.lost:
            break
    worker.request_stop()
    stats = await running
    assert stats.lost == 1 and stats.completed == 0
    after = service.get_task(task.id)
    assert after.status is TaskStatus.LEASED and after.lease_owner == "other"
    assert other.task.id == task.id
