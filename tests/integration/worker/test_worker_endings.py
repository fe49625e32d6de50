"""How a worker ends each task: plain reports, runner errors, long tasks, stops."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from loops.queue.tasks import LeasedTask, Task, TaskStatus
from loops.services.queue import QueueService
from loops.worker.local import LocalQueueClient
from loops.worker.options import WorkerOptions
from loops.worker.runner import TaskReport
from loops.worker.worker import Worker


async def test_quick_tasks_complete_and_a_raising_runner_retries_without_killing_the_worker(
    client: LocalQueueClient,
    options: WorkerOptions,
    make_task: Callable[..., Task],
    service: QueueService,
) -> None:
    tasks = [make_task(prompt=f"task {i}", max_attempts=2) for i in range(6)]

    async def handler(leased: LeasedTask) -> TaskReport:
        if leased.task.prompt == "task 2" and leased.task.attempts == 1:
            raise RuntimeError("runner bug")
        return TaskReport("done", result=f"ran {leased.task.prompt}")

    worker = Worker(client, dataclasses.replace(options, concurrency=4), handler=handler)
    stats = await worker.run(max_tasks=7)
    assert stats.completed == 7 and stats.failed_completions == 0
    assert worker.running == 0
    assert [service.get_task(t.id).status for t in tasks] == [TaskStatus.DONE] * 6
    assert service.get_task(tasks[0].id).result == "ran task 0"
    retried = [e for e in service.list_events(task_id=tasks[2].id, limit=100)]
    assert any("runner raised RuntimeError('runner bug')" in str(e.data) for e in retried)


async def test_a_task_outliving_the_start_delay_is_marked_running_then_completed(
    client: LocalQueueClient,
    options: WorkerOptions,
    make_task: Callable[..., Task],
    service: QueueService,
) -> None:
    task = make_task()
    seen: list[TaskStatus] = []

    async def handler(leased: LeasedTask) -> TaskReport:
        for _ in range(50):  # until the start heartbeat marked it running
            await asyncio.sleep(0.01)
            status = service.get_task(leased.task.id).status
            if status is TaskStatus.RUNNING:
                break
        seen.append(status)
        return TaskReport("done", result="slow")

    stats = await Worker(client, options, handler=handler).run(max_tasks=1)
    assert seen == [TaskStatus.RUNNING]
    assert stats.completed == 1
    assert service.get_task(task.id).status is TaskStatus.DONE


async def test_a_stop_releases_the_running_task_and_completes_the_finished_ones(
    client: LocalQueueClient,
    options: WorkerOptions,
    make_task: Callable[..., Task],
    service: QueueService,
) -> None:
    quick, slow = make_task(prompt="quick"), make_task(prompt="slow")
    started = asyncio.Event()

    async def handler(leased: LeasedTask) -> TaskReport:
        if leased.task.prompt == "slow":
            started.set()
            await asyncio.sleep(30)
        return TaskReport("done", result=leased.task.prompt)

    opts = dataclasses.replace(options, concurrency=2, shutdown_grace_ms=50)
    worker = Worker(client, opts, handler=handler)
    run = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    worker.request_stop()
    stats = await asyncio.wait_for(run, 10)
    assert stats.completed == 1 and stats.released == 1
    assert service.get_task(quick.id).status is TaskStatus.DONE
    after = service.get_task(slow.id)
    assert after.status is TaskStatus.QUEUED and after.attempts == 0
