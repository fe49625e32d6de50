"""``QueueService.complete_and_lease``: a worker's step between two batches."""

from __future__ import annotations

from pathlib import Path

from loops import config, errors
from loops.queue.tasks import TaskStatus
from loops.services.queue import CompletionInput, QueueService, task_spec
from loops.store.memory import MemoryStore


def test_completes_the_batch_item_by_item_and_leases_the_next(tmp_path: Path) -> None:
    service = QueueService(MemoryStore(), config.load_settings(env={}, cwd=tmp_path).queue)
    ids = [service.create_task(task_spec({"prompt": f"t{i}"})).task.id for i in range(4)]
    first = service.lease(worker="w", limit=2)
    woken: list[int] = []
    service.subscribe(lambda: woken.append(1))
    outcomes, leases = service.complete_and_lease(
        [
            CompletionInput(first[0].task.id, first[0].lease.token, "done"),
            CompletionInput(first[1].task.id, first[1].lease.token, "finished?"),
        ],
        worker="w",
        limit=5,
    )
    assert outcomes[0].ok and not outcomes[1].ok
    assert isinstance(outcomes[1].error, errors.InputError)  # only that item is refused
    assert [lease.task.id for lease in leases] == ids[2:]
    assert service.get_task(ids[0]).status is TaskStatus.DONE
    assert service.get_task(ids[1]).status is TaskStatus.LEASED
    assert woken  # a completion may make a parent ready: waiters are told
