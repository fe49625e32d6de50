"""CPU cost of streaming an agent's events through the worker into the store.

A fake engine emits N events in one turn (text and tool calls, as a chatty agent
does); the worker's task runner streams them into the run (loop library events), the
queue timeline (batched appends into a SQLite file) and the transcript artifact. We
measure the process CPU time (all threads: the store writes run in a thread pool) of
the whole task run, and, in the same round, the CPU time of the same turn consumed
with no sink at all, so the worker's share is the difference.

    .venv/bin/python bench/worker_events.py                # 10,000 events, 5 rounds
    .venv/bin/python bench/worker_events.py --events 2000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from loops import config  # noqa: E402
from loops.engines import base  # noqa: E402
from loops.services.queue import QueueService, task_spec  # noqa: E402
from loops.usage import Usage  # noqa: E402
from loops.worker.local import LocalQueueClient  # noqa: E402
from loops.worker.options import WorkerOptions  # noqa: E402
from loops.worker.runner import TaskRun  # noqa: E402


class ChattyEngine:
    """One turn of ``events`` events: mostly text, every tenth a tool call and result."""

    name = "chatty"
    capabilities = base.Capabilities(streaming=True)

    def __init__(self, events: int) -> None:
        self.events = events

    async def run_turn(self, request: base.TurnRequest) -> AsyncIterator[base.TurnEvent]:
        for i in range(self.events - 1):
            if i % 10 == 8:
                yield base.ToolUse(id=f"t{i}", name="Bash", input={"command": f"ls {i}"})
            elif i % 10 == 9:
                yield base.ToolResult(id=f"t{i - 1}", output=f"file{i}.py\n" * 5)
            else:
                yield base.AgentText(f"thinking about step {i} of the plan, line {i}\n")
        yield base.TurnResult(status=base.TurnStatus.OK, final_text="done", usage=Usage(1, 1))


async def consume_only(events: int) -> None:
    engine = ChattyEngine(events)
    async for _ in engine.run_turn(base.TurnRequest(prompt="x")):
        pass


async def through_worker(events: int, folder: Path, sync: str) -> int:
    env = {"QUEUE_DB_PATH": str(folder / "q.sqlite"), "QUEUE_SQLITE_SYNC": sync}
    settings = config.load_settings(env=env, cwd=folder)
    service = QueueService.open(settings)
    client = LocalQueueClient(service)
    task = service.create_task(task_spec({"prompt": "chat", "cwd": str(folder)})).task
    options = WorkerOptions(name="bench", provider="mock", cwd=folder)
    report = await TaskRun(task, client=client, options=options, engine=ChattyEngine(events)).run()
    assert report.status == "done", report
    stored, after = 0, 0
    while page := service.list_events(task_id=task.id, after_id=after, limit=10_000):
        stored, after = stored + len(page), page[-1].id
    service.close()
    return stored


def one_round(events: int, sync: str) -> tuple[float, float, int]:
    """CPU seconds of the worker run and of the bare stream, and the events stored."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.process_time()
        stored = asyncio.run(through_worker(events, Path(tmp), sync))
        worker_s = time.process_time() - start
    start = time.process_time()
    asyncio.run(consume_only(events))
    return worker_s, time.process_time() - start, stored


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for sync in ("full", "normal"):
        results = [one_round(args.events, sync) for _ in range(args.rounds)]
        worker_s = [r[0] for r in results]
        bare_s = [r[1] for r in results]
        per_event_us = 1e6 * (statistics.median(worker_s) - statistics.median(bare_s))
        print(
            f"sync={sync}: {args.events} agent events -> {results[-1][2]} stored events; "
            f"worker CPU median {statistics.median(worker_s):.3f}s "
            f"(min {min(worker_s):.3f} max {max(worker_s):.3f}); "
            f"bare stream {statistics.median(bare_s):.3f}s; "
            f"per event {per_event_us / args.events:.1f} µs"
        )


if __name__ == "__main__":
    main()
