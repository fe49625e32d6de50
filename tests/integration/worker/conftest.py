"""Fixtures for the worker tests: a queue service, a local client, a task factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loops import config
from loops.queue.tasks import Task
from loops.services.queue import QueueService, task_spec
from loops.store.memory import MemoryStore
from loops.worker.local import LocalQueueClient
from loops.worker.options import WorkerOptions


@pytest.fixture
def service(tmp_path: Path) -> Iterator[QueueService]:
    settings = config.load_settings(env={}, cwd=tmp_path)
    store = MemoryStore()
    store.migrate()
    svc = QueueService(store, settings.queue)
    yield svc
    svc.close()


@pytest.fixture
def client(service: QueueService) -> LocalQueueClient:
    return LocalQueueClient(service, poll_ms=50)


@pytest.fixture
def make_task(service: QueueService, tmp_path: Path) -> Callable[..., Task]:
    def make(**fields: Any) -> Task:
        data: dict[str, Any] = {"prompt": "make the check pass", "cwd": str(tmp_path)}
        data.update(fields)
        return service.create_task(task_spec(data)).task

    return make


@pytest.fixture
def options(tmp_path: Path) -> WorkerOptions:
    return WorkerOptions(name="test-worker", provider="mock", lease_ttl_ms=3_000, cwd=tmp_path)
